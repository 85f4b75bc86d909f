"""Passivation, the live-actor cap (LRU) and snapshots."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import ActorError, AggregateRouter, InvalidOption, Rejected, open_system
from store import open_store
from tests.actors.domain import (
    Boom,
    Counter,
    CounterCommand,
    CounterEvent,
    CounterState,
    Increment,
    Noop,
    SnapshottedCounter,
)
from tests.actors.support import CountingStore


async def test_a_passivated_actor_reloads_the_same_state(store_path: str) -> None:
    async with open_system(store_path) as system:
        counters = system.aggregates(Counter)
        for i in range(5):
            await counters.ask("p", Increment(by=i + 1, tag=str(i)))
        before = await counters.state("p")
        assert system.passivate_idle(older_than=0) == 1
        stats = system.statistics()
        assert (stats.live_actors, stats.passivations) == (0, 1)
        assert await counters.state("p") == before
        assert (await counters.ask("p", Increment(by=1))).version == 6


async def test_idle_passivation_spares_recently_used_actors() -> None:
    async with open_system(":memory:", idle_timeout=3600) as system:
        counters = system.aggregates(Counter)
        await counters.ask("recent", Increment(by=1))
        assert system.passivate_idle() == 0
        assert system.statistics().live_actors == 1


async def test_the_live_actor_cap_is_never_exceeded(store_path: str) -> None:
    async with open_system(store_path, max_live_actors=5) as system:
        counters = system.aggregates(Counter)
        peak = 0
        for _ in range(3):
            for i in range(40):
                await counters.ask(f"lru{i}", Increment(by=1))
                peak = max(peak, system.statistics().live_actors)
        assert peak == 5
        for i in range(40):
            assert await counters.state(f"lru{i}") == CounterState(value=3, count=3)
        assert system.statistics().passivations >= 40 * 3


async def test_an_evicted_actor_finishes_its_queue_before_its_successor_loads() -> None:
    async with open_system(":memory:", max_live_actors=1) as system:
        counters = system.aggregates(Counter)
        for i in range(50):
            counters.tell("a", Increment(by=1, tag=str(i)))
        counters.tell("b", Increment(by=1))  # evicts "a" with 50 commands queued
        counters.tell("a", Increment(by=1, tag="last"))  # a new actor for "a"
        state = await counters.state("a")
        assert state.tags == (*(str(i) for i in range(50)), "last")


async def test_a_snapshot_load_equals_a_full_replay(store_path: str) -> None:
    async with open_store(store_path) as inner:
        counting = CountingStore(inner)
        async with open_system(counting.as_store()) as system:
            counters = system.aggregates(SnapshottedCounter)  # snapshot every 10 events
            for i in range(35):
                await counters.ask("s", Increment(by=i + 1, tag=str(i)))
            live = await counters.state("s")
            assert system.statistics().snapshots == 3
            snapshot = await inner.load_snapshot("scounter-s", CounterState)
            assert snapshot is not None
            assert snapshot.version == 30
            system.passivate_idle(older_than=0)
            counting.reads.clear()
            reloaded = await counters.state("s")
            assert counting.reads == [("scounter-s", 30)]  # from the snapshot on
            assert reloaded == live == await counters.state_at("s")  # state_at replays all
            assert (await counters.ask("s", Increment(by=1))).version == 36


async def test_loading_pages_through_a_long_stream() -> None:
    async with open_store(":memory:") as inner:
        counting = CountingStore(inner)
        async with open_system(counting.as_store(), load_page_size=7) as system:
            counters = system.aggregates(Counter)
            for _ in range(20):
                await counters.ask("long", Increment(by=1))
            system.passivate_idle(older_than=0)
            counting.reads.clear()
            assert (await counters.state("long")).value == 20
            assert counting.reads == [
                ("counter-long", 1),
                ("counter-long", 8),
                ("counter-long", 15),
            ]


async def test_a_load_page_over_the_stores_read_limit_is_refused_when_the_system_opens() -> None:
    # The store refuses a page over its max_read_limit rather than cut it short (a load
    # would take the cut for the end of the stream); the system says so at once.
    async with open_store(":memory:", max_read_limit=100) as store:
        with pytest.raises(
            InvalidOption,
            match=r"load_page_size must be an int from 1 to 100 \(the store's max_read_limit\), not 101",
        ):
            async with open_system(store, load_page_size=101):
                pass
        async with open_system(store, load_page_size=100) as system:
            counters = system.aggregates(Counter)
            for _ in range(150):
                await counters.ask("long", Increment(by=1))
            system.passivate_idle(older_than=0)
            assert (await counters.state("long")).value == 150  # two full pages and a half


commands = st.lists(
    st.one_of(
        st.builds(Increment, by=st.integers(-3, 3), tag=st.sampled_from(["", "x", "y"])),
        st.just(Noop()),
        st.just(Boom()),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands, st.integers(1, 8))
def test_the_actor_state_is_the_fold_of_evolve_over_the_stored_stream(
    sequence: list[CounterCommand], capacity: int
) -> None:
    async def run() -> None:
        async with open_system(":memory:", mailbox_capacity=capacity) as system:
            counters = system.aggregates(Counter)
            async with anyio.create_task_group() as tg:
                for command in sequence:  # concurrently: the actor batches them
                    tg.start_soon(_send, counters, command)
            state = await counters.state("h")
            aggregate = Counter()
            folded = aggregate.initial
            stored = await counters.history("h")
            for recorded in stored:
                folded = aggregate.evolve(folded, recorded.event)
            assert state == folded
            assert state.count == len(stored)
            assert [e.version for e in stored] == list(range(1, len(stored) + 1))

    anyio.run(run, backend="asyncio")


async def _send(
    counters: AggregateRouter[CounterState, CounterCommand, CounterEvent], command: CounterCommand
) -> None:
    try:
        await counters.ask("h", command)
    except (Rejected, ActorError):
        pass
