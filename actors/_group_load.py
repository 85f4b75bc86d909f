"""Group loading: the first pages of the streams loading at the same moment, read in one
store query (`GroupLoader`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from store import EventDecodeError, EventStore, RecordedEvent

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
