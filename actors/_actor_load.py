"""Building an actor's state from its stream: the load (snapshot, then pages of
events), the catch-up after a conflict or an unknown outcome, and the events of its
stream another process wrote, handed over by the bus's follower."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors._actor_state import _MAX_FOREIGN, ActorState, _Parked
from actors._errors import RecoveryError, ShuttingDown
from store import EventDecodeError, EventStore, RecordedEvent, StoreClosed, StoreError

__all__ = ["GroupLoader"]

_GROUP = 256  # streams per group read at most (within the store's MAX_GROUP_READ)
_LEAD = object()  # a waiting load's turn to run the next group read
_ALONE = object()  # the group read failed: read the stream alone

_GroupRead = Callable[..., Awaitable[list[list[RecordedEvent] | EventDecodeError]]]


class GroupLoader:
    """Group loading: the loads of one aggregate type waiting at the same moment read
    their streams' first pages in one store query (`read_streams`), like group commit
    for reads: one thread hop or round trip for many actors instead of one each.

    At most one group read is in flight; the loads that come meanwhile wait for it and
    go together in the next one (up to 256 streams), run by the first of them. A load
    whose stream cannot be decoded gets its own error; if the group read fails as a
    whole (or its leader is cancelled), each of its loads reads its stream alone, so a
    failure stays with the stream that causes it. The waiting loads are at most one per
    actor (the live-actor cap bounds them). A store without `read_streams` (a wrapper,
    say) is read stream by stream.
    """

    __slots__ = ("_read", "_reading", "_store", "_waiting", "limit")

    def __init__(self, store: EventStore, limit: int) -> None:
        self._store = store
        # Only a store whose class has it: a wrapper forwarding unknown attributes to
        # an inner store would otherwise bypass its own `read_stream`.
        read: _GroupRead | None = None
        if getattr(type(store), "read_streams", None) is not None:
            read = store.read_streams  # type: ignore[attr-defined]
        self._read = read
        self.limit = limit
        self._waiting: deque[tuple[str, int, asyncio.Future[Any]]] = deque()
        self._reading = False

    async def first_page(self, stream_id: str, start: int) -> list[RecordedEvent]:
        """The events of `stream_id` from version `start`, at most `limit` of them."""
        if self._read is None:
            return await self._alone(stream_id, start)
        if self._reading:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((stream_id, start, future))
            try:
                answer = await future
            except BaseException:
                if future.done() and not future.cancelled() and future.result() is _LEAD:
                    self._pass_lead()  # cancelled as its turn came: the next one leads
                raise
            if answer is not _LEAD:
                return await self._answer(stream_id, start, answer)
        return await self._lead(stream_id, start)

    async def _lead(self, stream_id: str, start: int) -> list[RecordedEvent]:
        """Read this load's stream and those of the loads waiting now, in one query."""
        self._reading = True
        group: list[tuple[str, int, asyncio.Future[Any] | None]] = [(stream_id, start, None)]
        waiting = self._waiting
        while waiting and len(group) < _GROUP:
            entry = waiting.popleft()
            if not entry[2].done():  # else its load was cancelled
                group.append(entry)
        try:
            read = self._read
            assert read is not None
            answers: Sequence[Any] = await read([(s, v) for s, v, _ in group], limit=self.limit)
        except Exception:  # noqa: BLE001 - each load reads alone and reports its own error
            answers = [_ALONE] * len(group)
        except BaseException:
            for _, _, future in group[1:]:
                if future is not None and not future.done():
                    future.set_result(_ALONE)
            raise
        finally:
            self._pass_lead()
        for (_, _, future), answer in zip(group[1:], answers[1:], strict=True):
            if future is not None and not future.done():
                future.set_result(answer)
        return await self._answer(stream_id, start, answers[0])

    def _pass_lead(self) -> None:
        """Hand the next group read to the first load still waiting, if any."""
        waiting = self._waiting
        while waiting:
            _, _, future = waiting.popleft()
            if not future.done():
                future.set_result(_LEAD)  # still reading: the lead passes to it
                return
        self._reading = False

    async def _answer(self, stream_id: str, start: int, answer: Any) -> list[RecordedEvent]:
        if answer is _ALONE:
            return await self._alone(stream_id, start)
        if isinstance(answer, EventDecodeError):
            raise answer
        page: list[RecordedEvent] = answer
        return page

    async def _alone(self, stream_id: str, start: int) -> list[RecordedEvent]:
        return await self._store.read_stream(stream_id, from_version=start, limit=self.limit)


class _Loading(ActorState):
    """Loading and catching up (see the module docs)."""

    __slots__ = ()

    async def _load(self, *, catch_up: bool = False) -> None:
        """Rebuild state from the latest snapshot plus the events after it, page by page.

        With `catch_up`, fold only the events after the actor's own version onto its
        state instead: after a conflict or an append of unknown outcome, the state is
        still the fold of the stream up to `self.version` (it moves only with committed
        events), and the stream can only have grown. A reload then costs the events
        written since, not the whole stream.
        """
        host = self.host
        aggregate = self.aggregate
        store = self.store
        stream_id = self.stream_id
        evolve = aggregate.evolve
        state: Any = aggregate.initial
        version = 0
        position = 0
        start = 1
        if catch_up:
            state, version, position = self.state, self.version, self.position
            start = version + 1
        try:
            if host.snapshot_every is not None and not catch_up:
                snapshot = await store.load_snapshot(
                    stream_id, type(state), schema_version=aggregate.state_version
                )
                if snapshot is not None:
                    state, version, start = snapshot.state, snapshot.version, snapshot.version
            page_size = host.options.load_page_size
            loader = host.loader
            first = not catch_up and loader.limit == page_size
            while True:
                if first:  # with the other loads waiting now (see GroupLoader)
                    first = False
                    page = await loader.first_page(stream_id, start)
                else:
                    page = await store.read_stream(stream_id, from_version=start, limit=page_size)
                for recorded in page:
                    position = recorded.position
                    if recorded.version <= version:
                        continue  # the snapshot's own event: read for its position only
                    try:
                        state = evolve(state, recorded.event)
                    except Exception as exc:
                        raise RecoveryError(
                            stream_id, recorded.version, recorded.event_type, repr(exc)
                        ) from exc
                    version = recorded.version
                if len(page) < page_size:
                    break
                start = page[-1].version + 1
        except RecoveryError as exc:
            self._fail_load(exc)
        except EventDecodeError as exc:
            error = RecoveryError(exc.stream_id, exc.version, exc.event_type, str(exc))
            error.__cause__ = exc
            self._fail_load(error)
        except StoreClosed as exc:
            raise _Parked(ShuttingDown(f"the store closed while loading {stream_id!r}")) from exc
        except StoreError as exc:
            error = RecoveryError(stream_id, version, "", f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._fail_load(error)
        self.state, self.version, self.position = state, version, position
        self.unsure = False
        self.foreign = [e for e in self.foreign if e.version > version]
        self._log.debug("actor.loaded", version=version)

    async def _catch_up(self) -> None:
        """Bring the state up to the stream's version as last seen (`behind`): from the
        events the follower handed over when they reach it, else from the store (always
        when an outcome was unknown)."""
        if not self.unsure and self._absorb():
            return
        await self._load(catch_up=True)

    def offer(self, recorded: RecordedEvent) -> None:
        """An event of this stream the bus's follower read (another process wrote it,
        or this actor's own append, read before its answer came): kept to fold before
        the next decision. At most `_MAX_FOREIGN` are kept; past them, a read of the
        store catches up."""
        if recorded.version <= self.version:
            return
        self.behind = max(self.behind, recorded.version)
        foreign = self.foreign
        following = foreign[-1].version + 1 if foreign else self.version + 1
        if recorded.version == following and len(foreign) < _MAX_FOREIGN:
            foreign.append(recorded)
        elif recorded.version > following:
            foreign.clear()  # not contiguous with what is kept: the store tells

    def _absorb(self) -> bool:
        """Fold the kept events that follow `version` onto the state; whether it then
        reaches `behind`. An event `evolve` refuses is left to a load, which reports it."""
        foreign = self.foreign
        if foreign:
            state, version, position = self.state, self.version, self.position
            evolve = self.aggregate.evolve
            used = 0
            for recorded in foreign:
                used += 1
                if recorded.version <= version:
                    continue
                if recorded.version != version + 1:
                    break
                try:
                    state = evolve(state, recorded.event)
                except Exception:  # noqa: BLE001 - the load reads it again and reports it
                    foreign.clear()
                    return False
                version, position = recorded.version, recorded.position
            del foreign[:used]
            self.state, self.version, self.position = state, version, position
        return self.version >= self.behind

    def _fail_load(self, error: RecoveryError) -> None:
        self.host.restarted()
        self._log.error(
            "actor.recovery_failed",
            version=error.version,
            event_type=error.event_type,
            exc_info=error,
        )
        self.host.park(self.aggregate_id, error)
        raise _Parked(error)
