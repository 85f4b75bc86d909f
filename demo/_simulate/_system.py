"""What every process of a simulation runs: the read models and the process managers."""

from __future__ import annotations

from typing import Any

from actors import ActorSystem, ProcessManagerHandle, ProcessManagerOptions
from demo._simulate._couriers import Couriers
from demo._simulate._options import SimOptions
from demo.bank import Balances, BankTotals, Statements, TransferProcess
from demo.shop import OrderDetails, OrderFulfilment, OrderHistory, Shipping, ShopAnalytics
from readmodels import ProjectionHandle

__all__: list[str] = []


async def _project(system: ActorSystem) -> list[ProjectionHandle[Any]]:
    """Start the bank's and the shop's read models (checked against a rebuild at the end)."""
    return [
        await system.project(p)
        for p in (
            Balances(),
            Statements(),
            BankTotals(),
            OrderHistory(),
            OrderDetails(),
            ShopAnalytics(),
        )
    ]


async def _manage(system: ActorSystem, options: SimOptions) -> list[ProcessManagerHandle]:
    """Start the bank's and the shop's process managers, and the couriers, each under a
    lease of `options.lease_ttl` (with several processes, each runs in one of them at a
    time; the others stand by and take over from a holder that died). The bank's and
    the shop's are split into `options.manager_partitions` partitions, each leased on
    its own; the couriers are one (their concurrency is the number of couriers)."""
    lease = ProcessManagerOptions(
        lease_ttl=options.lease_ttl, partitions=options.manager_partitions
    )
    couriers = ProcessManagerOptions(concurrency=options.couriers, lease_ttl=options.lease_ttl)
    return [
        await system.run_process_manager(TransferProcess(), options=lease),
        await system.run_process_manager(OrderFulfilment(), options=lease),
        await system.run_process_manager(Shipping(), options=lease),
        await system.run_process_manager(Couriers(), options=couriers),
    ]


def _statistics(handle: ProcessManagerHandle) -> dict[str, int]:
    """A process manager's figures, as the report shows them."""
    s = handle.statistics()
    return {
        "handled": s.handled,
        "sent": s.sent,
        "rejected": s.rejected,
        "compensations": s.compensations,
        "retries": s.retries,
        "parked": s.parked,
        "takeovers": s.takeovers,
        "lost": s.lost,
    }
