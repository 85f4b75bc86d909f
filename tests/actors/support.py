"""Store wrappers (fakes, not mocks) that put faults or gates in front of a real store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import anyio
import msgspec

from store import ANY, AppendResult, ChainedAppend, ChainOutcome, EventStore, RecordedEvent
from store._chain import append_one_by_one


class _Wrapper:
    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_chain(
        self, stream_id: str, chain: Sequence[ChainedAppend], *, expected_version: int
    ) -> list[ChainOutcome]:
        # Through this wrapper's `append`, so that its faults and gates apply.
        return await append_one_by_one(self.append, stream_id, chain, expected_version)

    def as_store(self) -> EventStore:
        # The wrapper forwards every other method to a real store.
        return cast(EventStore, self)


class GatedStore(_Wrapper):
    """Appends wait until `gate` is set; `entered` is set when the first one waits."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.appends = 0

    async def append(self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any) -> Any:
        self.appends += 1
        self.entered.set()
        await self.gate.wait()
        return await self.inner.append(stream_id, events, **kw)


class InterloperStore(_Wrapper):
    """Before each of the next `times` appends, an intruder appends `intruder` to the
    same stream: the actor's expected version is stale every time."""

    def __init__(self, inner: EventStore, intruder: msgspec.Struct, times: int) -> None:
        super().__init__(inner)
        self.intruder = intruder
        self.times = times
        self.conflicts_caused = 0

    async def append(
        self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any
    ) -> AppendResult:
        if self.conflicts_caused < self.times:
            self.conflicts_caused += 1
            await self.inner.append(stream_id, [self.intruder], expected_version=ANY)
        return await self.inner.append(stream_id, events, **kw)


class CountingStore(_Wrapper):
    """Records the `from_version` of every stream read."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.reads: list[tuple[str, int]] = []

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        self.reads.append((stream_id, kw.get("from_version", 1)))
        return await self.inner.read_stream(stream_id, **kw)


class FailingStore(_Wrapper):
    """The next `times` appends fail with `error` (nothing written), like a lost lock."""

    def __init__(self, inner: EventStore, error: Exception, times: int) -> None:
        super().__init__(inner)
        self.error = error
        self.times = times

    async def append(
        self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any
    ) -> AppendResult:
        if self.times > 0:
            self.times -= 1
            raise self.error
        return await self.inner.append(stream_id, events, **kw)


class WithheldReplyStore(_Wrapper):
    """Appends commit, then their reply is held until `gate` is set (`committed` is set
    once one has committed): a caller cancelled meanwhile does not know the outcome."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()
        self.committed = anyio.Event()
        self.hold = False

    async def append(
        self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any
    ) -> AppendResult:
        result = await self.inner.append(stream_id, events, **kw)
        if self.hold:
            self.committed.set()
            await self.gate.wait()
        return result
