from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from structlog.testing import capture_logs

from bus import BusError, open_bus
from readmodels import (
    ConsistencyTimeout,
    InvalidProjection,
    ProjectionOptions,
    ProjectionStopped,
    TooManyParked,
    start_projection,
)
from store import ANY, SQLiteEventStore, open_store
from tests._events import Deposited, Opened, Withdrawn, append_deposits, registry
from tests.readmodels._support import (
    Balances,
    GatedStore,
    Log,
    Owners,
    Poisoned,
    fold,
    read_everything,
)

NO_WAIT = ProjectionOptions(retry_delay=0)


async def mixed_load(store: SQLiteEventStore, *, writers: int, appends: int) -> int:
    """Concurrent appends of deposits, withdrawals and openings; returns the last position."""

    async def writer(index: int) -> None:
        await store.append(f"acct-{index}", [Opened(f"owner-{index}")], expected_version=ANY)
        for n in range(appends):
            events = [Deposited(n + 1), Withdrawn(1)] if n % 2 else [Deposited(n + 2)]
            await store.append(f"acct-{index}", events, expected_version=ANY)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for index in range(writers):
            tg.start_soon(writer, index)
    return await store.last_position()


async def test_a_live_projection_shows_an_append_after_wait_for(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        balances = Balances()
        handle = await start_projection(tg, store, bus, balances)
        result = await store.append("acct-1", [Opened("ada"), Deposited(30)], expected_version=0)
        with anyio.fail_after(5):
            await handle.wait_for(result.last_position)
        assert balances.balance_of(handle.view, "acct-1") == 30
        await store.append("acct-1", [Withdrawn(12)], expected_version=2)
        await handle.wait_for(3)
        assert balances.balance_of(handle.view, "acct-1") == 18
        stats = handle.statistics()
        assert (stats.position, stats.lag, stats.applied, stats.parked) == (3, 0, 2, 0)
        await handle.stop()


async def test_wait_for_returns_at_once_when_reached_and_times_out_naming_positions(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        await append_deposits(store, "acct-1", [1, 2])
        handle = await Balances().start(tg, store, bus)
        await handle.wait_for(2)
        await handle.wait_for(1, timeout=0)  # already there: no waiting at all
        with pytest.raises(ConsistencyTimeout) as caught:
            await handle.wait_for(5, timeout=0.01)
        error = caught.value
        assert (error.kind, error.name, error.target, error.reached) == (
            "projection",
            "Balances",
            5,
            2,
        )
        assert str(error).startswith("projection 'Balances' reached position 2, not 5, within")
        assert isinstance(error, TimeoutError)
        assert isinstance(error, BusError)
        assert handle._waiters == []  # the timed-out wait left nothing behind
        await append_deposits(store, "acct-1", [3, 4, 5])
        await handle.wait_for(5)
        assert handle.view == {"acct-1": 15}
        await handle.stop()


async def test_a_filtered_projection_reaches_positions_it_does_not_apply(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        handle = await start_projection(tg, store, bus, Owners())
        await store.append("acct-1", [Opened("ada")], expected_version=0)
        last = await append_deposits(store, "acct-1", [1, 2, 3])
        with anyio.fail_after(5):
            await handle.wait_for(last)
        assert handle.view == ("ada",)
        assert handle.statistics().applied == 1
        await handle.stop()


async def test_a_projection_started_late_equals_one_started_at_the_beginning(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store, catch_up_page=50) as bus,
        anyio.create_task_group() as tg,
    ):
        early = await start_projection(tg, store, bus, Log(), options=NO_WAIT)
        await mixed_load(store, writers=6, appends=20)
        options = ProjectionOptions(retry_delay=0, queue_size=3)
        late = await start_projection(tg, store, bus, Log(), options=options)
        head = await mixed_load(store, writers=6, appends=20)
        with anyio.fail_after(10):
            await early.wait_for(head)
            await late.wait_for(head)
        assert late.view == early.view == list(range(1, head + 1))
        await early.stop()
        await late.stop()


async def test_from_position_starts_the_view_there_inclusive(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        await append_deposits(store, "acct-1", list(range(10)))
        handle = await start_projection(tg, store, bus, Log(), from_position=4)
        with anyio.fail_after(5):
            await handle.wait_for(10)
        assert handle.view == list(range(4, 11))
        await handle.rebuild()  # replays from where it started, not from before
        assert handle.view == list(range(4, 11))
        await handle.stop()


async def test_rebuild_equals_live_and_queries_see_the_old_view_until_the_swap(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        anyio.create_task_group() as tg,
    ):
        gated = GatedStore(store)
        async with open_bus(gated) as bus:
            handle = await start_projection(tg, gated, bus, Log(), options=NO_WAIT)
            first = await mixed_load(store, writers=4, appends=10)
            with anyio.fail_after(5):
                await handle.wait_for(first)
            old_view = handle.view
            gated.close_gate()
            async with anyio.create_task_group() as rebuilding:
                rebuilding.start_soon(handle.rebuild)
                await wait_all_tasks_blocked()
                assert gated.reads_waiting == 1  # the rebuild is stuck reading
                assert handle.view is old_view
                # the live projection keeps applying to the old view meanwhile
                second = await mixed_load(store, writers=4, appends=10)
                with anyio.fail_after(5):
                    await handle.wait_for(second)
                assert handle.view is old_view
                assert old_view == list(range(1, second + 1))
                assert handle.statistics().rebuilds == 0
                gated.open_gate()
            assert handle.view is not old_view
            assert handle.view == list(range(1, second + 1))
            assert handle.statistics().rebuilds == 1
            third = await mixed_load(store, writers=2, appends=5)
            with anyio.fail_after(5):
                await handle.wait_for(third)
            assert handle.view == list(range(1, third + 1))
            assert handle.statistics().applied == third
            await handle.stop()


async def test_rebuild_under_a_concurrent_load_has_no_gap_or_duplicate(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store, catch_up_page=64) as bus,
        anyio.create_task_group() as tg,
    ):
        options = ProjectionOptions(retry_delay=0, page_size=37)
        log = await start_projection(tg, store, bus, Log(), options=options)
        balances = await start_projection(tg, store, bus, Balances(), options=options)
        await mixed_load(store, writers=4, appends=10)
        async with anyio.create_task_group() as inner:
            inner.start_soon(log.rebuild)
            inner.start_soon(balances.rebuild)
            head = await mixed_load(store, writers=4, appends=30)
        with anyio.fail_after(10):
            await log.wait_for(head)
            await balances.wait_for(head)
        events = await read_everything(store)
        assert log.view == list(range(1, head + 1))
        assert balances.view == fold(Balances(), events)
        assert log.statistics().rebuilds == balances.statistics().rebuilds == 1
        await log.stop()
        await balances.stop()


async def test_a_poison_event_is_parked_and_the_rest_applied_and_replay_applies_it_once(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        poisoned = Poisoned()
        options = ProjectionOptions(max_attempts=3, retry_delay=0)
        handle = await start_projection(tg, store, bus, poisoned, options=options)
        with capture_logs() as logs, anyio.fail_after(5):
            await append_deposits(store, "acct-1", [5, 13, 7])
            await append_deposits(store, "acct-2", [1])
            last = await append_deposits(store, "acct-1", [100])
            await handle.wait_for(last)
        assert handle.view == {"acct-1": 112, "acct-2": 1}  # all but the poison
        assert poisoned.calls_on_poison == 3  # tried max_attempts times, no more
        (letter,) = handle.dead_letters()
        assert (letter.position, letter.stream_id, letter.version, letter.event_type) == (
            2,
            "acct-1",
            2,
            "test.deposited",
        )
        assert letter.attempts == 3
        assert "thirteen is unlucky" in letter.error
        stats = handle.statistics()
        assert (stats.parked, stats.tainted_streams, stats.position) == (1, ("acct-1",), last)
        events = [log["event"] for log in logs if log["event"].startswith("projection.")]
        assert events == ["projection.event_parked"]

        poisoned.broken = False
        assert await handle.replay_parked() == 1
        assert handle.view == {"acct-1": 125, "acct-2": 1}
        assert handle.dead_letters() == ()
        assert handle.statistics().tainted_streams == ()
        assert await handle.replay_parked() == 0  # applied once, not again
        assert handle.view == {"acct-1": 125, "acct-2": 1}
        assert poisoned.calls_on_poison == 4
        await handle.stop()


async def test_a_replay_that_fails_again_keeps_the_event_parked(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        poisoned = Poisoned()
        handle = await start_projection(tg, store, bus, poisoned, options=NO_WAIT)
        last = await append_deposits(store, "acct-1", [13, 1])
        await handle.wait_for(last)
        assert await handle.replay_parked() == 0
        (letter,) = handle.dead_letters()
        assert letter.attempts == NO_WAIT.max_attempts + 1
        assert handle.view == {"acct-1": 1}
        await handle.stop()


async def test_too_many_poison_events_stop_the_projection_with_a_clear_error(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        options = ProjectionOptions(retry_delay=0, max_attempts=1, max_parked=1)
        handle = await start_projection(tg, store, bus, Poisoned(), options=options)
        with capture_logs() as logs:
            last = await append_deposits(store, "acct-1", [13, 13, 1])
            with pytest.raises(ProjectionStopped, match="poisoned-balances") as caught:
                await handle.wait_for(last)
        assert isinstance(caught.value.__cause__, TooManyParked)
        assert not handle.running
        assert "projection.failed" in [log["event"] for log in logs]
        await handle.stop()  # idempotent once stopped


async def test_three_projections_follow_the_same_events_at_their_own_pace(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        anyio.create_task_group() as tg,
    ):
        gated = GatedStore(store)
        async with open_bus(gated) as bus:
            await mixed_load(store, writers=3, appends=5)
            gated.close_gate()  # the projections that need the store wait on it
            balances = await start_projection(tg, gated, bus, Balances(), options=NO_WAIT)
            owners = await start_projection(tg, gated, bus, Owners(), options=NO_WAIT)
            log = await start_projection(tg, gated, bus, Log(stream_prefix="acct-1"))
            await wait_all_tasks_blocked()
            assert [h.position for h in (balances, owners, log)] == [0, 0, 0]
            gated.open_gate()
            head = await mixed_load(store, writers=3, appends=5)
            with anyio.fail_after(5):
                for handle in (balances, owners, log):
                    await handle.wait_for(head)
            events = await read_everything(store)
            assert balances.view == fold(Balances(), events)
            assert owners.view == fold(Owners(), events)
            assert log.view == fold(Log(stream_prefix="acct-1"), events)
            assert len(owners.view) == 6
            for handle in (balances, owners, log):
                await handle.stop()


async def test_a_blocked_projection_never_blocks_writers_and_loses_nothing(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        anyio.create_task_group() as tg,
    ):
        gated = GatedStore(store)
        async with open_bus(gated) as bus:
            await append_deposits(store, "acct-0", [1])
            gated.close_gate()  # blocks the projection in its first catch-up read
            options = ProjectionOptions(retry_delay=0, queue_size=4)
            handle = await start_projection(tg, gated, bus, Log(), options=options)
            await wait_all_tasks_blocked()
            head = await mixed_load(store, writers=8, appends=25)
            # every append completed while the projection could not move
            assert handle.position == 0
            assert store.statistics().events == head
            gated.open_gate()
            with anyio.fail_after(10):
                await handle.wait_for(head)
            assert handle.view == list(range(1, head + 1))
            (subscription,) = bus.statistics()
            assert subscription.overflows > 0
            await handle.stop()


async def test_a_stopped_projection_keeps_its_view_and_refuses_waits(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        handle = await start_projection(tg, store, bus, Balances())
        await handle.wait_for(await append_deposits(store, "acct-1", [4]))
        await handle.stop()
        assert not handle.running
        assert handle.view == {"acct-1": 4}
        await append_deposits(store, "acct-1", [5])
        with pytest.raises(ProjectionStopped, match="stopped at position 1"):
            await handle.wait_for(2)
        with pytest.raises(ProjectionStopped):
            await handle.rebuild()
        assert bus.statistics() == ()  # its subscription is gone


async def test_wait_for_reads_events_another_process_wrote(durable_target: str) -> None:
    path = durable_target
    async with (
        open_store(path, registry=registry(), synchronous="NORMAL") as store,
        open_store(path, registry=registry(), synchronous="NORMAL") as other,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        handle = await start_projection(tg, store, bus, Balances())
        last = await append_deposits(other, "acct-9", [8, 9])
        with anyio.fail_after(5):
            await handle.wait_for(last)
        assert handle.view == {"acct-9": 17}
        await handle.stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"queue_size": 0}, "queue_size"),
        ({"page_size": 0}, "page_size"),
        ({"max_parked": 0}, "max_parked"),
    ],
)
def test_bad_options_raise_a_clear_error(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InvalidProjection, match=match):
        ProjectionOptions(**kwargs)


async def test_bad_positions_raise_a_clear_error() -> None:
    async with (
        open_store(":memory:", registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        with pytest.raises(InvalidProjection, match="from_position"):
            await start_projection(tg, store, bus, Balances(), from_position=-1)
        for bad in ("test.deposited", (Deposited, 3), (Deposited, ""), (ProjectionOptions,)):
            wrong = Balances()
            wrong.event_types = bad  # type: ignore[assignment]  # wrong on purpose
            with pytest.raises(InvalidProjection, match="event_types"):
                await start_projection(tg, store, bus, wrong)
        handle = await start_projection(tg, store, bus, Balances())
        bad_waits: list[tuple[Any, Any, str]] = [
            (-3, 1.0, "position"),
            (True, 1.0, "position"),
            (1.5, 1.0, "position"),
            (1, -1, "timeout"),
            (1, float("nan"), "timeout"),
            (1, False, "timeout"),
        ]
        for _ in range(2):  # running, then stopped: the arguments are checked first
            for position, timeout, name in bad_waits:
                with pytest.raises(
                    InvalidProjection, match=rf"^projection 'Balances': wait_for's {name} must be"
                ):
                    await handle.wait_for(position, timeout=timeout)
            await handle.stop()


async def test_a_poison_event_in_one_projection_leaves_the_others_alone(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        poisoned = await start_projection(tg, store, bus, Poisoned(), options=NO_WAIT)
        healthy = await start_projection(tg, store, bus, Balances(), options=NO_WAIT)
        last = await append_deposits(store, "acct-1", [1, 13, 2])
        with anyio.fail_after(5):
            await poisoned.wait_for(last)
            await healthy.wait_for(last)
        assert poisoned.view == {"acct-1": 3}
        assert healthy.view == {"acct-1": 16}
        assert [d.position for d in poisoned.dead_letters()] == [2]
        assert healthy.dead_letters() == ()
        assert healthy.statistics().tainted_streams == ()
        await poisoned.stop()
        await healthy.stop()


async def test_rebuild_with_pages_capped_by_the_store_loses_nothing(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry(), max_read_limit=2) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        handle = await start_projection(tg, store, bus, Log())
        last = await append_deposits(store, "acct-1", list(range(9)))
        with anyio.fail_after(5):
            await handle.wait_for(last)
        await handle.rebuild()
        assert handle.view == list(range(1, 10))
        await handle.stop()


async def test_a_cancelled_rebuild_leaves_the_old_view_in_place(store_target: str) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        anyio.create_task_group() as tg,
    ):
        gated = GatedStore(store)
        async with open_bus(gated) as bus:
            handle = await start_projection(tg, gated, bus, Balances())
            first = await append_deposits(store, "acct-1", [1, 2])
            await handle.wait_for(first)
            old_view = handle.view
            gated.close_gate()
            async with anyio.create_task_group() as rebuilding:
                rebuilding.start_soon(handle.rebuild)
                await wait_all_tasks_blocked()
                rebuilding.cancel_scope.cancel()
            gated.open_gate()
            assert handle.view is old_view
            assert handle.statistics().rebuilds == 0
            second = await append_deposits(store, "acct-1", [3])
            with anyio.fail_after(5):
                await handle.wait_for(second)
            assert handle.view == {"acct-1": 6}
            await handle.rebuild()  # the lock was released: a later rebuild works
            assert handle.view == {"acct-1": 6}
            await handle.stop()


async def test_stopping_a_projection_ends_pending_waits_with_a_clear_error(
    store_target: str,
) -> None:
    async with (
        open_store(store_target, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        handle = await start_projection(tg, store, bus, Balances())
        errors: list[ProjectionStopped] = []

        async def waiter() -> None:
            try:
                await handle.wait_for(100)
            except ProjectionStopped as exc:
                errors.append(exc)

        async with anyio.create_task_group() as waiting:
            waiting.start_soon(waiter)
            await wait_all_tasks_blocked()
            await handle.stop()
        (error,) = errors
        assert (error.projection, error.target, error.reached) == ("Balances", 100, 0)
        assert "will not reach position 100" in str(error)
