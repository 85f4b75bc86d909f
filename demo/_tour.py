"""`python -m demo tour`: a short walk through the bank and the shop on an in-memory
store: commands, a refusal, read models waited on, the audit trail, and the shop's
process managers carrying an order through stock, payment and shipping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from actors import ActorSystem, ProcessManagerHandle, open_system
from demo.bank import (
    Account,
    Balances,
    CloseAccount,
    Deposit,
    InsufficientFunds,
    OpenAccount,
    Statements,
    Withdraw,
)
from demo.shop import (
    Inventory,
    Order,
    OrderFulfilment,
    OrderHistory,
    OrderLine,
    PlaceOrder,
    Restock,
    Shipping,
)
from readmodels import ProjectionHandle

__all__ = ["tour"]


async def tour(out: TextIO, path: str = ":memory:") -> None:
    """Run the walk-through on the store at `path`, printing to `out`."""
    async with open_system(path) as system:
        balances = await system.project(Balances())
        statements = await system.project(Statements())
        history = await system.project(OrderHistory())
        accounts = system.aggregates(Account)
        orders = system.aggregates(Order)

        await accounts.ask("ada", OpenAccount("ada", "Ada Lovelace"))
        await accounts.ask("ada", Deposit("ada", 10_000))
        await accounts.ask("bob", OpenAccount("bob", "Bob"))
        try:
            await accounts.ask("bob", Withdraw("bob", 500))
        except InsufficientFunds as refusal:
            out.write(f"refused, as it should be: {refusal}\n")
        result = await accounts.ask("bob", CloseAccount("bob"))
        await balances.wait_for(result.position)
        await statements.wait_for(result.position)
        view = balances.view
        out.write(f"ada holds {view.balance_of('ada')} cents; bob open: {view.is_open('bob')}\n")
        out.writelines(
            f"  ada v{line.version} {line.kind:<12} {line.amount:>7} -> {line.balance}\n"
            for line in statements.view.statement("ada")
        )

        await system.aggregates(Inventory).ask("main", Restock("main", "pen", 10))
        placed = await orders.ask(
            "o-1", PlaceOrder("o-1", "ada", "ada", (OrderLine("pen", 2, 150),))
        )
        await history.wait_for(placed.position)
        out.writelines(
            f"ada's order {summary.order_id}: {summary.status}, {summary.total} cents\n"
            for summary in history.view.orders_of("ada")
        )

        # The process managers start only now, so the line above is always "requested";
        # they catch up from the store and send the commands each step calls for.
        managers = [
            await system.run_process_manager(OrderFulfilment()),
            await system.run_process_manager(Shipping()),
        ]
        out.write(f"process managers {', '.join(m.name for m in managers)} take it on:\n")
        await _settle(system, managers, [balances, history])
        out.writelines(
            f"  o-1 v{recorded.version} {recorded.event_type}\n"
            for recorded in await orders.history("o-1")
        )
        order = await orders.state("o-1")
        out.write(
            f"ada's order o-1: {order.status}, parcel {order.tracking};"
            f" ada holds {balances.view.balance_of('ada')} cents\n"
        )


async def _settle(
    system: ActorSystem,
    managers: Sequence[ProcessManagerHandle],
    views: Sequence[ProjectionHandle[Any]],
) -> int:
    """Wait until every manager has handled, and every view reflects, each event in the
    store, including those the managers' own commands recorded; returns that position."""
    while True:
        head = await system.store.last_position()
        for manager in managers:
            await manager.wait_for(head)
        for view in views:
            await view.wait_for(head)
        if await system.store.last_position() == head:
            return head
