from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint

from bus import (
    BusClosed,
    BusOptions,
    BusSettings,
    EventBus,
    InvalidSubscription,
    Subscription,
    open_bus,
)
from store import RecordedEvent, SQLiteEventStore, open_store
from tests._events import Deposited, Opened, Withdrawn, append_deposits, registry


async def collect(subscription: Subscription, count: int) -> list[RecordedEvent]:
    """The next `count` events of `subscription` (guarded against hangs)."""
    out: list[RecordedEvent] = []
    with anyio.fail_after(20):
        async for recorded in subscription:
            out.append(recorded)
            if len(out) == count:
                break
    return out


async def write_load(store: SQLiteEventStore, *, writers: int, appends: int, tg: TaskGroup) -> int:
    """Start `writers` tasks each making `appends` appends of 1-3 events; returns the
    number of events they will write in all."""

    async def writer(index: int) -> None:
        for n in range(appends):
            await append_deposits(store, f"acct-{index}", [n] * (1 + (index + n) % 3))
            await checkpoint()

    total = 0
    for index in range(writers):
        tg.start_soon(writer, index)
        total += sum(1 + (index + n) % 3 for n in range(appends))
    return total


async def drain(subscription: Subscription, upto: int) -> list[RecordedEvent]:
    """Batches of `subscription` until its position reaches `upto`; their events."""
    out: list[RecordedEvent] = []
    with anyio.fail_after(20):
        while subscription.position < upto:
            batch = await subscription.next_batch()
            out.extend(batch.events)
            assert subscription.position == batch.position
    assert subscription.position == upto
    return out


def positions(events: list[RecordedEvent]) -> list[int]:
    return [e.position for e in events]


async def test_live_subscription_yields_committed_events_in_position_order(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        bus.subscribe() as subscription,
    ):
        await store.append("a-1", [Opened("ada"), Deposited(5)], expected_version=0)
        await store.append("a-2", [Opened("bob")], expected_version=0)
        events = await collect(subscription, 3)
    assert positions(events) == [1, 2, 3]
    assert [e.event for e in events] == [Opened("ada"), Deposited(5), Opened("bob")]
    assert [(e.stream_id, e.version) for e in events] == [("a-1", 1), ("a-1", 2), ("a-2", 1)]


async def test_handover_under_concurrent_load_with_a_tiny_queue_has_no_gap_or_duplicate(
    store_target: str,
) -> None:
    # On a file or a server the store reads on connections of its own, concurrently
    # with the writer.
    async with (
        open_store(store_target, registry=registry(), synchronous="NORMAL") as store,
        open_bus(store, catch_up_page=16) as bus,
    ):
        for n in range(20):
            await append_deposits(store, f"pre-{n}", [1, 2, 3, 4, 5])
        existing = await store.last_position()
        async with bus.subscribe(queue_size=2, name="tiny") as subscription:
            got: list[RecordedEvent] = []
            async with anyio.create_task_group() as tg:
                total = existing + await write_load(store, writers=8, appends=30, tg=tg)
                got = await collect(subscription, total)
            stats = subscription.statistics()
        assert await store.last_position() == total
    assert positions(got) == list(range(1, total + 1))
    assert stats.catch_ups > 1  # the initial catch-up and at least one after an overflow
    assert stats.overflows > 0
    assert stats.delivered == total
    assert stats.position == total


@pytest.mark.parametrize("queue_size", [1, 4])
async def test_a_late_subscription_sees_what_an_early_one_saw(
    queue_size: int, store_target: str
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        bus.subscribe(name="early") as early,
    ):
        async with anyio.create_task_group() as tg:
            first = await write_load(store, writers=4, appends=10, tg=tg)
        async with bus.subscribe(queue_size=queue_size, name="late") as late:
            async with anyio.create_task_group() as tg:
                total = first + await write_load(store, writers=4, appends=10, tg=tg)
                late_events = await collect(late, total)
            early_events = await collect(early, total)
    assert late_events == early_events
    assert positions(late_events) == list(range(1, total + 1))


async def test_from_position_is_inclusive(store_target: str) -> None:
    async with open_store(store_target, registry=registry()) as store, open_bus(store) as bus:
        await append_deposits(store, "a", list(range(10)))
        async with bus.subscribe(from_position=4) as subscription:
            events = await collect(subscription, 7)
    assert positions(events) == list(range(4, 11))


async def test_event_type_filter_covers_filtered_positions_in_catch_up_and_live(
    store_target: str,
) -> None:
    async with open_store(store_target, registry=registry()) as store, open_bus(store) as bus:
        await store.append("a", [Opened("ada"), Deposited(1), Withdrawn(1)], expected_version=0)
        async with bus.subscribe(event_types=["test.deposited"]) as subscription:
            # catch-up: the filtered-out withdrawal at 3 is covered too
            assert [e.event for e in await drain(subscription, 3)] == [Deposited(1)]
            await store.append("a", [Withdrawn(2), Withdrawn(3)], expected_version=3)
            batch = await subscription.next_batch()  # live: one batch, nothing matching
            assert (batch.events, batch.position) == ((), 5)
            await store.append("a", [Deposited(4), Withdrawn(5)], expected_version=5)
            batch = await subscription.next_batch()
            assert [(e.position, e.event) for e in batch.events] == [(6, Deposited(4))]
            assert subscription.position == batch.position == 7


async def test_stream_prefix_and_type_filters_combine(store_target: str) -> None:
    async with open_store(store_target, registry=registry()) as store, open_bus(store) as bus:
        await store.append("acct-1", [Opened("a"), Deposited(1)], expected_version=0)
        await store.append("order-1", [Deposited(2)], expected_version=0)
        await store.append("acct-2", [Deposited(3)], expected_version=0)
        async with (
            bus.subscribe(stream_prefix="acct-") as by_prefix,
            bus.subscribe(stream_prefix="acct-", event_types={"test.deposited"}) as both,
        ):
            await store.append("order-2", [Deposited(4)], expected_version=0)
            await store.append("acct-1", [Deposited(5)], expected_version=2)
            prefixed = await collect(by_prefix, 4)
            combined = await collect(both, 3)
    assert [(e.stream_id, e.position) for e in prefixed] == [
        ("acct-1", 1),
        ("acct-1", 2),
        ("acct-2", 4),
        ("acct-1", 6),
    ]
    assert [e.event for e in combined] == [Deposited(1), Deposited(3), Deposited(5)]


async def test_a_blocked_subscriber_never_blocks_writers_and_loses_nothing(
    store_target: str,
) -> None:
    async with open_store(store_target, registry=registry()) as store, open_bus(store) as bus:
        release = anyio.Event()
        got: list[RecordedEvent] = []
        async with bus.subscribe(queue_size=8, name="slow") as subscription:

            async def slow_consumer() -> None:
                await release.wait()
                got.extend(await collect(subscription, total))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_consumer)
                async with anyio.create_task_group() as writers:
                    total = await write_load(store, writers=10, appends=20, tg=writers)
                # every append completed while the consumer was blocked
                assert await store.last_position() == total
                assert subscription.statistics().overflows > 0
                assert subscription.position == 0
                release.set()
    assert positions(got) == list(range(1, total + 1))


async def test_statistics_report_position_lag_depth_and_deliveries(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        bus.subscribe(name="stats") as subscription,
    ):
        await append_deposits(store, "a", [1, 2, 3])
        queued = subscription.statistics()
        await collect(subscription, 2)
        partly = subscription.statistics()
        await collect(subscription, 1)
        done = bus.statistics()
    assert (queued.position, queued.lag, queued.queue_depth, queued.delivered) == (0, 3, 3, 0)
    assert (partly.position, partly.lag, partly.queue_depth) == (2, 1, 1)
    assert len(done) == 1
    assert done[0].name == "stats"
    assert (done[0].position, done[0].lag, done[0].queue_depth, done[0].delivered) == (3, 0, 0, 3)
    assert done[0].catch_ups == 0  # started at the head: nothing to read from the store


async def test_without_follow_events_of_another_connection_arrive_after_a_nudge_or_a_local_commit(
    durable_target: str,
) -> None:
    path = durable_target
    async with (
        open_store(path, registry=registry()) as store,
        open_store(path, registry=registry()) as other,
        open_bus(store, follow=False) as bus,
        bus.subscribe() as subscription,
    ):
        await append_deposits(store, "a", [1])
        assert positions(await collect(subscription, 1)) == [1]
        await append_deposits(other, "b", [2, 3])  # this bus never hears of these
        subscription.nudge()
        assert positions(await collect(subscription, 2)) == [2, 3]
        await append_deposits(other, "b", [4])
        await append_deposits(store, "a", [5])  # the gap before it sends it to the store
        events = await collect(subscription, 2)
        assert [(e.position, e.event) for e in events] == [(4, Deposited(4)), (5, Deposited(5))]
        assert subscription.statistics().catch_ups >= 2


async def test_the_bus_follows_commits_of_another_connection_without_being_asked(
    durable_target: str,
) -> None:
    external: list[int] = []
    async with (
        open_store(durable_target, registry=registry()) as store,
        open_store(durable_target, registry=registry()) as other,
        open_bus(store, poll_interval=30) as bus,
        bus.subscribe() as subscription,
    ):
        bus.add_external_listener(lambda events: external.extend(e.position for e in events))
        await append_deposits(store, "a", [1])
        assert positions(await collect(subscription, 1)) == [1]
        catch_ups = subscription.statistics().catch_ups
        await append_deposits(other, "b", [2, 3])  # only the store's hint tells this bus
        assert positions(await collect(subscription, 2)) == [2, 3]
        assert bus.published == 3
        assert external == [2, 3]
        # fed in order by the bus: the subscription never had to read the store
        assert subscription.statistics().catch_ups == catch_ups


async def test_a_local_commit_behind_others_commits_is_fanned_out_after_them_in_order(
    durable_target: str,
) -> None:
    external: list[int] = []
    async with (
        open_store(durable_target, registry=registry()) as store,
        open_store(durable_target, registry=registry()) as other,
        open_bus(store, poll_interval=30) as bus,
        bus.subscribe() as first,
    ):
        bus.add_external_listener(lambda events: external.extend(e.position for e in events))
        await append_deposits(store, "a", [1])
        assert positions(await collect(first, 1)) == [1]
        catch_ups = first.statistics().catch_ups
        await append_deposits(other, "b", [2, 3])
        await append_deposits(store, "a", [4])  # follows 3, which this bus did not publish
        await append_deposits(store, "a", [5])
        events = await collect(first, 4)
        assert [(e.position, e.event) for e in events] == [(n, Deposited(n)) for n in range(2, 6)]
        assert first.statistics().catch_ups == catch_ups
        assert bus.published == 5
        # 2 and 3 came from the store, 1 was published in order. On a SQLite file the
        # writer met 2 and 3 when it took the lock for 4, and handed them on before 4
        # (then published in order); on PostgreSQL, or had the watcher been quicker,
        # the follower read them, and maybe 4 and 5 behind them before their publish.
        assert external[:2] == [2, 3]
        assert set(external) <= {2, 3, 4, 5}


class _NoHints:
    """A store whose `wait_for_commit` never reports a commit: the bus's follower then
    reads the store only for a gap before a local commit."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self._store = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        await anyio.sleep(timeout)
        return after

    async def read_all(self, **kwargs: Any) -> list[RecordedEvent]:
        self.reads += 1
        return await self._store.read_all(**kwargs)

    async def read_log(self, **kwargs: Any) -> list[RecordedEvent]:
        self.reads += 1
        return await self._store.read_log(**kwargs)


async def test_others_commits_the_sqlite_writer_met_are_fanned_out_without_a_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    external: list[int] = []
    async with (
        open_store(path, registry=registry()) as store,
        open_store(path, registry=registry()) as other,
    ):
        assert isinstance(store, SQLiteEventStore)
        source = _NoHints(store)
        async with open_bus(source, poll_interval=30) as bus, bus.subscribe() as first:
            bus.add_external_listener(lambda events: external.extend(e.position for e in events))
            await append_deposits(store, "a", [1])
            assert positions(await collect(first, 1)) == [1]
            catch_ups = first.statistics().catch_ups
            await append_deposits(other, "b", [2, 3])
            await append_deposits(store, "a", [4])  # the writer meets 2 and 3 first
            events = await collect(first, 3)
            assert [(e.position, e.event) for e in events] == [(n, Deposited(n)) for n in (2, 3, 4)]
            assert [e.stream_id for e in events] == ["b", "b", "a"]
            assert external == [2, 3]  # the other's commit, handed on as such
            assert bus.published == 4
            assert source.reads == 0  # no read of the follower's, no catch-up
            assert first.statistics().catch_ups == catch_ups


async def test_an_error_in_the_body_comes_out_as_itself(store_target: str) -> None:
    async with open_store(store_target, registry=registry()) as store:
        with pytest.raises(KeyError, match="mine"):
            async with open_bus(store):
                raise KeyError("mine")


async def test_follow_options_are_checked(store_target: str) -> None:
    async with open_store(store_target, registry=registry()) as store:
        for bad in ({"poll_interval": 0}, {"poll_interval": "1"}, {"follow": 1}):
            with pytest.raises(InvalidSubscription, match=next(iter(bad))):
                async with open_bus(store, **bad):
                    pass


async def test_cancelling_a_waiting_subscriber_loses_nothing(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        bus.subscribe() as subscription,
    ):
        await append_deposits(store, "a", [1])
        assert positions(await collect(subscription, 1)) == [1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscription.next_batch)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        await append_deposits(store, "a", [2, 3])
        events = await collect(subscription, 2)
    assert positions(events) == [2, 3]


async def test_closing_the_bus_ends_iteration_and_refuses_subscriptions(store_target: str) -> None:
    ended = anyio.Event()
    received: list[int] = []

    async def consume(bus: EventBus, *, task_status: TaskStatus[Subscription]) -> None:
        async with bus.subscribe() as subscription:
            task_status.started(subscription)
            received.extend([recorded.position async for recorded in subscription])
        ended.set()

    async with open_store(store_target, registry=registry()) as store:
        async with anyio.create_task_group() as tg:
            async with open_bus(store) as bus:
                subscription = await tg.start(consume, bus)
                await append_deposits(store, "a", [1])
                await wait_all_tasks_blocked()
            with anyio.fail_after(5):
                await ended.wait()  # leaving open_bus ended the iteration
        assert received == [1]
        assert subscription.closed
        with pytest.raises(BusClosed, match="closed"):
            await subscription.next_batch()
        with pytest.raises(BusClosed, match="closed"):
            async with bus.subscribe():
                pass
        await append_deposits(store, "a", [2])  # the bus no longer listens
        assert bus.head == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"from_position": -1}, "from_position"),
        ({"from_position": "1"}, "from_position"),
        ({"queue_size": 0}, "queue_size"),
        ({"event_types": "test.opened"}, "event_types"),
        ({"event_types": [""]}, "event_types"),
        ({"stream_prefix": ""}, "stream_prefix"),
        ({"name": ""}, "name"),
    ],
)
async def test_bad_subscribe_arguments_raise_a_clear_error(
    kwargs: dict[str, object], match: str
) -> None:
    async with open_store(":memory:", registry=registry()) as store, open_bus(store) as bus:
        with pytest.raises(InvalidSubscription, match=match):
            async with bus.subscribe(**kwargs):  # type: ignore[arg-type]  # bad on purpose
                pass
        assert bus.statistics() == ()


def test_the_bus_settings_keys_are_the_options_fields_with_their_types() -> None:
    assert typing.get_type_hints(BusSettings) == typing.get_type_hints(BusOptions)
    assert BusSettings.__required_keys__ == frozenset()


async def test_an_unknown_bus_option_is_refused_naming_it_and_the_others() -> None:
    async with open_store(":memory:", registry=registry()) as store:
        with pytest.raises(
            InvalidSubscription,
            match=r"^open_bus: unknown option 'queue'; the options are catch_up_page, follow,"
            r" poll_interval, queue_size$",
        ):
            async with open_bus(store, queue=5):  # type: ignore[call-arg]
                pass


async def test_a_whole_bus_options_struct_is_taken_and_keywords_override_it() -> None:
    async with open_store(":memory:", registry=registry()) as store:
        base = BusOptions(queue_size=7, follow=False)
        async with open_bus(store, options=base, catch_up_page=3) as bus:
            assert bus._options == dataclasses.replace(base, catch_up_page=3)
            assert bus._follower is None
        with pytest.raises(InvalidSubscription, match="options must be a BusOptions"):
            async with open_bus(store, options={"follow": False}):  # type: ignore[arg-type]
                pass


async def test_bad_bus_options_raise_a_clear_error() -> None:
    async with open_store(":memory:", registry=registry()) as store:
        with pytest.raises(InvalidSubscription, match="catch_up_page"):
            async with open_bus(store, catch_up_page=0):
                pass


async def test_a_store_that_caps_pages_below_the_catch_up_page_loses_nothing(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry(), max_read_limit=3) as store,
        open_bus(store, catch_up_page=100) as bus,
    ):
        await append_deposits(store, "a", list(range(10)))
        async with bus.subscribe(event_types=["test.deposited"]) as subscription:
            events = await collect(subscription, 10)
    assert positions(events) == list(range(1, 11))
