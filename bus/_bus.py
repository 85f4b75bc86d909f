"""The in-process event bus: committed events fanned out to subscriptions in order.

The store is the source of truth and the bus is only its fast path. The bus registers
itself as a commit listener of the store; the store's writer calls it synchronously, in
position order, right after each COMMIT. Publishing never waits: each subscription
filters the batch and appends the matches to its bounded buffer, or, when the buffer
would overflow, drops the buffer and marks itself behind. A subscription that starts
behind the head or falls behind reads the store (catch-up) from the last position it
covered, then goes back to the buffer; positions it has already covered are skipped, so
there is no gap and no duplicate at the handover (bus/_subscription.py).

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
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict, Unpack

import anyio

from bus._errors import BusClosed, InvalidSubscription
from bus._follow import Follower
from bus._source import EventSource
from bus._subscription import Subscription, SubscriptionStatistics
from store import RecordedEvent, faults
from store._logging import get_logger

__all__ = ["BusOptions", "BusSettings", "EventBus", "EventSource", "open_bus"]


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


class BusSettings(TypedDict, total=False):
    """The `BusOptions` fields as keywords, each optional: the type of `open_bus`'s
    `**settings` (`open_bus(store, follow=False)`). The keys are the fields, one for
    one; the values are checked by `BusOptions`."""

    queue_size: int
    catch_up_page: int
    follow: bool
    poll_interval: float


_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(BusOptions))


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

    def _foreign(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        """Positions `first` to `last`, other processes' commits the store's writer met
        (`events`: those this process decodes): fanned out as the follower's reads are
        when they follow `published`, which saves the follower reading them; after a
        gap, the follower reads from `published` on at once."""
        follower = self._follower
        if follower is None:
            return
        published = self._published
        if last <= published:
            return
        if first > published + 1:
            follower.gap(last)
            return
        if first <= published:
            events = [e for e in events if e.position > published]
            first = published + 1
        self._feed(first, last, events)

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
async def open_bus(
    source: EventSource, *, options: BusOptions | None = None, **settings: Unpack[BusSettings]
) -> AsyncIterator[EventBus]:
    """Open an event bus over `source` (a store): it publishes every local commit and,
    with `follow` (the default), every commit of other processes too.

    Args:
        source: the store whose commits are published.
        options: the bus's options whole (default: `BusOptions()`).
        **settings: fields of `BusOptions` (`queue_size`, `catch_up_page`, `follow`,
            `poll_interval`), each over the one in `options`.

    Yields:
        The bus, registered as a commit listener, its follower running. On exit the
        follower stops, the bus is unregistered and every subscription is closed (their
        iterations end).

    Raises:
        InvalidSubscription: an unknown option (naming it and the ones there are), or a
            value `BusOptions` refuses.
    """
    if options is not None and not isinstance(options, BusOptions):
        raise InvalidSubscription(
            f"open_bus: options must be a BusOptions or None, not {options!r}"
        )
    unknown = sorted(settings.keys() - _FIELDS)
    if unknown:
        raise InvalidSubscription(
            f"open_bus: unknown option {unknown[0]!r}; the options are {', '.join(sorted(_FIELDS))}"
        )
    opts = options or BusOptions()
    if settings:
        opts = dataclasses.replace(opts, **settings)
    bus = EventBus(source, opts, await source.last_position())
    remove = source.add_commit_listener(bus._publish)
    # A SQLite store's writer meets other processes' commits when it takes the write
    # lock: handed on from there, they need no read of the follower's.
    add_foreign = getattr(source, "add_foreign_listener", None)
    if add_foreign is not None and bus._follower is not None:
        remove_foreign = add_foreign(bus._foreign)
    else:
        remove_foreign = None
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
        if remove_foreign is not None:
            remove_foreign()
        bus._close()
    if body_error is not None:
        raise body_error
