"""The handover races, forced one by one with a log whose commit and publish are separate.

With the real store a batch is published right after its commit, so the interleavings
below happen only by chance (a reader connection seeing a commit before its publish,
another process writing); here each is made to happen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest

from bus import Subscription, open_bus
from bus import _follow as follow
from store import RecordedEvent, StoreUnavailable
from tests._events import Deposited, Withdrawn


class ManualLog:
    """An in-memory log: `commit` records events, `publish` tells the listeners."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.listeners: list[Callable[[Sequence[RecordedEvent]], None]] = []
        self.reads = 0
        self.fail_next_head = False

    def commit(
        self, count: int, *, stream_id: str = "s-1", withdraw: bool = False
    ) -> list[RecordedEvent]:
        batch = []
        for _ in range(count):
            position = len(self.events) + 1
            event = Withdrawn(1) if withdraw else Deposited(position)
            tag = "test.withdrawn" if withdraw else "test.deposited"
            recorded = RecordedEvent(stream_id, position, position, tag, 1, event, {}, 0.0)
            self.events.append(recorded)
            batch.append(recorded)
        return batch

    def publish(self, batch: Sequence[RecordedEvent]) -> None:
        for listener in self.listeners:
            listener(batch)

    def add_commit_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    async def last_position(self) -> int:
        await anyio.lowlevel.checkpoint()
        if self.fail_next_head:
            self.fail_next_head = False
            raise StoreUnavailable("the log cannot be read right now")
        return len(self.events)

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        await anyio.sleep(timeout)  # no hint: these tests drive the bus by hand
        return len(self.events)

    async def read_all(
        self,
        *,
        from_position: int = 0,
        to_position: int | None = None,
        limit: int | None = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        await anyio.lowlevel.checkpoint()
        self.reads += 1
        high = len(self.events) if to_position is None else to_position
        out = [
            e
            for e in self.events
            if from_position <= e.position <= high
            and (event_types is None or e.event_type in event_types)
            and (stream_prefix is None or e.stream_id.startswith(stream_prefix))
        ]
        return out[: limit or 1000]


async def next_positions(subscription: Subscription) -> tuple[list[int], int]:
    with anyio.fail_after(5):
        batch = await subscription.next_batch()
    return [e.position for e in batch.events], batch.position


async def test_a_batch_published_after_catch_up_read_it_is_trimmed_not_repeated() -> None:
    log = ManualLog()
    async with open_bus(log, follow=False) as bus, bus.subscribe() as subscription:
        first = log.commit(2)  # committed; its publish is late
        assert await next_positions(subscription) == ([1, 2], 2)  # read from the log
        log.publish(first)  # now buffered: positions 1-2, already covered
        log.publish(log.commit(2))  # 3-4 follow in the same buffer
        assert await next_positions(subscription) == ([3, 4], 4)


async def test_a_late_batch_entirely_covered_is_skipped() -> None:
    log = ManualLog()
    async with open_bus(log, follow=False) as bus, bus.subscribe() as subscription:
        first = log.commit(3)
        assert await next_positions(subscription) == ([1, 2, 3], 3)
        log.publish(first)  # all of it is covered already
        got: list[tuple[list[int], int]] = []

        async def consume() -> None:
            got.append(await next_positions(subscription))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()  # it skipped the late batch and waits
            assert got == []
            log.publish(log.commit(1))
        assert got == [([4], 4)]
        assert subscription.statistics().catch_ups == 1


async def test_a_gap_inside_the_buffer_drops_it_and_catches_up() -> None:
    log = ManualLog()
    async with open_bus(log, follow=False) as bus, bus.subscribe() as subscription:
        assert log.reads == 0
        log.publish(log.commit(2))
        assert await next_positions(subscription) == ([1, 2], 2)
        assert log.reads == 0  # the buffer held everything: the log was not read
        log.publish(log.commit(1))
        log.commit(2)  # another process
        log.publish(log.commit(1))  # 6 does not follow 3: the buffer is dropped
        stats = subscription.statistics()
        assert (stats.queue_depth, stats.overflows) == (0, 0)
        assert await next_positions(subscription) == ([3, 4, 5, 6], 6)
        assert subscription.statistics().catch_ups == 1


async def test_a_nudge_reads_what_another_process_wrote_before_the_buffered_batch() -> None:
    log = ManualLog()
    async with (
        open_bus(log, follow=False) as bus,
        bus.subscribe(event_types=["test.deposited"]) as sub,
    ):
        log.publish(log.commit(1))
        assert await next_positions(sub) == ([1], 1)
        log.publish(log.commit(2))  # 2-3 buffered
        log.commit(1, withdraw=True)  # 4, another process, filtered out anyway
        sub.nudge()
        # the catch-up reads up to head 4 and the buffered 2-3 are then skipped
        assert await next_positions(sub) == ([2, 3], 3)
        assert await next_positions(sub) == ([], 4)  # 4 covered though filtered out
        log.publish(log.commit(1))
        assert await next_positions(sub) == ([5], 5)


async def test_a_failed_catch_up_read_is_retried_by_the_next_call() -> None:
    log = ManualLog()
    async with open_bus(log, follow=False) as bus, bus.subscribe(queue_size=1) as subscription:
        log.publish(log.commit(3))  # over the queue size: dropped, the log must be read
        log.fail_next_head = True
        with pytest.raises(StoreUnavailable, match="cannot be read"):
            await subscription.next_batch()
        assert await next_positions(subscription) == ([1, 2, 3], 3)


class OthersLog(ManualLog):
    """A log that tells the follower when it moved, and how far other processes'
    commits reach (`others_head`, as the PostgreSQL store knows from its notifications)."""

    def __init__(self) -> None:
        super().__init__()
        self.others_head = 0
        self._moved = anyio.Event()

    def commit_by_another(self, count: int) -> None:
        """Another process commits: never published here; the hint says so."""
        self.commit(count)
        self.others_head = len(self.events)
        self._moved.set()

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        with anyio.move_on_after(timeout):
            while len(self.events) <= after:
                self._moved = anyio.Event()
                await self._moved.wait()
        return len(self.events)


async def test_commits_of_other_processes_are_read_without_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grace waits for this process's own publishes to cover a head; a head the
    store knows other processes committed is read at once."""
    monkeypatch.setattr(follow, "GRACE", 60.0)  # waited for, it fails the test
    log = OthersLog()
    async with open_bus(log) as bus, bus.subscribe() as subscription:
        log.commit_by_another(2)
        assert await next_positions(subscription) == ([1, 2], 2)
        log.commit_by_another(1)
        assert await next_positions(subscription) == ([3], 3)
    assert log.reads >= 2


class CallbackLog(ManualLog):
    """A log whose hint never wakes a waiter, but which calls the follower back when
    another process commits (`add_others_listener`, as the PostgreSQL store does)."""

    def __init__(self) -> None:
        super().__init__()
        self.others: list[Callable[[int], None]] = []

    def add_others_listener(self, listener: Callable[[int], None]) -> Callable[[], None]:
        self.others.append(listener)
        return lambda: self.others.remove(listener)

    def commit_by_another(self, count: int) -> None:
        self.commit(count)
        for listener in self.others:
            listener(len(self.events))


async def test_the_store_s_callback_wakes_the_follower_for_another_process_s_commit() -> None:
    log = CallbackLog()
    # No poll in the test's time: only the callback can make the follower read.
    async with open_bus(log, poll_interval=60.0) as bus, bus.subscribe() as subscription:
        assert len(log.others) == 1
        log.commit_by_another(1)
        assert await next_positions(subscription) == ([1], 1)  # its first catch-up, say
        log.commit_by_another(2)  # the subscription is live now: only the follower reads
        assert await next_positions(subscription) == ([2, 3], 3)
    assert log.others == []  # removed with the bus
