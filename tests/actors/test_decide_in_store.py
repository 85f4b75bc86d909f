"""Two actor systems on one store, as two processes would be: a command whose append
another process passed is decided again in the store, on the events it missed
(`decide_in_store`), rather than refused there and decided again after a read:
SQLite's thread writer inside its transaction; PostgreSQL's writer before its batch, on
what other processes' notifications announced, and after its batch refused the append
(and those chained to it), on the events it reads then (tests/store/
test_postgres_redecide.py). The answers are the same either way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from actors import ActorSystem, Aggregate, Command, Event, open_system
from demo.bank import Account, Deposit, Deposited, InsufficientFunds, Withdraw
from store import SQLiteEventStore
from tests.actors.test_riders import _together
from tests.actors.test_shared_store import opened_at_100


@asynccontextmanager
async def _two(target: str, **options: Any) -> AsyncIterator[tuple[ActorSystem, ActorSystem]]:
    """Two systems on `target` (`a` with `options`) that do not follow each other, as
    two processes would be, with account `acc` opened at 100 through `a`."""
    async with (
        open_system(target, follow=False, **options) as a,
        open_system(target, follow=False) as b,
    ):
        await opened_at_100(a)
        yield a, b


def _retried(system: ActorSystem) -> tuple[int, int]:
    stats = system.statistics()
    return stats.redecisions, stats.conflicts


async def test_a_deposit_is_decided_again_on_another_process_deposit(
    durable_target: str,
) -> None:
    async with _two(durable_target) as (a, b):
        before = _retried(a)
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        result = await a.aggregates(Account).ask("acc", Deposit("acc", 5))
        assert (result.version, result.events) == (4, (Deposited(5),))
        assert (await a.aggregates(Account).state("acc")).balance == 1105
        after = _retried(a)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
        stored = [r.event for r in await a.store.read_stream("account-acc")]
        assert stored[-2:] == [Deposited(1000), Deposited(5)]


async def test_a_withdrawal_the_missed_events_refuse_is_refused(durable_target: str) -> None:
    """Decided again in the store, the withdrawal is refused there: it is left to
    conflict, and the actor refuses it on the state it reads."""
    async with _two(durable_target) as (a, b):
        await b.aggregates(Account).ask("acc", Withdraw("acc", 100))
        with pytest.raises(InsufficientFunds):
            await a.aggregates(Account).ask("acc", Withdraw("acc", 50))
        assert _retried(a) == (0, 1)
        assert await a.store.stream_version("account-acc") == 3
        assert (await a.aggregates(Account).state("acc")).balance == 0


async def test_commands_riding_on_an_append_decided_again_are_decided_again(
    durable_target: str,
) -> None:
    """A command run inline and the ones riding on its append, all decided on a state
    another process passed: in the store's batch, the first is decided again on the
    missed deposit and each rider on what the one before it left."""
    async with _two(durable_target) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        outcomes = await _together(a, [Deposit("acc", n) for n in range(1, 5)])
        assert sorted(o.version for o in outcomes) == [4, 5, 6, 7]
        assert (await a.aggregates(Account).state("acc")).balance == 1110
        redecided, conflicts = _retried(a)
        assert a.statistics().rides >= 1
        assert (redecided, conflicts) == (len(outcomes), 0)


async def test_a_batch_from_the_mailbox_is_decided_again_as_one_append(tmp_path: str) -> None:
    """Commands told (queued in the mailbox) are decided as one batch on the actor's
    task, one append for all: decided again together, each answered with its own."""
    path = f"{tmp_path}/events.db"
    async with _two(path) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        accounts = a.aggregates(Account)
        for amount in (1, 2, 3):
            accounts.tell("acc", Deposit("acc", amount))
        with anyio.fail_after(10):
            state = await accounts.state("acc")
        assert state.balance == 1106
        assert _retried(a) == (1, 0)
        stored = [r.event for r in await a.store.read_stream("account-acc")]
        assert stored[-3:] == [Deposited(n) for n in (1, 2, 3)]


async def test_off_it_conflicts_and_decides_again_after_a_read(tmp_path: str) -> None:
    path = f"{tmp_path}/events.db"
    async with _two(path, decide_in_store=False) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        result = await a.aggregates(Account).ask("acc", Deposit("acc", 5))
        assert result.version == 4
        assert _retried(a) == (0, 1)


async def test_commands_riding_into_the_next_batch_are_decided_again(tmp_path: str) -> None:
    """The riders queue while the batch with the append they ride on is being written:
    they go in the next batch, after that append committed, decided again. They are
    decided again too, on what it left, instead of being sent back to the mailbox."""
    path = f"{tmp_path}/events.db"
    async with _two(path) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        store = a.store
        assert isinstance(store, SQLiteEventStore)
        commit = store._commit_batch
        taken, go = anyio.Event(), anyio.Event()

        async def held(appends: Any, writes: Any) -> Any:
            if not taken.is_set():
                taken.set()
                await go.wait()
            return await commit(appends, writes)

        store._commit_batch = held  # type: ignore[method-assign]
        accounts = a.aggregates(Account)
        versions: dict[int, int] = {}

        async def deposit(amount: int) -> None:
            versions[amount] = (await accounts.ask("acc", Deposit("acc", amount))).version

        async with anyio.create_task_group() as tg:
            tg.start_soon(deposit, 1)
            await taken.wait()
            tg.start_soon(deposit, 2)
            tg.start_soon(deposit, 3)
            await anyio.wait_all_tasks_blocked()
            assert a.statistics().rides == 2
            go.set()
        assert versions == {1: 4, 2: 5, 3: 6}
        assert _retried(a) == (3, 0)
        assert (await accounts.state("acc")).balance == 1106
        stored = [r.event for r in await a.store.read_stream("account-acc")]
        assert stored[-4:] == [Deposited(1000), Deposited(1), Deposited(2), Deposited(3)]


class Climb(Command, tag="test.ladder.climb"):
    by: str


class Stepped(Event, tag="test.ladder.stepped"):
    by: str


class LadderState(msgspec.Struct, frozen=True):
    steps: tuple[str, ...] = ()


class Ladder(Aggregate[LadderState, Climb, Stepped]):
    """A climb takes two steps from an even count, one from an odd: deciding again on
    another process's step can change how many events a command writes."""

    initial = LadderState()
    category = "ladder"

    def decide(self, state: LadderState, command: Climb) -> Sequence[Stepped]:
        return [Stepped(command.by)] * (2 if len(state.steps) % 2 == 0 else 1)

    def evolve(self, state: LadderState, event: Stepped) -> LadderState:
        return LadderState((*state.steps, event.by))


async def test_a_rider_decided_again_at_the_version_it_expected_takes_the_new_state(
    tmp_path: str,
) -> None:
    """The first climb, decided on 2 steps, would write 2; decided again on the other
    process's step it writes 1, ending at 4, where the rider was decided to start.
    The rider, decided again on what the first left, commits at the version it was
    first decided at: the actor must still take the state decided again."""
    path = f"{tmp_path}/events.db"
    async with (
        open_system(path, follow=False) as a,
        open_system(path, follow=False) as b,
    ):
        ladders = a.aggregates(Ladder)
        await ladders.ask("l", Climb("a"))
        b.aggregates(Ladder)  # registers its events with b's store
        await b.store.append("ladder-l", [Stepped("b")], expected_version=2)
        results = await _climbs(a, 2)
        assert [r.version for r in results] == [4, 6]
        assert a.statistics().rides == 1
        expected = ("a", "a", "b", "a", "a", "a")
        stored = [r.event.by for r in await a.store.read_stream("ladder-l")]
        assert tuple(stored) == expected
        assert (await ladders.state("l")).steps == expected


async def _climbs(system: ActorSystem, count: int) -> list[Any]:
    """`count` climbs of ladder "l" sent together (the first runs inline, the others
    ride on its append); their results in order."""
    ladders = system.aggregates(Ladder)
    results: list[Any] = [None] * count

    async def climb(index: int) -> None:
        results[index] = await ladders.ask("l", Climb("a"))

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(climb, index)
    return results
