"""The batch rule: every command is decided on exactly the state left by the commands
before it that committed, even when an earlier command of the same batch did not write
(a duplicate, an idempotency conflict, a conflict with a concurrent append)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec
import pytest

from actors import ActorSystem, CommandResult, open_system
from demo.bank import (
    Account,
    AccountState,
    CloseAccount,
    Deposit,
    Deposited,
    InsufficientFunds,
    OpenAccount,
    Withdraw,
    Withdrawn,
)
from store import (
    ANY,
    ChainedAppend,
    ChainOutcome,
    EventStore,
    IdempotencyConflict,
    RecordedEvent,
    open_store,
)
from tests.actors.support import _Wrapper


class LoadGate(_Wrapper):
    """Holds the next load of a stream (its first page read) until `gate` is set, so
    the commands sent meanwhile wait in the mailbox and are taken as one batch."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.armed = False

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.gate.wait()
        return await self.inner.read_stream(stream_id, **kw)

    async def append_chain(
        self, stream_id: str, chain: Sequence[ChainedAppend], *, expected_version: int
    ) -> list[ChainOutcome]:
        # The store's own chain (one batch), not one append after another.
        return await self.inner.append_chain(stream_id, chain, expected_version=expected_version)


class Interloper(LoadGate):
    """Also: before each of the next `interlopes` appends, an intruder appends
    `intruder` to the stream (by default a deposit of 1,000)."""

    def __init__(self, inner: EventStore, intruder: msgspec.Struct | None = None) -> None:
        super().__init__(inner)
        self.interlopes = 0
        self.intruder = Deposited(amount=1000) if intruder is None else intruder

    async def append(self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any) -> Any:
        if self.interlopes:
            self.interlopes -= 1
            await self.inner.append(stream_id, [self.intruder], expected_version=ANY)
        return await self.inner.append(stream_id, events, **kw)

    async def append_chain(
        self, stream_id: str, chain: Sequence[ChainedAppend], *, expected_version: int
    ) -> list[ChainOutcome]:
        if self.interlopes:
            self.interlopes -= 1
            await self.inner.append(stream_id, [self.intruder], expected_version=ANY)
        return await self.inner.append_chain(stream_id, chain, expected_version=expected_version)


Outcome = CommandResult[Any] | BaseException


async def _one_batch(
    system: ActorSystem,
    gate: LoadGate,
    account_id: str,
    sends: Sequence[Callable[[], Awaitable[CommandResult[Any]]]],
) -> list[Outcome]:
    """Forget the actor of `account_id`, then send `sends` in order while its reload is
    held, so that they are decided as one batch. Returns each outcome, in order."""
    system.passivate_idle(older_than=0)
    gate.armed = True
    outcomes: list[Outcome | None] = [None] * len(sends)

    async def send(index: int) -> None:
        try:
            outcomes[index] = await sends[index]()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for index in range(len(sends)):
                tg.start_soon(send, index)
                await anyio.wait_all_tasks_blocked()
            await gate.entered.wait()
            gate.gate.set()
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


@pytest.fixture
async def bank() -> Any:
    async with open_store(":memory:") as inner:
        gate = Interloper(inner)
        async with open_system(gate.as_store()) as system:
            yield system, gate


async def test_a_no_op_behind_a_duplicate_is_answered_on_the_stored_state(bank: Any) -> None:
    system, gate = bank
    accounts = system.aggregates(Account)
    await accounts.ask("b", OpenAccount(account_id="b", owner="ada"))
    first = await accounts.ask("b", Deposit(account_id="b", amount=500), command_id="pay-b")
    resend, no_op = await _one_batch(
        system,
        gate,
        "b",
        [
            lambda: accounts.ask("b", Deposit(account_id="b", amount=500), command_id="pay-b"),
            lambda: accounts.ask("b", OpenAccount(account_id="b", owner="ada")),
        ],
    )
    assert isinstance(resend, CommandResult)
    assert resend.duplicate
    assert (resend.version, resend.position) == (first.version, first.position)
    assert isinstance(no_op, CommandResult)
    assert (no_op.events, no_op.version) == ((), 2)
    assert await accounts.state("b") == AccountState(owner="ada", balance=500)
    after = await accounts.ask("b", Deposit(account_id="b", amount=1))
    assert after.version == 3
    assert await system.store.stream_version("account-b") == 3


async def test_a_command_behind_a_duplicate_is_decided_without_its_events(bank: Any) -> None:
    system, gate = bank
    accounts = system.aggregates(Account)
    await accounts.ask("c", OpenAccount(account_id="c", owner="ada"))
    await accounts.ask("c", Deposit(account_id="c", amount=500), command_id="pay-c")
    await accounts.ask("c", Withdraw(account_id="c", amount=500))
    resend, close = await _one_batch(
        system,
        gate,
        "c",
        [
            lambda: accounts.ask("c", Deposit(account_id="c", amount=500), command_id="pay-c"),
            lambda: accounts.ask("c", CloseAccount(account_id="c")),
        ],
    )
    assert isinstance(resend, CommandResult)
    assert resend.duplicate
    assert isinstance(close, CommandResult), close
    assert close.version == 4
    assert (await accounts.state("c")).balance == 0


async def test_a_command_behind_an_idempotency_conflict_is_decided_without_its_events(
    bank: Any,
) -> None:
    system, gate = bank
    accounts = system.aggregates(Account)
    await accounts.ask("a", OpenAccount(account_id="a", owner="ada"), command_id="taken")
    bob, carol = await _one_batch(
        system,
        gate,
        "d",
        [
            lambda: accounts.ask("d", OpenAccount(account_id="d", owner="bob"), command_id="taken"),
            lambda: accounts.ask("d", OpenAccount(account_id="d", owner="carol")),
        ],
    )
    assert isinstance(bob, IdempotencyConflict)
    assert isinstance(carol, CommandResult), carol
    assert carol.version == 1
    assert (await accounts.state("d")).owner == "carol"


async def test_a_refusal_behind_a_conflicting_append_is_decided_again(bank: Any) -> None:
    """An intruder deposits 1,000 just before the batch's append: the withdrawal
    that the batch's own first withdrawal would have left uncovered is decided again on
    the stored balance, not refused on a state that never committed."""
    system, gate = bank
    accounts = system.aggregates(Account)
    await accounts.ask("e", OpenAccount(account_id="e", owner="ada"))
    await accounts.ask("e", Deposit(account_id="e", amount=120))
    gate.interlopes = 1
    first, second = await _one_batch(
        system,
        gate,
        "e",
        [
            lambda: accounts.ask("e", Withdraw(account_id="e", amount=100)),
            lambda: accounts.ask("e", Withdraw(account_id="e", amount=50)),
        ],
    )
    assert isinstance(first, CommandResult), first
    assert isinstance(second, CommandResult), second
    assert (await accounts.state("e")).balance == 120 + 1000 - 150
    assert system.statistics().rejections == 0


async def test_the_same_command_id_at_once_works_without_remembered_ids() -> None:
    async with open_system(":memory:", recent_command_ids=0) as system:
        accounts = system.aggregates(Account)
        await accounts.ask("f", OpenAccount(account_id="f", owner="ada"))
        results: list[CommandResult[Any]] = []

        async def send() -> None:
            command = Deposit(account_id="f", amount=5)
            results.append(await accounts.ask("f", command, command_id="same"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(send)
        assert sorted(r.duplicate for r in results) == [False, True, True]
        assert {r.version for r in results} == {2}
        assert (await accounts.state("f")).balance == 5
        again = await accounts.ask("f", Deposit(account_id="f", amount=5), command_id="same")
        assert again.duplicate
        assert again.version == 2


async def test_an_append_behind_a_failed_one_is_not_sent_on_the_version_another_wrote() -> None:
    """Two appends of one batch (commands with ids): the first conflicts because another
    writer appended one event; the second, decided on the first's effect, expects the
    version the intruder's event happens to reach. Sent together, it committed
    there: a withdrawal of 150 from an account holding 0. It is decided again instead."""
    async with open_store(":memory:") as inner:
        gate = Interloper(inner, Withdrawn(amount=100))
        async with open_system(gate.as_store()) as system:
            accounts = system.aggregates(Account)
            await accounts.ask("w", OpenAccount(account_id="w", owner="ada"))
            await accounts.ask("w", Deposit(account_id="w", amount=100))
            gate.interlopes = 1
            deposit, withdraw = await _one_batch(
                system,
                gate,
                "w",
                [
                    lambda: accounts.ask("w", Deposit(account_id="w", amount=50), command_id="d"),
                    lambda: accounts.ask("w", Withdraw(account_id="w", amount=150), command_id="w"),
                ],
            )
            assert isinstance(deposit, CommandResult)
            assert isinstance(withdraw, InsufficientFunds)
            assert (await accounts.state("w")).balance == 50
            stored = await system.store.read_stream("account-w")
            assert [type(e.event).__name__ for e in stored] == [
                "AccountOpened",
                "Deposited",
                "Withdrawn",
                "Deposited",
            ]


async def test_a_batch_of_commands_with_ids_commits_as_one_chain(bank: Any) -> None:
    """Each command with an id is an append of its own, yet the batch's appends share
    one commit (a chain): a process manager's commands to one busy aggregate do not
    wait a commit each."""
    system, gate = bank
    accounts = system.aggregates(Account)
    await accounts.ask("k", OpenAccount(account_id="k", owner="ada"))
    commits: list[list[str | None]] = []

    def listen(events: Sequence[RecordedEvent]) -> None:
        commits.append([e.command_id for e in events])

    system.store.add_commit_listener(listen)

    def deposit(n: int) -> Callable[[], Awaitable[CommandResult[Any]]]:
        return lambda: accounts.ask("k", Deposit(account_id="k", amount=n), command_id=f"d{n}")

    outcomes = await _one_batch(system, gate, "k", [deposit(n) for n in range(1, 5)])
    assert [o.version for o in outcomes if isinstance(o, CommandResult)] == [2, 3, 4, 5]
    assert commits == [["d1", "d2", "d3", "d4"]]
    stored = await system.store.read_stream("account-k")
    assert [e.command_id for e in stored] == [None, "d1", "d2", "d3", "d4"]
