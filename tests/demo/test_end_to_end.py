"""The domains on the real runtime: commands through `open_system` on ":memory:", on a
file and on PostgreSQL, read models followed over the bus and waited on with `wait_for`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import ActorSystem, ProcessManagerHandle, open_system
from demo.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    BalanceNotZero,
    Balances,
    BankTotals,
    CloseAccount,
    Deposit,
    Deposited,
    InsufficientFunds,
    InvalidAmount,
    OpenAccount,
    RequestTransfer,
    Statements,
    Transfer,
    TransferProcess,
    Withdraw,
    Withdrawn,
)
from demo.shop import (
    Inventory,
    Order,
    OrderDetails,
    OrderFulfilment,
    OrderHistory,
    OrderLine,
    OrderRequested,
    PlaceOrder,
    Restock,
    Shipping,
    tracking_number,
)
from readmodels import ProjectionHandle
from tests._postgres import fresh_schema, url_with_schema


@pytest.fixture(params=["memory", "file", "postgresql"])
async def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgresql":  # a schema of the test's own
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield ":memory:" if request.param == "memory" else str(tmp_path / "demo.db")


async def test_an_account_lives_through_the_runtime_and_its_read_models(store_path: str) -> None:
    with anyio.fail_after(20):
        async with open_system(store_path, synchronous="NORMAL") as system:
            balances = await system.project(Balances())
            statements = await system.project(Statements())
            totals = await system.project(BankTotals())
            accounts = system.aggregates(Account)

            await accounts.ask("a1", OpenAccount("a1", "ada"))
            await accounts.ask("a1", Deposit("a1", 500))
            with pytest.raises(InsufficientFunds):
                await accounts.ask("a1", Withdraw("a1", 501))
            with pytest.raises(InvalidAmount):
                await accounts.ask("a1", Deposit("a1", -5))
            await accounts.ask("a1", Withdraw("a1", 200))
            with pytest.raises(BalanceNotZero):
                await accounts.ask("a1", CloseAccount("a1"))
            result = await accounts.ask("a1", Withdraw("a1", 300))
            await balances.wait_for(result.position)
            assert balances.view.balance_of("a1") == 0
            closed = await accounts.ask("a1", CloseAccount("a1"))
            assert (closed.version, closed.events) == (5, (AccountClosed(),))

            for handle in (balances, statements, totals):
                await handle.wait_for(closed.position)
            assert not balances.view.is_open("a1")
            kinds = [line.kind for line in statements.view.statement("a1")]
            assert kinds == ["opened", "deposit", "withdrawal", "withdrawal", "closed"]
            view = totals.view
            assert (view.deposits, view.withdrawals, view.accounts_closed) == (500, 500, 1)
            assert view.conserved()

            history = await accounts.history("a1")
            assert [r.event for r in history] == [
                AccountOpened("ada"),
                Deposited(500),
                Withdrawn(200),
                Withdrawn(300),
                AccountClosed(),
            ]


async def test_a_placed_order_is_stored_as_requested_before_anything_else(store_path: str) -> None:
    lines = (OrderLine("pen", 2, 150), OrderLine("ink", 1, 400))
    with anyio.fail_after(20):
        async with open_system(store_path, synchronous="NORMAL") as system:
            history = await system.project(OrderHistory())
            details = await system.project(OrderDetails())
            orders = system.aggregates(Order)
            result = await orders.ask("o1", PlaceOrder("o1", "c1", "acc-c1", lines))
            again = await orders.ask("o1", PlaceOrder("o1", "c1", "acc-c1", lines))
            assert again.events == ()
            assert again.version == 1

            stored = await system.store.read_stream("order-o1")
            assert [r.event for r in stored] == [OrderRequested("c1", "acc-c1", "main", lines, 700)]
            await history.wait_for(result.position)
            await details.wait_for(result.position)
            assert [(o.order_id, o.status, o.total) for o in history.view.orders_of("c1")] == [
                ("o1", "requested", 700)
            ]
            detail = details.view.order("o1")
            assert detail is not None
            assert (detail.lines, detail.status) == (lines, "requested")


async def test_accounts_and_read_models_come_back_the_same_from_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "bank.db")
    with anyio.fail_after(20):
        async with open_system(path) as system:
            accounts = system.aggregates(Account)
            for name, amount in (("a", 70), ("b", 30), ("c", 5)):
                await accounts.ask(name, OpenAccount(name, name))
                await accounts.ask(name, Deposit(name, amount))
            await accounts.ask("c", Withdraw("c", 5))
            await accounts.ask("c", CloseAccount("c"))
        async with open_system(path) as system:
            accounts = system.aggregates(Account)
            result = await accounts.ask("a", Deposit("a", 1))
            balances = await system.project(Balances())
            await balances.wait_for(result.position)
            assert balances.view.balances == {"a": 71, "b": 30, "c": 0}
            assert balances.view.closed == {"c"}
            state = await accounts.state("b")
            assert state.balance == 30
            with pytest.raises(InsufficientFunds):
                await accounts.ask("b", Withdraw("b", 31))


async def settle(
    system: ActorSystem, handles: Sequence[ProcessManagerHandle | ProjectionHandle[Any]]
) -> None:
    """Wait until the process managers have handled everything, their own commands'
    events included."""
    while True:
        last = await system.store.last_position()
        for handle in handles:
            await handle.wait_for(last)
        if await system.store.last_position() == last:
            return


async def test_transfers_and_an_order_run_through_the_process_managers(store_path: str) -> None:
    with anyio.fail_after(30):
        async with open_system(store_path, synchronous="NORMAL") as system:
            managers = (TransferProcess(), OrderFulfilment(), Shipping())
            handles = [await system.run_process_manager(m) for m in managers]
            totals = await system.project(BankTotals())
            accounts = system.aggregates(Account)
            transfers = system.aggregates(Transfer)
            for name in ("a", "b", "shut"):
                await accounts.ask(name, OpenAccount(name, name))
            await accounts.ask("a", Deposit("a", 1_000))
            await accounts.ask("shut", CloseAccount("shut"))
            await system.aggregates(Inventory).ask("main", Restock("main", "pen", 5))

            await transfers.ask("t1", RequestTransfer("t1", "a", "b", 300))
            await transfers.ask("t2", RequestTransfer("t2", "a", "shut", 200))
            await transfers.ask("t3", RequestTransfer("t3", "b", "a", 5_000))
            order = PlaceOrder("o1", "a", "a", (OrderLine("pen", 2, 100),))
            await system.aggregates(Order).ask("o1", order)
            await settle(system, [*handles, totals])

            assert (await accounts.state("a")).balance == 1_000 - 300 - 200
            assert (await accounts.state("b")).balance == 300
            statuses = [(await transfers.state(t)).status for t in ("t1", "t2", "t3")]
            assert statuses == ["completed", "failed", "failed"]
            final = await system.aggregates(Order).state("o1")
            assert (final.status, final.tracking) == ("shipped", tracking_number("o1"))
            assert totals.view.conserved()
            assert totals.view.in_flight == 0
