"""The in-process event bus: committed events fanned out to subscriptions in order.

The store is the source of truth and the bus is only its fast path. The bus registers
itself as a commit listener of the store; the store's writer calls it synchronously, in
position order, right after each COMMIT. Publishing never waits: each subscription
filters the batch and appends the matches to its bounded buffer, or, when the buffer
would overflow, drops the buffer and marks itself behind. A subscription that starts
behind the head or falls behind reads the store (catch-up) from the last position it
covered, then goes back to the buffer; positions it has already covered are skipped, so
there is no gap and no duplicate at the handover.

Commits of other processes (other connections to the same file or database) do not go
through this process's writer. The bus follows them (`follow`, on by default,
bus/_follow.py): it keeps `published`, the position up to which it has fanned out every
event, and when the store says its head is past it (`EventStore.wait_for_commit`) or a
local commit does not follow it, it reads the missing positions from the store and fans
them out in order before the local batch. Subscriptions therefore see one gapless
sequence whoever wrote it; `Subscription.nudge()` still makes one read the store at once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from bus._errors import BusClosed, InvalidSubscription
from bus._follow import Follower
from bus._source import EventSource
from store import RecordedEvent, faults, get_logger

__all__ = [
    "Batch",
    "BusOptions",
    "EventBus",
    "EventSource",
    "Subscription",
    "SubscriptionStatistics",
    "open_bus",
]


@dataclass(frozen=True, slots=True)
class BusOptions:
    """Limits of an event bus; every one is finite.

    Attributes:
        queue_size: the default bound, in events, of a subscription's live buffer.
        catch_up_page: events read from the store per page while catching up.
        follow: follow the commits of other processes (see the module's docstring);
            off, they reach a subscription only when it catches up (a gap before a
            local commit, `nudge()`).
        poll_interval: with `follow`, the longest wait for the store's hint before the
            bus reads the head anyway (the fallback should a hint be lost), in seconds.
    """

    queue_size: int = 10_000
    catch_up_page: int = 5_000
    follow: bool = True
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("queue_size", "catch_up_page"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidSubscription(f"{name} must be a positive int, not {value!r}")
        if type(self.follow) is not bool:
            raise InvalidSubscription(f"follow must be a bool, not {self.follow!r}")
        interval = self.poll_interval
        if type(interval) not in (int, float) or not 0.01 <= interval <= 3600:
            raise InvalidSubscription(
                f"poll_interval must be a number of seconds from 0.01 to 3600, not {interval!r}"
            )


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
        bus: EventBus,
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


class EventBus:
    """Fans committed events out to subscriptions. Obtain one with `open_bus`."""

    def __init__(self, source: EventSource, options: BusOptions, head: int) -> None:
        self._source = source
        self._options = options
        self._subscriptions: list[Subscription] = []
        self._head = head
        self._closed = False
        self._names = itertools.count(1)
        # a `reorder` fault's batch: its first and last positions, its events
        self._held: tuple[int, int, Sequence[RecordedEvent]] | None = None
        self._published = head
        self._follower: Follower | None = None
        if options.follow:
            self._follower = Follower(self, source, options.poll_interval, options.catch_up_page)
        self._external: list[Callable[[Sequence[RecordedEvent]], None]] = []
        self._log = get_logger("bus")

    @property
    def head(self) -> int:
        """The highest committed position the bus has seen (published or read)."""
        return self._head

    @property
    def published(self) -> int:
        """With `follow`: every position up to this one has been fanned out (whoever
        committed it). Without: the last position of the last local commit."""
        return self._published

    def add_external_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]:
        """Call `listener` with the events the follower read from the store (commits of
        other processes, and now and then a local commit read before its publish came)
        after they were fanned out; returns its remover. It must not block; an
        exception it raises is logged and otherwise ignored."""
        self._external.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._external.remove(listener)

        return remove

    def _publish(self, events: Sequence[RecordedEvent]) -> None:
        """The store's commit listener: a local commit, fanned out in position order."""
        if not events:
            return
        follower = self._follower
        if follower is not None:
            published = self._published
            last = events[-1].position
            if last <= published:
                return  # the follower read it from the store already
            first = events[0].position
            if first > published + 1:
                follower.gap(last)  # others committed in between: read them first
                return
            if first <= published:
                events = [e for e in events if e.position > published]
                first = published + 1
            self._published = last
            follower.moved()
            self._fan_out(first, last, events)
            return
        self._published = max(self._published, events[-1].position)
        self._fan_out(events[0].position, events[-1].position, events)

    def _feed(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        """The follower's positions `first` to `last` (just past `published`), read from
        the store: `events` are those this process can decode."""
        self._published = last
        assert self._follower is not None
        self._follower.moved()
        self._fan_out(first, last, events)
        if not events:
            return
        for listener in tuple(self._external):
            try:
                listener(events)
            except Exception:  # noqa: BLE001 - isolated and reported; the bus goes on
                self._log.error("bus.listener_failed", listener=repr(listener), exc_info=True)

    def _fan_out(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        if faults.enabled:
            self._publish_with_faults(first, last, events)
            return
        self._head = max(self._head, last)
        for subscription in self._subscriptions:
            subscription._offer(first, last, events)

    def _publish_with_faults(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        # The `bus_deliver` fault point: `dup` offers a batch twice, `reorder` holds it
        # back and offers it after the next one. Both look like gaps to a subscription,
        # which must then catch up from the store: nothing skipped, nothing doubled.
        # A held batch goes out only with the next commit: when nothing more is
        # committed, `Subscription.nudge()` (or one more append) brings subscribers to
        # the head.
        action = faults.hit("bus_deliver")
        held, self._held = self._held, None
        batch = (first, last, events)
        if action == "reorder" and held is None:
            self._held = batch
            self._head = max(self._head, last)
            return
        batches = [batch, held] if held is not None else [batch]
        if action == "dup":
            batches.append(batch)
        for low, high, some in batches:
            self._head = max(self._head, high)
            for subscription in self._subscriptions:
                subscription._offer(low, high, some)

    def _observe_head(self, head: int) -> None:
        self._head = max(self._head, head)

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        *,
        from_position: int = 1,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        queue_size: int | None = None,
        name: str | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to committed events from `from_position` (inclusive) on.

        Args:
            from_position: the first global position wanted (1 and 0: from the start).
            event_types: only events with these tags (filtered before queueing).
            stream_prefix: only events of streams whose id starts with this.
            queue_size: bound, in events, of the live buffer (default: the bus's
                `queue_size`). When it would overflow the buffer is dropped and the
                subscription catches up from the store: the writer never waits.
            name: shown in statistics and errors (default `subscription-<n>`).

        Yields:
            The subscription, registered before the context body runs, so nothing
            committed from then on is missed. It is closed on exit.

        Raises:
            InvalidSubscription: a bad argument.
            BusClosed: the bus is closed.
        """
        if self._closed:
            raise BusClosed("the event bus is closed; cannot subscribe")
        label = name if name is not None else f"subscription-{next(self._names)}"
        if type(label) is not str or not label:
            raise InvalidSubscription(f"subscription name must be a non-empty str, not {name!r}")
        if type(from_position) is not int or from_position < 0:
            raise InvalidSubscription(
                f"subscription {label!r}: from_position must be an int >= 0, not {from_position!r}"
            )
        size = self._options.queue_size if queue_size is None else queue_size
        if type(size) is not int or size < 1:
            raise InvalidSubscription(
                f"subscription {label!r}: queue_size must be a positive int, not {size!r}"
            )
        types = _check_types(label, event_types)
        if stream_prefix is not None and (type(stream_prefix) is not str or not stream_prefix):
            raise InvalidSubscription(
                f"subscription {label!r}: stream_prefix must be a non-empty str or None,"
                f" not {stream_prefix!r}"
            )
        subscription = Subscription(
            self,
            name=label,
            covered=max(from_position - 1, 0),
            event_types=types,
            stream_prefix=stream_prefix,
            queue_size=size,
            page=self._options.catch_up_page,
        )
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            subscription._close()
            with contextlib.suppress(ValueError):
                self._subscriptions.remove(subscription)

    def statistics(self) -> tuple[SubscriptionStatistics, ...]:
        """A snapshot of every open subscription, in subscription order."""
        return tuple(s.statistics() for s in self._subscriptions)

    def _close(self) -> None:
        self._closed = True
        for subscription in self._subscriptions:
            subscription._close()
        self._subscriptions.clear()


def _check_types(label: str, event_types: Iterable[str] | None) -> frozenset[str] | None:
    if event_types is None:
        return None
    if isinstance(event_types, str | bytes) or not isinstance(event_types, Iterable):
        raise InvalidSubscription(
            f"subscription {label!r}: event_types must be a collection of str tags,"
            f" not {event_types!r}"
        )
    types = frozenset(event_types)
    bad = [t for t in types if type(t) is not str or not t]
    if bad:
        raise InvalidSubscription(
            f"subscription {label!r}: event_types must hold non-empty str tags; got {bad!r}"
        )
    return types


@contextlib.asynccontextmanager
async def open_bus(source: EventSource, **options: Any) -> AsyncIterator[EventBus]:
    """Open an event bus over `source` (a store): it publishes every local commit and,
    with `follow` (the default), every commit of other processes too.

    Args:
        source: the store whose commits are published.
        **options: fields of `BusOptions` (`queue_size`, `catch_up_page`, `follow`,
            `poll_interval`).

    Yields:
        The bus, registered as a commit listener, its follower running. On exit the
        follower stops, the bus is unregistered and every subscription is closed (their
        iterations end).

    Raises:
        InvalidSubscription: a bad option.
    """
    opts = BusOptions(**options)
    bus = EventBus(source, opts, await source.last_position())
    remove = source.add_commit_listener(bus._publish)
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            if bus._follower is not None:
                await tg.start(bus._follower.run)
            try:
                yield bus
            except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
                # The caller's own error comes out as itself, not in an ExceptionGroup.
                body_error = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        remove()
        bus._close()
    if body_error is not None:
        raise body_error
