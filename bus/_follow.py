"""Following the commits of other processes: the bus's follower.

Two tasks per bus. The watch task waits on the store's hint that its head moved
(`EventStore.wait_for_commit`: SQLite's watcher thread, PostgreSQL's `LISTEN`), with
the bus's `poll_interval` as the longest wait. The feed task reads the positions the
bus has not fanned out (from `published + 1` up to the head it was told of) and hands
them to the bus in order. A local commit that does not follow `published` (others
committed in between) is held back by the bus and makes the feed task read the gap at
once; that read covers the local batch too, since it is committed.

A head reported by the store may be this process's own commit whose events the writer
is about to publish: the feed task first waits a moment (`GRACE`) for local publishes to
cover it, and reads the store only for what they did not. A store that knows other
processes committed past what the bus published (`others_head`: PostgreSQL, by the
session each notification came from) is read at once instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

import anyio
import anyio.abc

from bus._source import EventSource
from store import RecordedEvent, StoreClosed, StoreError
from store._logging import get_logger

__all__ = ["GRACE", "Follower"]

GRACE: Final = 0.005
"""Seconds the feed task waits for local publishes to cover a head the store reported."""
_RETRY: Final = 0.05  # seconds before reading again after a failed read


class _Followed(Protocol):
    """What the follower needs of its bus (`EventBus`)."""

    @property
    def published(self) -> int:
        """Every position up to this one has been fanned out."""
        ...

    def _feed(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        """Fan out positions `first` to `last` (`events`: those this process decodes)."""
        ...


class Follower:
    """Brings a bus's `published` up to the store's head; owned by its `EventBus`."""

    def __init__(
        self, bus: _Followed, source: EventSource, poll_interval: float, page: int
    ) -> None:
        self._bus = bus
        self._source = source
        self._poll = poll_interval
        self._page = page
        self._target = 0  # the highest committed position known, maybe not fanned out
        self._gap = False  # a local commit is held back behind unread positions
        self._wake = anyio.Event()
        self._moved = anyio.Event()  # replaced each time `published` moves
        self._log = get_logger("bus.follow")

    # -- what the bus calls (on the event loop, never blocking) -------------------------

    def gap(self, last: int) -> None:
        """A local commit up to `last` does not follow `published`: read the gap now."""
        self._target = max(self._target, last)
        self._gap = True
        self._wake.set()

    def moved(self) -> None:
        """`published` moved: wake whoever waits for it."""
        moved, self._moved = self._moved, anyio.Event()
        moved.set()

    # -- the tasks ----------------------------------------------------------------------

    def heard(self, position: int) -> None:
        """Another process committed up to `position` (the store's callback, where it
        has one: PostgreSQL's notifications): read it now, a turn of the loop before
        the watch task would wake."""
        if position > self._bus.published:
            self._target = max(self._target, position)
            self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the watch and feed tasks until cancelled (or the store closes)."""
        add = getattr(self._source, "add_others_listener", None)
        remove = add(self.heard) if add is not None else None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, tg.cancel_scope)
                task_status.started()
                await self._feed()
                tg.cancel_scope.cancel()
        finally:
            if remove is not None:
                remove()

    async def _watch(self, scope: anyio.CancelScope) -> None:
        bus = self._bus
        while True:
            try:
                head = await self._source.wait_for_commit(bus.published, timeout=self._poll)
            except StoreClosed:
                scope.cancel()
                return
            except StoreError as exc:
                self._log.warning("bus.follow_failed", error=f"{type(exc).__name__}: {exc}")
                await anyio.sleep(self._poll)
                continue
            if head > bus.published:
                self._target = max(self._target, head)
                self._wake.set()
                # Until the feed task has fanned it out, the store keeps answering at
                # once: wait for it (at most one poll interval).
                with anyio.move_on_after(self._poll):
                    while bus.published < head:
                        await self._moved.wait()

    async def _feed(self) -> None:
        bus = self._bus
        while True:
            if self._target <= bus.published:
                self._gap = False
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if not self._gap and getattr(self._source, "others_head", 0) <= bus.published:
                with anyio.move_on_after(GRACE):
                    while bus.published < self._target:
                        await self._moved.wait()
                if bus.published >= self._target:
                    continue
            self._gap = False
            target = self._target
            source = self._source
            registry = getattr(source, "registry", None)
            # A store's own lane for the follower when it has one (`read_log`): the
            # follower never waits behind the actors' reads.
            read = getattr(source, "read_log", source.read_all)
            try:
                page = await read(
                    from_position=bus.published + 1,
                    to_position=target,
                    limit=self._page,
                    # Only what this process can decode: another may write types it
                    # never registered (subscriptions read with their own filters).
                    event_types=None if registry is None else registry.tags(),
                )
            except StoreClosed:
                return
            except StoreError as exc:
                self._log.warning("bus.follow_failed", error=f"{type(exc).__name__}: {exc}")
                self._gap = True  # no grace the next time round: read again
                await anyio.sleep(_RETRY)
                continue
            self._hand_over(page, target)

    def _hand_over(self, page: Sequence[RecordedEvent], target: int) -> None:
        """Fan out `page`, read from `published + 1` towards `target`. Positions are
        gapless in the store, but the read skips types this process cannot decode: a
        page short of the target covers up to its last event, an empty one all of it."""
        bus = self._bus
        first = bus.published + 1
        if page and page[0].position < first:  # local publishes came meanwhile
            page = [e for e in page if e.position >= first]
            if not page:
                return
        covered = page[-1].position if page else target
        if covered >= first:
            bus._feed(first, covered, page)
