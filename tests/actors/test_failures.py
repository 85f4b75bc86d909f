"""Supervision (POI-1, POI-3), conflicts with concurrent appends (OCC), appends of unknown outcome."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import (
    CommandFailed,
    EvolveError,
    RestartLimitExceeded,
    TooManyAttempts,
    open_system,
)
from store import ANY, ConcurrencyError, EventStore, RecordedEvent, StoreUnavailable, open_store
from tests.actors.domain import Boom, Counter, CounterState, Increment, Incremented, Poison
from tests.actors.support import (
    CountingStore,
    FailingStore,
    GatedStore,
    InterloperStore,
    _Wrapper,
)


async def test_a_failing_evolve_restarts_the_actor_from_the_store(store_path: str) -> None:
    async with open_system(store_path) as system:
        counters = system.aggregates(Counter)
        await counters.ask("e", Increment(by=5))
        with pytest.raises(EvolveError) as caught:
            await counters.ask("e", Poison())
        assert (caught.value.aggregate_id, caught.value.event_type) == ("e", "Poisoned")
        assert isinstance(caught.value.__cause__, ValueError)
        assert await system.store.stream_version("counter-e") == 1  # nothing stored
        assert (await counters.ask("e", Increment(by=1))).version == 2
        assert await counters.state("e") == CounterState(value=6, count=2)
        assert system.statistics().restarts == 1


async def test_a_failing_evolve_in_a_batch_keeps_the_commands_around_it() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)
            outcomes: dict[str, object] = {}

            async def send(name: str, command: Increment | Poison) -> None:
                try:
                    outcomes[name] = (await counters.ask("b", command)).version
                except EvolveError as exc:
                    outcomes[name] = type(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "first", Increment(by=1, tag="first"))
                await gated.entered.wait()
                # queued behind "first": decided together as one batch
                tg.start_soon(send, "before", Increment(by=1, tag="before"))
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(send, "poison", Poison())
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(send, "after", Increment(by=1, tag="after"))
                await anyio.wait_all_tasks_blocked()
                gated.gate.set()
            assert outcomes == {"first": 1, "before": 2, "poison": EvolveError, "after": 3}
            assert (await counters.state("b")).tags == ("first", "before", "after")
            assert system.statistics().restarts == 1


class ReadSignal(_Wrapper):
    """Sets `read` after each stream read (a wrapper: loads read stream by stream)."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.read = anyio.Event()

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        try:
            return await self.inner.read_stream(stream_id, **kw)
        finally:
            self.read.set()


@pytest.mark.parametrize("idle_actor_tasks", [0, 1_000])  # 0: no task between commands
async def test_repeated_restarts_quarantine_the_actor(idle_actor_tasks: int) -> None:
    async with open_store(":memory:") as inner:
        signal = ReadSignal(inner)
        async with open_system(
            signal.as_store(),
            max_restarts=2,
            restart_backoff=0,
            quarantine_for=60,
            idle_actor_tasks=idle_actor_tasks,
        ) as system:
            counters = system.aggregates(Counter)
            await counters.ask("loop", Increment(by=1))
            for _ in range(2):
                signal.read = anyio.Event()
                with pytest.raises(EvolveError):
                    await counters.ask("loop", Poison())
                await signal.read.wait()  # the restart's reload
                await anyio.wait_all_tasks_blocked()  # with 0 idle tasks, its task ended
                assert system.statistics().actor_tasks == (idle_actor_tasks > 0)
            with pytest.raises(EvolveError):
                await counters.ask("loop", Poison())  # the third in a row: quarantined
            with pytest.raises(RestartLimitExceeded):
                await counters.ask("loop", Increment(by=1))
            assert await system.store.stream_version("counter-loop") == 1


async def test_a_conflict_with_another_writer_reloads_and_retries(store_path: str) -> None:
    async with open_store(store_path) as inner:
        interloper = InterloperStore(inner, Incremented(by=100), times=0)
        async with open_system(interloper.as_store()) as system:
            counters = system.aggregates(Counter)
            await counters.ask("c", Increment(by=1))  # the actor is live at version 1
            # another process appends to the same stream behind the actor's back
            await inner.append("counter-c", [_incremented(10)], expected_version=ANY)
            result = await counters.ask("c", Increment(by=1))
            assert result.version == 3
            assert await counters.state("c") == CounterState(value=12, count=3)
            assert await counters.state_at("c") == await counters.state("c")


async def test_a_command_that_keeps_conflicting_gives_up_with_too_many_attempts() -> None:
    async with open_store(":memory:") as inner:
        interloper = InterloperStore(inner, _incremented(100), times=1000)
        async with open_system(interloper.as_store(), max_attempts=3) as system:
            counters = system.aggregates(Counter)
            with pytest.raises(TooManyAttempts) as caught:
                await counters.ask("g", Increment(by=1, tag="mine"))
            assert caught.value.attempts == 3
            assert isinstance(caught.value.__cause__, ConcurrencyError)
            stored = await counters.history("g")
            assert [e.event.tag for e in stored] == ["", "", ""]  # only the interloper's
            interloper.times = 0
            assert (await counters.ask("g", Increment(by=1, tag="mine"))).version == 4
            assert (await counters.state("g")).value == 301


async def test_a_persist_failure_of_unknown_outcome_reloads_the_actor() -> None:
    async with open_store(":memory:") as inner:
        failing = FailingStore(inner, StoreUnavailable("lock lost"), times=0)
        async with open_system(failing.as_store()) as system:
            counters = system.aggregates(Counter)
            await counters.ask("u", Increment(by=1))
            failing.times = 1
            with pytest.raises(StoreUnavailable):
                await counters.ask("u", Increment(by=1))
            # what the store holds is the truth: the actor reloaded it
            await inner.append("counter-u", [_incremented(7)], expected_version=1)
            assert (await counters.ask("u", Increment(by=1))).version == 3
            assert (await counters.state("u")).value == 9
            assert system.statistics().restarts == 1


async def test_a_decide_bug_in_one_aggregate_leaves_the_others_alone() -> None:
    async with open_system(":memory:") as system:
        counters = system.aggregates(Counter)
        errors = 0

        async def bystander(name: str) -> None:
            for _ in range(10):
                await counters.ask(name, Increment(by=1))

        async def victim() -> None:
            nonlocal errors
            for _ in range(10):
                try:
                    await counters.ask("x", Boom())
                except CommandFailed:
                    errors += 1
                await counters.ask("x", Increment(by=1))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(bystander, f"b{i}")
            tg.start_soon(victim)
        assert errors == 10
        assert (await counters.state("x")).value == 10
        for i in range(20):
            assert (await counters.state(f"b{i}")).value == 10
        assert system.statistics().failures == 10


def _incremented(by: int) -> Incremented:
    return Incremented(by=by)


async def test_restarts_separated_by_successes_do_not_quarantine_the_actor() -> None:
    async with open_system(":memory:", max_restarts=1, quarantine_for=60) as system:
        counters = system.aggregates(Counter)
        await counters.ask("s", Increment(by=1))
        for _ in range(4):
            with pytest.raises(EvolveError):
                await counters.ask("s", Poison())
            await counters.ask("s", Increment(by=1))
        assert (await counters.state("s")).value == 5
        assert system.statistics().restarts == 4


async def test_a_conflict_reload_reads_only_what_the_other_writer_added() -> None:
    async with open_store(":memory:") as inner:
        counting = CountingStore(inner)
        async with open_system(counting.as_store(), load_page_size=10) as system:
            counters = system.aggregates(Counter)
            for _ in range(30):
                await counters.ask("c", Increment(by=1))  # live at version 30
            await inner.append("counter-c", [_incremented(100)] * 3, expected_version=30)
            counting.reads.clear()
            assert (await counters.ask("c", Increment(by=1))).version == 34
            assert counting.reads == [("counter-c", 31)]  # not from version 1
            assert await counters.state("c") == CounterState(value=331, count=34)
            assert await counters.state_at("c") == await counters.state("c")
