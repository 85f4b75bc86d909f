"""Projections: in-memory views folded from the event log by a subscriber task.

A `Projection` says which events it wants, what an empty view is, and how one recorded
event changes a view. `start_projection` runs it as a subscriber actor: a task in the
caller's task group that catches up from the store, then follows the bus, and a
`ProjectionHandle` to query the view, wait for a position (read your own writes),
rebuild the view by replay, and deal with poison events.

The view model is *in-place*: `apply` mutates the mutable view it is given and returns
it. The runtime keeps whatever `apply` returns, so a projection over a small immutable
view may return a new object instead, but in-place is the intended style: rebuilding a
large view then allocates nothing per event. Two consequences:
- `apply` must do every check that can raise before it mutates anything: a poison event
  is retried on the same view, and a half-applied event would stay half-applied.
- Readers must not keep a view across awaits expecting it to stay still; read it, or
  copy what you need, between awaits (the runtime never applies in the middle of
  synchronous code, so a query that does not await sees one consistent position).
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint

from bus import BusClosed, EventBus, EventSource, Subscription
from readmodels._errors import (
    ConsistencyTimeout,
    InvalidProjection,
    ProjectionStopped,
    TooManyParked,
)
from readmodels._telemetry import applied, dead_letter, watch
from store import RecordedEvent, faults, telemetry
from store._logging import get_logger

__all__ = [
    "DeadLetter",
    "Projection",
    "ProjectionHandle",
    "ProjectionOptions",
    "ProjectionStatistics",
    "start_projection",
]

View = TypeVar("View")


class Projection(ABC, Generic[View]):
    """A read model: a view folded from recorded events.

    Subclass it; write `initial_view` and `apply`, and query methods over the view
    (on the projection, taking the view, or on the view type itself).

    Attributes:
        name: shown in statistics and errors (default: the class name).
        event_types: the events this projection wants, as event types or their tags
            (None: all). The bus filters before queueing, so events it does not want
            cost it nothing.
        stream_prefix: only events of streams whose id starts with this (None: all).

    `apply` mutates the view in place and returns it (see the module docs): check
    first, then mutate, so a retried poison event is never half-applied.
    """

    name: str | None = None
    event_types: Collection[str | type[msgspec.Struct]] | None = None
    stream_prefix: str | None = None

    @abstractmethod
    def initial_view(self) -> View:
        """A fresh, empty view (a new object on every call)."""

    @abstractmethod
    def apply(self, view: View, recorded: RecordedEvent) -> View:
        """Apply one recorded event to `view` (in place) and return the view to keep.

        Must not await, do I/O or read the clock: everything it needs is in `recorded`.
        Raising marks the event as poison (retried, then parked).
        """

    async def start(
        self,
        task_group: TaskGroup,
        store: EventSource,
        bus: EventBus,
        *,
        from_position: int = 0,
        options: ProjectionOptions | None = None,
    ) -> ProjectionHandle[View]:
        """Run this projection in `task_group`; the same as `start_projection`."""
        return await start_projection(
            task_group, store, bus, self, from_position=from_position, options=options
        )


@dataclass(frozen=True, slots=True)
class ProjectionOptions:
    """Limits and retry policy of a running projection; every limit is finite.

    Attributes:
        max_attempts: times a failing `apply` is tried before its event is parked.
        retry_delay: seconds before the first retry, doubled for each next one (0 in
            tests: no waiting).
        queue_size: bound, in events, of the projection's live buffer on the bus.
        page_size: events read per page from the store when rebuilding.
        max_parked: poison events kept; one more stops the projection (`TooManyParked`).
    """

    max_attempts: int = 4
    retry_delay: float = 0.01
    queue_size: int = 10_000
    page_size: int = 10_000
    max_parked: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_attempts", "queue_size", "page_size", "max_parked"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidProjection(f"{name} must be a positive int, not {value!r}")
        delay = self.retry_delay
        if not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise InvalidProjection(f"retry_delay must be 0..60 seconds, not {delay!r}")


class DeadLetter(msgspec.Struct, frozen=True):
    """A poison event the projection could not apply, kept to inspect and replay.

    Attributes:
        position, stream_id, version, event_type: where the event is in the log.
        error: `repr` of the last exception `apply` raised.
        attempts: times `apply` was tried.
        recorded: the event itself (for `replay_parked`).
    """

    position: int
    stream_id: str
    version: int
    event_type: str
    error: str
    attempts: int
    recorded: RecordedEvent


class ProjectionStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a projection's progress.

    Attributes:
        name: the projection's name.
        position: the global position its view reflects (filtered-out ones included).
        lag: the last committed position known to the bus minus `position`.
        applied: events applied to the current view (since its last rebuild).
        parked: dead letters held now.
        rebuilds: completed rebuilds.
        tainted_streams: streams with a parked event. Their later events are applied
            anyway (flagged, not held), so their part of the view may be wrong until
            the dead letters are replayed or the projection is rebuilt.
        running: whether its task is still following the log.
    """

    name: str
    position: int
    lag: int
    applied: int
    parked: int
    rebuilds: int
    tainted_streams: tuple[str, ...]
    running: bool


class ProjectionHandle(Generic[View]):
    """A running projection: its view, its position, and what you can ask of it.

    Obtain one with `start_projection` (or `Projection.start`).
    """

    def __init__(
        self,
        projection: Projection[View],
        store: EventSource,
        bus: EventBus,
        options: ProjectionOptions,
        from_position: int,
    ) -> None:
        self.projection = projection
        self.name = projection.name or type(projection).__name__
        self._store = store
        self._bus = bus
        self._options = options
        tags = event_tags(projection)
        self._types = None if tags is None else sorted(tags)
        self._log = get_logger("readmodels", projection=self.name)
        self._view = projection.initial_view()
        self._from = from_position
        self._position = max(from_position - 1, 0)
        self._applied = 0
        self._parked: list[DeadLetter] = []
        self._rebuilds = 0
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._seq = itertools.count()
        # fast_acquire: taking the free lock must not yield, or every batch would wait
        # behind whatever else is ready to run (the appenders it was published for).
        self._apply_lock = anyio.Lock(fast_acquire=True)
        self._rebuild_lock = anyio.Lock()
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._stopped = False
        self._failure: BaseException | None = None
        self._subscription: Subscription | None = None

    # -- queries --------------------------------------------------------------------------

    @property
    def view(self) -> View:
        """The current view (swapped whole by `rebuild`; do not keep it across awaits)."""
        return self._view

    @property
    def position(self) -> int:
        """The global position the view reflects."""
        return self._position

    @property
    def running(self) -> bool:
        """Whether the projection is still following the log."""
        return not self._stopped

    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The parked poison events, in position order."""
        return tuple(self._parked)

    def statistics(self) -> ProjectionStatistics:
        """A frozen snapshot of the projection's progress."""
        return ProjectionStatistics(
            name=self.name,
            position=self._position,
            lag=max(0, self._bus.head - self._position),
            applied=self._applied,
            parked=len(self._parked),
            rebuilds=self._rebuilds,
            tainted_streams=tuple(sorted({d.stream_id for d in self._parked})),
            running=not self._stopped,
        )

    async def wait_for(self, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        # (a timeout of its own: the error names the projection and both positions)
        """Wait until the view reflects everything up to `position` (read your writes).

        Returns at once if it already does, even once the projection stopped. Pass the
        `position` of an ask's result (or the `last_position` of an append's) to see
        that command in the view. A position beyond anything this process's bus has
        seen makes the projection read the store at once (another process wrote it).

        Raises:
            InvalidProjection: `position` is not an int >= 0, or `timeout` not a number
                of seconds >= 0 (checked first).
            ProjectionStopped: the projection stopped, or failed (the failure is the
                cause), before reaching `position`: at once if it had stopped already,
                else as soon as it stops.
            ConsistencyTimeout: not reached within `timeout` seconds (a `TimeoutError`;
                names the projection, the target and the position reached). The
                projection goes on.

        Cancellation: only the wait is abandoned; the projection goes on.
        """
        if type(position) is not int or position < 0:
            raise InvalidProjection(
                f"projection {self.name!r}: wait_for's position must be an int >= 0,"
                f" not {position!r}"
            )
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise InvalidProjection(
                f"projection {self.name!r}: wait_for's timeout must be a number of seconds"
                f" >= 0, not {timeout!r}"
            )
        if self._position >= position:
            return
        self._raise_if_stopped(position)
        if position > self._bus.head and self._subscription is not None:
            # Not published here: maybe another process wrote it; read the store.
            self._subscription.nudge()
        entry = (position, next(self._seq), anyio.Event())
        heapq.heappush(self._waiters, entry)
        try:
            with anyio.move_on_after(timeout):
                await entry[2].wait()
        finally:
            if not entry[2].is_set():
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
        if self._position >= position:
            return
        self._raise_if_stopped(position)
        raise ConsistencyTimeout("projection", self.name, position, self._position, timeout)

    def _raise_if_stopped(self, target: int) -> None:
        if not self._stopped:
            return
        failure = self._failure
        reason = "stopped" if failure is None else f"failed: {failure!r}"
        raise ProjectionStopped(self.name, target, self._position, reason) from failure

    # -- control --------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop following the log and wait until the task has ended. Idempotent.

        The view stays readable at the position it reached. Waits in `wait_for` end
        with `ProjectionStopped`. Cancellation: the projection is stopped anyway; only
        the wait for its task to end is abandoned.
        """
        self._scope.cancel()
        await self._done.wait()

    async def rebuild(self) -> None:
        """Replay the log into a fresh view, then swap it in atomically.

        The replay starts where the projection started: position 0, unless it was
        started with a later `from_position` (so that the rebuilt view equals the live
        one).

        Queries keep reading the old view, and the live projection keeps applying to
        it, until the swap. The fresh view catches up with the live position while
        holding back the live task for the last stretch only, so after the swap the
        live task continues from exactly where the rebuild ended (no gap, no
        duplicate). Dead letters are replaced by those of the replay.

        Raises:
            ProjectionStopped: the projection is not running.
            StoreError: a read failed; the old view stays in place.

        Cancellation: the partial fresh view is dropped; the old one stays.
        """
        self._raise_if_stopped(0)
        async with self._rebuild_lock:
            page = self._options.page_size
            view = self.projection.initial_view()
            parked: list[DeadLetter] = []
            start = max(self._from - 1, 0)
            view, position, applied = await self._replay(view, start, self._position, page, parked)
            async with self._apply_lock:
                self._raise_if_stopped(0)
                target = self._position
                view, position, more = await self._replay(view, position, target, page, parked)
                self._view = view
                self._applied = applied + more
                self._parked = parked
                self._rebuilds += 1
        self._log.info("projection.rebuilt", projection=self.name, position=position)

    async def _replay(
        self, view: View, position: int, target: int, page: int, parked: list[DeadLetter]
    ) -> tuple[View, int, int]:
        read = self._store.read_all
        applied = 0
        while position < target:
            events = await read(
                from_position=position + 1,
                to_position=target,
                limit=page,
                event_types=self._types,
                stream_prefix=self.projection.stream_prefix,
            )
            view, count = await self._apply_events(view, events, parked)
            applied += count
            # The store may cap a page: only an empty page or one reaching the target
            # ends the replay.
            position = (
                target if not events or events[-1].position >= target else (events[-1].position)
            )
        return view, position, applied

    async def replay_parked(self) -> int:
        """Apply every parked event once more, in position order (after a fix).

        Each is tried once; those that fail again stay parked with the new error.

        Returns:
            How many were applied (and left the dead letters).

        Cancellation: it waits only for the live task's current batch; once replaying
        it does not await, so it either has not started or completes.
        """
        async with self._apply_lock:
            letters = sorted(self._parked, key=lambda d: d.position)
            apply = self.projection.apply
            view = self._view
            kept: list[DeadLetter] = []
            for letter in letters:
                try:
                    view = apply(view, letter.recorded)
                except Exception as exc:  # noqa: BLE001 - a poison event stays parked
                    kept.append(
                        msgspec.structs.replace(
                            letter, error=repr(exc), attempts=letter.attempts + 1
                        )
                    )
            self._view = view
            self._parked = kept
            replayed = len(letters) - len(kept)
            self._applied += replayed
        self._log.info(
            "projection.replayed", projection=self.name, replayed=replayed, kept=len(kept)
        )
        return replayed

    # -- the task ------------------------------------------------------------------------

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        started = False
        try:
            with self._scope:
                async with self._bus.subscribe(
                    from_position=self._from,
                    event_types=self._types,
                    stream_prefix=self.projection.stream_prefix,
                    queue_size=self._options.queue_size,
                    name=f"projection:{self.name}",
                ) as subscription:
                    self._subscription = subscription
                    task_status.started()
                    started = True
                    await self._follow(subscription)
        except BusClosed:
            if not started:
                raise
        except Exception as exc:  # isolated: reported on the handle and logged
            if not started:
                raise
            self._failure = exc
            self._log.error(
                "projection.failed", projection=self.name, position=self._position, exc_info=True
            )
        finally:
            self._stopped = True
            self._subscription = None
            for _target, _seq, event in self._waiters:
                event.set()
            self._waiters.clear()
            self._done.set()

    async def _follow(self, subscription: Subscription) -> None:
        lock = self._apply_lock
        while True:
            batch = await subscription.next_batch()
            async with lock:
                if batch.events:
                    self._view, count = await self._apply_events(
                        self._view, batch.events, self._parked
                    )
                    self._applied += count
                    if telemetry.meter is not None:
                        applied(self.name, batch.events[-1].recorded_at)
                self._advance(batch.position)
            await checkpoint()

    def _advance(self, position: int) -> None:
        self._position = position
        waiters = self._waiters
        while waiters and waiters[0][0] <= position:
            heapq.heappop(waiters)[2].set()

    async def _apply_events(
        self, view: View, events: Sequence[RecordedEvent], parked: list[DeadLetter]
    ) -> tuple[View, int]:
        apply = self.projection.apply
        failed = 0
        for recorded in events:
            try:
                if faults.enabled:
                    await faults.hit_async("projection_apply")
                view = apply(view, recorded)
            except Exception as exc:  # noqa: BLE001 - poison: retried, then parked
                view, ok = await self._retry(view, recorded, exc, parked)
                if not ok:
                    failed += 1
        return view, len(events) - failed

    async def _retry(
        self, view: View, recorded: RecordedEvent, error: Exception, parked: list[DeadLetter]
    ) -> tuple[View, bool]:
        options = self._options
        attempts = 1
        while attempts < options.max_attempts:
            delay = options.retry_delay * 2 ** (attempts - 1)
            if delay > 0:
                await anyio.sleep(delay)
            attempts += 1
            try:
                return self.projection.apply(view, recorded), True
            except Exception as exc:  # noqa: BLE001 - poison: retried, then parked
                error = exc
        if len(parked) >= options.max_parked:
            raise TooManyParked(self.name, options.max_parked) from error
        if telemetry.meter is not None:
            dead_letter(self.name)
        parked.append(
            DeadLetter(
                position=recorded.position,
                stream_id=recorded.stream_id,
                version=recorded.version,
                event_type=recorded.event_type,
                error=repr(error),
                attempts=attempts,
                recorded=recorded,
            )
        )
        self._log.warning(
            "projection.event_parked",
            projection=self.name,
            position=recorded.position,
            stream_id=recorded.stream_id,
            version=recorded.version,
            event_type=recorded.event_type,
            attempts=attempts,
            error=repr(error),
        )
        return view, False


async def start_projection(
    task_group: TaskGroup,
    store: EventSource,
    bus: EventBus,
    projection: Projection[View],
    *,
    from_position: int = 0,
    options: ProjectionOptions | None = None,
) -> ProjectionHandle[View]:
    """Run `projection` as a subscriber task in `task_group` and return its handle.

    The task catches up from the store first (from `from_position`), then follows the
    bus. It is subscribed before this returns, so nothing committed afterwards is
    missed; the view is not yet caught up (use `handle.wait_for(position)`).

    Args:
        task_group: owns the projection's task; cancelling it stops the projection.
        store: the event store the bus publishes (read for catch-up and rebuild).
        bus: the event bus over `store`.
        projection: what to fold.
        from_position: the first position to apply (inclusive; 0 and 1: from the start).
        options: retries, limits and page sizes (defaults: `ProjectionOptions()`).

    Raises:
        InvalidProjection: a bad argument.
        BusClosed: the bus is closed.

    Cancellation: before it returns, nothing is left running.
    """
    if type(from_position) is not int or from_position < 0:
        raise InvalidProjection(f"from_position must be an int >= 0, not {from_position!r}")
    if not isinstance(projection, Projection):
        raise InvalidProjection(f"expected a Projection, not {type(projection).__name__}")
    event_tags(projection)  # raises InvalidProjection for a bad event_types
    handle = ProjectionHandle(projection, store, bus, options or ProjectionOptions(), from_position)
    watch(handle)  # for the position and lag gauges, when metrics are on
    await task_group.start(handle._run)
    return handle


def event_tags(projection: Projection[Any]) -> frozenset[str] | None:
    """The tags of the events `projection` wants (None: all), from types or tags.

    Raises:
        InvalidProjection: an entry is neither a non-empty tag nor a tagged struct type.
    """
    wanted = projection.event_types
    if wanted is None:
        return None
    tags: set[str] = set()
    for entry in () if isinstance(wanted, str) else wanted:
        if type(entry) is str and entry:
            tags.add(entry)
            continue
        tag = getattr(getattr(entry, "__struct_config__", None), "tag", None)
        if not (isinstance(entry, type) and isinstance(tag, str) and tag):
            break
        tags.add(tag)
    else:
        if not isinstance(wanted, str):
            return frozenset(tags)
    raise InvalidProjection(
        f"projection {projection.name or type(projection).__name__!r}: event_types must"
        f" be a collection of event types or non-empty tags, or None, not {wanted!r}"
    )
