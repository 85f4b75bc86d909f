"""Subscriptions: a subscriber's ordered, gapless view of the global log.

A `Subscription` filters each batch the bus offers into its bounded live buffer (never
blocking the writer), drops the buffer and marks itself behind when it would overflow or
when a batch does not follow the last one, and then catches up by reading the store from
the last position it covered to the head, skipping at the handover whatever it already
covered. `Batch` is what it hands over at once; `SubscriptionStatistics` its progress.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import msgspec

from bus._errors import BusClosed
from bus._source import EventSource
from store import RecordedEvent

__all__ = ["Batch", "Subscription", "SubscriptionStatistics"]


class _Bus(Protocol):
    """What a subscription uses of its bus (`EventBus`): the store it reads while
    catching up, and the head it reports and raises."""

    _source: EventSource
    _head: int

    def _observe_head(self, head: int) -> None: ...


class Batch(msgspec.Struct, frozen=True):
    """Events handed to a subscriber at once, and how far they account for.

    Attributes:
        events: the matching events, in strictly increasing position order (may be
            empty when every position in the range was filtered out).
        position: the highest global position this batch accounts for, including
            positions the subscription's filters left out.
    """

    events: tuple[RecordedEvent, ...]
    position: int


class SubscriptionStatistics(msgspec.Struct, frozen=True):
    """A snapshot of one subscription's progress.

    Attributes:
        name: the subscription's name.
        position: the highest global position handed to the subscriber (filtered-out
            positions included).
        lag: the store's last committed position known to the bus minus `position`.
        queue_depth: events buffered and not yet handed over.
        catch_ups: times the subscription switched to reading the store.
        overflows: times its buffer overflowed and was dropped.
        delivered: events handed to the subscriber.
    """

    name: str
    position: int
    lag: int
    queue_depth: int
    catch_ups: int
    overflows: int
    delivered: int


_Filter = Callable[[Sequence[RecordedEvent]], Sequence[RecordedEvent]]


def _make_filter(types: frozenset[str] | None, prefix: str | None) -> _Filter | None:
    if types is None and prefix is None:
        return None
    if prefix is None:
        assert types is not None
        return lambda events: [e for e in events if e.event_type in types]
    if types is None:
        return lambda events: [e for e in events if e.stream_id.startswith(prefix)]
    return lambda events: [
        e for e in events if e.event_type in types and e.stream_id.startswith(prefix)
    ]


class Subscription:
    """A subscriber's ordered view of the global log, from a position on.

    Iterate it (`async for recorded in subscription`) for single events, or call
    `next_batch()` for whatever is ready at once. Either way events come in strictly
    increasing position order, each once. Obtain one with `EventBus.subscribe`; only one
    task should consume a subscription.
    """

    def __init__(
        self,
        bus: _Bus,
        *,
        name: str,
        covered: int,
        event_types: frozenset[str] | None,
        stream_prefix: str | None,
        queue_size: int,
        page: int,
    ) -> None:
        self._bus = bus
        self._source = bus._source
        self.name = name
        self._types = event_types
        self._types_list = None if event_types is None else sorted(event_types)
        self._prefix = stream_prefix
        self._filter = _make_filter(event_types, stream_prefix)
        self._queue_size = queue_size
        self._page = page
        # live buffer, filled by the writer's publish
        self._pending: list[RecordedEvent] = []
        self._pending_first = 0
        self._pending_last = 0  # 0: empty (positions start at 1)
        self._overflowed = False  # buffer dropped: ignore publishes until catch-up starts
        self._stale = True  # a catch-up round is needed (it starts behind)
        self._round_head = -1  # head of the catch-up round in progress, -1 when none
        self._covered = covered  # highest position accounted for (read or taken)
        self._position = covered  # highest position handed to the consumer
        self._iter: deque[RecordedEvent] = deque()
        self._iter_end = covered
        self._wakeup = anyio.Event()
        self._closed = False
        self._catch_ups = 0
        self._overflows = 0
        self._delivered = 0

    # -- the writer side (synchronous, never blocks) ------------------------------------

    def _offer(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        if self._closed or self._overflowed:
            return
        if self._pending_last and first != self._pending_last + 1:
            # Something committed in between that the bus did not see (another process).
            self._drop(overflow=False)
            return
        matching = events if self._filter is None else self._filter(events)
        if matching:
            if len(self._pending) + len(matching) > self._queue_size:
                self._drop(overflow=True)
                return
            self._pending.extend(matching)
        if not self._pending_last:
            self._pending_first = first
        self._pending_last = last
        self._wakeup.set()

    def _drop(self, *, overflow: bool) -> None:
        self._pending = []
        self._pending_last = 0
        self._overflowed = True
        self._stale = True
        if overflow:
            self._overflows += 1
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._pending = []
        self._pending_last = 0
        self._wakeup.set()

    # -- the subscriber side ------------------------------------------------------------

    @property
    def position(self) -> int:
        """The highest global position handed to the subscriber (filtered ones included)."""
        return self._position

    @property
    def closed(self) -> bool:
        """Whether the subscription (or its bus) was closed."""
        return self._closed

    def nudge(self) -> None:
        """Make the subscription read the store up to its head before going on.

        Use it when another process may have appended: its events never reach this
        process's bus, so nothing else would prompt a read until the next local commit.
        """
        self._stale = True
        self._wakeup.set()

    async def next_batch(self) -> Batch:
        """Wait for and return the next events (and how far they account for).

        Returns a batch that moves `position` forward: its events may be empty when only
        filtered-out positions were covered.

        Raises:
            BusClosed: the subscription or its bus is closed.
            StoreError: a catch-up read failed (the subscription stays usable).

        Cancellation: safe at any await; nothing is lost or handed over twice, the next
        call resumes from `position`.
        """
        while True:
            if self._iter:
                leftover = tuple(self._iter)
                self._iter.clear()
                self._position = self._iter_end
                return Batch(leftover, self._iter_end)
            if self._closed:
                raise BusClosed(f"subscription {self.name!r} is closed")
            if self._stale or self._round_head >= 0:
                batch = await self._catch_up_step()
                if batch is not None:
                    return batch
                continue
            if self._pending_last:
                first, last = self._pending_first, self._pending_last
                events: list[RecordedEvent] = self._pending
                self._pending = []
                self._pending_last = 0
                covered = self._covered
                if last <= covered:
                    continue  # already read from the store while catching up
                if first > covered + 1:
                    self._stale = True  # a gap: positions the bus never saw
                    continue
                if events and events[0].position <= covered:
                    events = [e for e in events if e.position > covered]
                self._covered = self._position = last
                self._delivered += len(events)
                return Batch(tuple(events), last)
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    async def _catch_up_step(self) -> Batch | None:
        source = self._source
        if self._round_head < 0:
            # From here on the buffer takes publishes again; whatever it gets that this
            # round also reads is skipped by position when it is taken.
            self._stale = False
            self._overflowed = False
            try:
                head = await source.last_position()
            except BaseException:
                self._stale = True  # the round did not start: start it again next time
                raise
            self._bus._observe_head(head)
            covered = self._covered
            if head <= covered:
                return None
            if self._pending_last >= head and self._pending_first <= covered + 1:
                return None  # the live buffer already holds everything up to the head
            self._round_head = head
            self._catch_ups += 1
        head = self._round_head
        page = await source.read_all(
            from_position=self._covered + 1,
            to_position=head,
            limit=self._page,
            event_types=self._types_list,
            stream_prefix=self._prefix,
        )
        if self._closed:
            raise BusClosed(f"subscription {self.name!r} is closed")
        # The store may cap a page below what was asked: only an empty page, or one
        # that reaches the head, ends the round.
        if not page or page[-1].position >= head:
            covered = head
            self._round_head = -1
        else:
            covered = page[-1].position
        self._covered = self._position = covered
        self._delivered += len(page)
        return Batch(tuple(page), covered)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        """The next event; the iteration ends when the subscription is closed."""
        if not self._iter:
            handed = self._position
            while True:
                try:
                    batch = await self.next_batch()
                except BusClosed:
                    raise StopAsyncIteration from None
                if batch.events:
                    break
                handed = batch.position
            self._iter.extend(batch.events)
            self._iter_end = batch.position
            self._position = handed
        recorded = self._iter.popleft()
        self._position = recorded.position if self._iter else self._iter_end
        return recorded

    def statistics(self) -> SubscriptionStatistics:
        """A frozen snapshot of this subscription's progress."""
        return SubscriptionStatistics(
            name=self.name,
            position=self._position,
            lag=max(0, self._bus._head - self._position),
            queue_depth=len(self._pending) + len(self._iter),
            catch_ups=self._catch_ups,
            overflows=self._overflows,
            delivered=self._delivered,
        )
