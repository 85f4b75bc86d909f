"""`python -m demo tour`: a short walk through the bank and the shop on an in-memory
store: commands, a refusal, read models waited on, the audit trail."""

from __future__ import annotations

from typing import TextIO

from actors import open_system
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
from demo.shop import Order, OrderHistory, OrderLine, PlaceOrder

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

        placed = await orders.ask(
            "o-1", PlaceOrder("o-1", "ada", "ada", (OrderLine("pen", 2, 150),))
        )
        await history.wait_for(placed.position)
        out.writelines(
            f"ada's order {summary.order_id}: {summary.status}, {summary.total} cents\n"
            for summary in history.view.orders_of("ada")
        )
        out.write(
            "(validation, payment and shipping are carried out by process managers,"
            " which run once the runtime for them is available)\n"
        )
