"""An append checked and encoded on its caller's task, ready for the writer's queue.

`AppendPreparer.prepare` turns the arguments of `GroupCommitStore.append` into the
`_Append` the writer takes: the expected version, the events (encoded, each checked to
decode back), the metadata, the command id (and its digest) and the fence, each refused
with an error of its own before anything is queued, so a bad append never fails the
batch beside it. `check_stream_id` checks the stream id (the store calls it first) and
keeps the ids that passed (a bounded set), which makes the check of an id seen before a
set lookup. `AppendPreparer.redecided` encodes the events an append's `redecide` decided
again, in the writer's transaction, as `prepare` encodes the first ones.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Mapping, Sequence

import msgspec

from store._batch import _Append
from store._codec import EventRegistry
from store._errors import InvalidExpectedVersion
from store._options import StoreOptions
from store._prepare import (
    _check_new_stream_id,
    _command_digest,
    _encode_events,
    _encode_metadata,
    _fence,
)
from store._records import STREAM_EXISTS, AppendResult, Lease, RecordedEvent

__all__ = ["AppendPreparer"]

_Future = asyncio.Future


class AppendPreparer:
    """Checks and encodes the appends of one store (its registry and options), with
    their futures on the store's event loop."""

    __slots__ = ("_loop", "_options", "_registry", "valid_stream_ids")

    def __init__(
        self, registry: EventRegistry, options: StoreOptions, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._registry = registry
        self._options = options
        self._loop = loop
        self.valid_stream_ids: set[str] = set()
        """Stream ids that passed `check_stream_id` (exact str only; bounded)."""

    def check_stream_id(self, stream_id: object) -> None:
        """Raise `InvalidStreamId` unless the store can take `stream_id`."""
        if type(stream_id) is str and stream_id in self.valid_stream_ids:
            return
        _check_new_stream_id(stream_id, self.valid_stream_ids, self._options.max_stream_id_bytes)

    def prepare(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[msgspec.Struct],
        command_id: str | None,
        metadata: Mapping[str, str] | None,
        fence: Lease | None,
    ) -> _Append:
        """The append of these arguments (see `GroupCommitStore.append`; `stream_id`
        already checked by the store, through `check_stream_id`), with a new future;
        raises the `InvalidArgument` of the first one at fault."""
        if type(expected_version) is not int or expected_version < STREAM_EXISTS:
            raise InvalidExpectedVersion(stream_id, expected_version)
        options = self._options
        rows = _encode_events(self._registry, stream_id, events, options)
        meta: dict[str, str] | None = None
        meta_bytes = None
        if metadata:
            meta, meta_bytes = _encode_metadata(stream_id, metadata)
        digest = None
        if command_id is not None:
            digest = _command_digest(stream_id, command_id, rows)
        checked_fence = None
        if fence is not None:
            checked_fence = _fence(f"append({stream_id!r})", fence, options.max_stream_id_bytes)
        future: asyncio.Future[AppendResult] = _Future(loop=self._loop)
        return _Append(
            stream_id,
            expected_version,
            events,
            rows,
            meta,
            meta_bytes,
            command_id,
            digest,
            future,
            checked_fence,
        )

    def redecided(self, item: _Append, missed: list[RecordedEvent], version: int) -> bool:
        """On the writer's thread, inside its transaction: have `item`, an append whose
        expected version the stream passed, decide its events again (`item.redecide`)
        on the events it `missed`, the stream being at `version`. True when it did:
        `item` then holds the new events, encoded, and expects `version`. False leaves
        `item` as it was (refused as a conflict): no `redecide`, or it declined, failed
        or decided events that do not encode (the actor decides again on its own task,
        where such an error reaches the caller)."""
        redecide = item.redecide
        if redecide is None:
            return False
        try:
            events = redecide(missed, version)
            if not events:
                return False
            first = item.events
            if len(events) == len(first) and all(map(operator.eq, events, first)):
                rows = item.rows  # the same events again (a deposit, say): encoded already
            else:
                rows = _encode_events(self._registry, item.stream_id, events, self._options)
        except Exception:  # noqa: BLE001 - left to the conflict's own path, which reports it
            return False
        item.events, item.rows, item.expected, item.rebased = events, rows, version, True
        item.stale = False
        return True
