"""Actors without a task: a live actor has one only while it has work, or while it waits
idle for its next command (up to `idle_actor_tasks` across the system)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from actors import ActorSystem, open_system
from store import RecordedEvent, open_store
from tests.actors.domain import Counter, CounterState, Increment
from tests.actors.support import CountingStore, _Wrapper


def _reads_of(store: CountingStore, stream_id: str) -> list[int]:
    return [start for stream, start in store.reads if stream == stream_id]


async def _settled(system: ActorSystem) -> Any:
    """The statistics once every task is blocked (the actor tasks done with their work)."""
    await anyio.wait_all_tasks_blocked()
    return system.statistics()


async def test_a_first_command_loads_the_actor_on_the_callers_task() -> None:
    async with open_system(":memory:") as system:
        tasks = len(asyncio.all_tasks())
        counters = system.aggregates(Counter)
        assert (await counters.ask("a", Increment(by=2))).version == 1
        assert (await counters.ask("a", Increment(by=3))).version == 2
        stats = await _settled(system)
        assert (stats.live_actors, stats.actor_tasks) == (1, 0)
        assert len(asyncio.all_tasks()) == tasks


async def test_an_idle_actor_past_the_limit_ends_its_task_and_keeps_its_state() -> None:
    async with open_store(":memory:") as inner:
        counting = CountingStore(inner)
        async with open_system(counting.as_store(), idle_actor_tasks=0) as system:
            counters = system.aggregates(Counter)
            for _ in range(5):
                counters.tell("t", Increment(by=1))  # through the mailbox: a task serves
            assert await counters.state("t") == CounterState(value=5, count=5)
            stats = await _settled(system)
            assert (stats.live_actors, stats.actor_tasks) == (1, 0)
            assert _reads_of(counting, "counter-t") == [1]  # loaded once
            # the next commands find the state in memory: no reload, with or without a task
            counters.tell("t", Increment(by=1))
            assert (await counters.ask("t", Increment(by=1))).version == 7
            assert await counters.state("t") == CounterState(value=7, count=7)
            assert _reads_of(counting, "counter-t") == [1]
            assert (await _settled(system)).actor_tasks == 0


async def test_idle_actor_tasks_bounds_the_tasks_that_wait() -> None:
    async with open_system(":memory:", idle_actor_tasks=3) as system:
        tasks = len(asyncio.all_tasks())
        counters = system.aggregates(Counter)
        for i in range(10):
            counters.tell(f"c{i}", Increment(by=i))
        for i in range(10):
            assert (await counters.state(f"c{i}")).value == i
        stats = await _settled(system)
        assert (stats.live_actors, stats.actor_tasks) == (10, 3)
        assert len(asyncio.all_tasks()) == tasks + 3


async def test_passivating_an_actor_without_a_task_ends_it() -> None:
    async with open_store(":memory:") as inner:
        counting = CountingStore(inner)
        async with open_system(counting.as_store(), idle_actor_tasks=0) as system:
            counters = system.aggregates(Counter)
            await counters.ask("p", Increment(by=4))
            tasks = len(asyncio.all_tasks())
            assert system.passivate_idle(older_than=0) == 1
            assert len(asyncio.all_tasks()) == tasks  # ended at once, without a task
            stats = await _settled(system)
            assert (stats.live_actors, stats.stopping_actors, stats.actor_tasks) == (0, 0, 0)
            assert (await counters.ask("p", Increment(by=1))).version == 2
            assert await counters.state("p") == CounterState(value=5, count=2)
            assert _reads_of(counting, "counter-p") == [1, 1]  # loaded again, whole


class HeldLoad(_Wrapper):
    """Holds the reads of streams until `gate` is set (`entered` once one waits);
    records the number of events of each append."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.appends: list[int] = []

    async def append(self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any) -> Any:
        self.appends.append(len(events))
        return await self.inner.append(stream_id, events, **kw)

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.read_stream(stream_id, **kw)


async def test_a_caller_cancelled_while_loading_the_actor_leaves_it_unloaded() -> None:
    async with open_store(":memory:") as inner:
        held = HeldLoad(inner)
        async with open_system(held.as_store()) as system:
            counters = system.aggregates(Counter)
            async with anyio.create_task_group() as tg:
                tg.start_soon(counters.ask, "x", Increment(by=1))
                await held.entered.wait()
                tg.cancel_scope.cancel()  # the caller goes while its load is held
            held.gate.set()
            stats = await _settled(system)
            assert (stats.live_actors, stats.actor_tasks, stats.restarts) == (1, 0, 0)
            assert (await counters.ask("x", Increment(by=2))).version == 1
            assert await counters.state("x") == CounterState(value=2, count=1)


@pytest.mark.parametrize("idle_actor_tasks", [0, 1_000])
async def test_commands_queued_during_the_first_load_are_one_batch_with_the_first(
    idle_actor_tasks: int,
) -> None:
    async with open_store(":memory:") as inner:
        held = HeldLoad(inner)
        async with open_system(held.as_store(), idle_actor_tasks=idle_actor_tasks) as system:
            counters = system.aggregates(Counter)
            versions: dict[str, int] = {}

            async def send(tag: str) -> None:
                versions[tag] = (await counters.ask("b", Increment(by=1, tag=tag))).version

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "first")
                await held.entered.wait()  # the first caller loads the actor
                for tag in ("second", "third"):
                    tg.start_soon(send, tag)
                    await anyio.wait_all_tasks_blocked()
                held.gate.set()
            assert versions == {"first": 1, "second": 2, "third": 3}  # in the order sent
            assert held.appends == [3]  # one batch, one append
            stored = await inner.read_stream("counter-b")
            assert [e.event.tag for e in stored] == ["first", "second", "third"]
