"""The load test's workloads: what is set up, which command comes next, what to wait for.

- `deposit`: deposits into random accounts (one event per command, no process manager).
- `bank`: transfers between random accounts (2% to accounts that do not exist, which
  are refunded), plus deposits and withdrawals (some refused); `TransferProcess` moves
  the money while the load runs.
- `shop`: orders of 1-3 random products from customers who pay from their bank
  accounts; `OrderFulfilment` and `Shipping` carry them to shipped, rejected (out of
  stock) or cancelled (funds short).

"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from actors import ActorSystem, AggregateRouter, Command, ProcessManager, ProcessManagerHandle
from demo._distribution import Pick, uniform
from demo.bank import (
    Account,
    BankTotals,
    Deposit,
    OpenAccount,
    RequestTransfer,
    TotalsView,
    Transfer,
    TransferProcess,
    Withdraw,
)
from demo.shop import (
    AnalyticsView,
    Inventory,
    Order,
    OrderFulfilment,
    OrderLine,
    PlaceOrder,
    Restock,
    Shipping,
    ShopAnalytics,
)
from readmodels import ProjectionHandle

__all__ = [
    "BankWorkload",
    "DepositWorkload",
    "ShopWorkload",
    "Step",
    "Workload",
]

Router = AggregateRouter[Any, Any, Any]
Step = tuple[Router, str, Command]
"""One command to send: (router, aggregate id, command)."""

SendAll = Callable[[list[Step]], Awaitable[None]]
"""Sends a list of steps (setup; not measured) and returns when all are answered."""

Outcome = dict[str, int | float | bool]


class _Waitable(Protocol):
    async def wait_for(self, position: int, *, timeout: float = ...) -> None: ...  # noqa: ASYNC109


class Workload(Protocol):
    """What a load test mix does around the measured commands."""

    accounts: list[str]
    """Account ids whose balances the read model check samples."""

    async def setup(self, system: ActorSystem, send_all: SendAll) -> None:
        """Create what the commands need (not measured)."""

    def step(self, rng: random.Random, n: int) -> Step:
        """The `n`-th measured command (0-based), drawn with `rng`."""

    async def settle(self, system: ActorSystem) -> Outcome:
        """Wait until the process managers have nothing left to do (no deadline of its
        own: the caller sets one); return the outcome."""


def _ids(prefix: str, count: int) -> list[str]:
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}{n:0{width}d}" for n in range(count)]


async def _quiesce(system: ActorSystem, handles: Sequence[_Waitable]) -> None:
    """Wait until every handle has seen the log's end and nothing new was appended.

    Waits without a deadline of its own (each handle's wait is given a long one): the
    caller bounds it with `anyio.fail_after`."""
    while True:
        last = await system.store.last_position()
        for handle in handles:
            await handle.wait_for(last, timeout=3_600)
        if await system.store.last_position() == last:
            return


async def _run_managers(
    system: ActorSystem, *managers: ProcessManager
) -> list[ProcessManagerHandle]:
    return [await system.run_process_manager(manager) for manager in managers]


def _manager_counts(handles: Sequence[ProcessManagerHandle]) -> Outcome:
    """Steps the process managers saw refused, compensations sent, steps parked."""
    stats = [handle.statistics() for handle in handles]
    return {
        "steps_refused": sum(s.rejected for s in stats),
        "compensations": sum(s.compensations for s in stats),
        "parked": sum(s.parked for s in stats),
    }


class DepositWorkload:
    """Deposits of 1-10,000 cents into accounts drawn by `pick`."""

    def __init__(
        self, aggregates: int, pick: Pick | None = None, share: tuple[int, int] | None = None
    ) -> None:
        self.accounts = _ids("", aggregates)
        # `share` (index, of): commands go to every `of`-th account from `index` only.
        self.drawn = self.accounts if share is None else self.accounts[share[0] :: share[1]]
        self.pick = pick or uniform(len(self.drawn))
        self.router: Router | None = None

    async def setup(self, system: ActorSystem, send_all: SendAll) -> None:
        """Open every account."""
        router = self.router = system.aggregates(Account)
        await send_all([(router, a, OpenAccount(a, f"owner-{a}")) for a in self.accounts])

    def step(self, rng: random.Random, n: int) -> Step:
        """A deposit into an account drawn by `pick`."""
        assert self.router is not None
        account = self.drawn[self.pick(rng)]
        return self.router, account, Deposit(account, rng.randint(1, 10_000))

    async def settle(self, system: ActorSystem) -> Outcome:
        """Nothing runs after the deposits."""
        return {}


class BankWorkload:
    """Transfers (75%), deposits (15%) and withdrawals (10%) between random accounts.

    Every account starts with 1,000,000 cents; 2% of transfers go to accounts never
    opened, so their credit is refused and the source refunded.
    """

    START = 1_000_000

    def __init__(self, aggregates: int, seed: int, pick: Pick | None = None) -> None:
        self.accounts = _ids("", max(aggregates, 2))
        self.pick = pick or uniform(len(self.accounts))
        self.seed = seed
        self.accounts_router: Router | None = None
        self.transfers: Router | None = None
        self.handles: list[ProcessManagerHandle] = []
        self.totals: ProjectionHandle[TotalsView] | None = None

    async def setup(self, system: ActorSystem, send_all: SendAll) -> None:
        """Open and fund every account; start the transfer process and bank totals."""
        accounts = self.accounts_router = system.aggregates(Account)
        self.transfers = system.aggregates(Transfer)
        self.totals = await system.project(BankTotals())
        self.handles = await _run_managers(system, TransferProcess())
        await send_all([(accounts, a, OpenAccount(a, f"owner-{a}")) for a in self.accounts])
        await send_all([(accounts, a, Deposit(a, self.START)) for a in self.accounts])

    def step(self, rng: random.Random, n: int) -> Step:
        """A transfer, deposit or withdrawal."""
        assert self.accounts_router is not None
        assert self.transfers is not None
        accounts = self.accounts
        roll = rng.random()
        source = accounts[self.pick(rng)]
        if roll < 0.75:
            if rng.random() < 0.02:
                target = f"missing-{rng.randrange(1_000)}"
            else:
                target = source
                while target == source:
                    target = accounts[self.pick(rng)]
            transfer_id = f"{self.seed}-{n}"
            command = RequestTransfer(transfer_id, source, target, rng.randint(1, 5_000))
            return self.transfers, transfer_id, command
        if roll < 0.90:
            return self.accounts_router, source, Deposit(source, rng.randint(1, 5_000))
        return self.accounts_router, source, Withdraw(source, rng.randint(1, 20_000))

    async def settle(self, system: ActorSystem) -> Outcome:
        """Wait for every transfer to end; report the totals and whether money was
        conserved with nothing left in flight."""
        assert self.totals is not None
        await _quiesce(system, [*self.handles, self.totals])
        view = self.totals.view
        return {
            "transfers_settled": view.transfers_settled,
            "transfers_refunded": view.transfers_refunded,
            "in_flight": view.in_flight,
            "money_conserved": view.conserved() and view.in_flight == 0,
            **_manager_counts(self.handles),
        }


class ShopWorkload:
    """Orders of 1-3 lines (1-3 units of 20 products at 1-9.99) from customers paying
    from their own bank account, spread over 4 warehouses. Stock and funds are sized so
    that most orders ship and some are rejected or cancelled."""

    WAREHOUSES = 4
    PRODUCTS = 20

    def __init__(self, aggregates: int, commands: int, seed: int, pick: Pick | None = None) -> None:
        self.accounts = _ids("c", aggregates)
        self.pick = pick or uniform(len(self.accounts))
        self.commands = commands
        self.seed = seed
        self.skus = _ids("sku-", self.PRODUCTS)
        self.prices = {sku: 100 + 47 * n % 900 for n, sku in enumerate(self.skus)}
        self.orders: Router | None = None
        self.handles: list[ProcessManagerHandle] = []
        self.analytics: ProjectionHandle[AnalyticsView] | None = None
        self.totals: ProjectionHandle[TotalsView] | None = None

    async def setup(self, system: ActorSystem, send_all: SendAll) -> None:
        """Open and fund the customers' accounts, stock the warehouses, start the
        fulfilment and shipping processes and the analytics."""
        accounts = system.aggregates(Account)
        inventory = system.aggregates(Inventory)
        self.orders = system.aggregates(Order)
        self.analytics = await system.project(ShopAnalytics())
        self.totals = await system.project(BankTotals())
        self.handles = await _run_managers(system, OrderFulfilment(), Shipping())
        per_customer = math.ceil(self.commands / len(self.accounts))
        funds = max(10_000, 1_600 * per_customer)  # ~80% of what the orders will cost
        stock = max(10, self.commands // 25)  # ~80% of the units ordered per warehouse
        await send_all([(accounts, c, OpenAccount(c, f"owner-{c}")) for c in self.accounts])
        await send_all([(accounts, c, Deposit(c, funds)) for c in self.accounts])
        await send_all(
            [
                (inventory, w, Restock(w, sku, stock))
                for w in _ids("w", self.WAREHOUSES)
                for sku in self.skus
            ]
        )

    def step(self, rng: random.Random, n: int) -> Step:
        """An order."""
        assert self.orders is not None
        customer = self.accounts[self.pick(rng)]
        skus = rng.sample(self.skus, rng.randint(1, 3))
        lines = tuple(OrderLine(sku, rng.randint(1, 3), self.prices[sku]) for sku in skus)
        warehouse = f"w{rng.randrange(self.WAREHOUSES)}"
        order_id = f"{self.seed}-{n}"
        return self.orders, order_id, PlaceOrder(order_id, customer, customer, lines, warehouse)

    async def settle(self, system: ActorSystem) -> Outcome:
        """Wait for every order to ship or fail; report orders per status, revenue, and
        whether revenue equals what the bank charged."""
        assert self.totals is not None
        assert self.analytics is not None
        await _quiesce(system, [*self.handles, self.totals, self.analytics])
        view = self.analytics.view
        outcome: Outcome = {f"orders_{s}": n for s, n in sorted(view.statuses.items()) if n}
        outcome["revenue"] = view.revenue
        outcome["revenue_equals_charges"] = view.revenue == self.totals.view.order_payments
        outcome.update(_manager_counts(self.handles))
        return outcome
