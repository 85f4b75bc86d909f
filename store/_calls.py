"""The store's calls besides `append`, checked the same on every backend: arguments here,
the query a backend's (the hooks at the end). The lease calls are in
`store._lease_calls`, a base of `_StoreCalls`."""

from __future__ import annotations

import abc
import time
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from store import faults
from store._codec import EventRegistry
from store._decode import _snapshot
from store._errors import EventDecodeError, InvalidReadArgument, ReadTooLarge
from store._lease_calls import _LeaseCalls
from store._logging import LibraryLogger
from store._options import StoreOptions
from store._prepare import (
    _MAX_VERSION,
    Fence,
    _bound,
    _check_checkpoint,
    _check_checkpoint_name,
    _check_command_id,
    _check_stream_prefix,
    _encode_snapshot,
    _event_types,
    _fence,
    _limit,
    _moment,
    _type_name,
)
from store._records import AppendResult, Lease, RecordedEvent, Snapshot

__all__: list[str] = ["MAX_GROUP_READ"]

MAX_GROUP_READ = 500
"""The most streams one `read_streams` call reads (its query binds three values each)."""

S = TypeVar("S")


class _StoreCalls(_LeaseCalls):
    """Reads, snapshots, checkpoints and leases as every backend offers them (see `EventStore`):
    each call checks its arguments and the backend answers the query (the leases' calls
    are `_LeaseCalls`')."""

    registry: EventRegistry
    options: StoreOptions
    _log: LibraryLogger

    # -- provided by the group commit ---------------------------------------------------

    @abc.abstractmethod
    def _check_stream_id(self, stream_id: object) -> None: ...

    @abc.abstractmethod
    def _snapshot_decoder(self, state_type: type[Any]) -> msgspec.msgpack.Decoder[Any]: ...

    # -- reading ------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of `stream_id` with `from_version <= version <= to_version`, in order.

        Args:
            limit: at most this many (capped by `max_read_limit`); page with
                `from_version=last.version + 1`. Without it, the whole range is
                returned, or `ReadTooLarge` raised if it holds more than
                `max_read_limit` events (never a silently shortened stream).

        Raises:
            UnknownEventType, CorruptEvent: a stored event cannot be decoded.
            ReadTooLarge: no `limit`, and the range is longer than `max_read_limit`.
            InvalidStreamId, InvalidReadArgument: a bad argument; nothing was read.
        """
        self._check_stream_id(stream_id)
        call = f"read_stream({stream_id!r})"
        low = _bound(call, "from_version", from_version)
        high = _MAX_VERSION if to_version is None else _bound(call, "to_version", to_version)
        cap = self.options.max_read_limit
        if limit is not None:
            return await self._read_stream(stream_id, low, high, _limit(call, limit, cap))
        rows = await self._read_stream(stream_id, low, high, cap + 1)
        if len(rows) > cap:
            raise ReadTooLarge(stream_id, low, cap)
        return rows

    async def read_streams(
        self, starts: Sequence[tuple[str, int]], *, limit: int
    ) -> list[list[RecordedEvent] | EventDecodeError]:
        """The first page of several streams in one query: for each `(stream_id,
        from_version)` of `starts`, its events with versions `from_version` to
        `from_version + limit - 1`, in order, as `read_stream(stream_id,
        from_version=from_version, limit=limit)` would return them (a stream's versions
        are 1, 2, 3... without gaps, so that range is its next page). One answer per
        entry, in the order of `starts`; a stream whose events cannot be decoded gets
        its `EventDecodeError` in its place, and the other streams are unaffected.

        What group loading uses: the actors waiting to load at the same moment share
        one query (one thread hop, one round trip) instead of one each.

        Args:
            starts: at most `MAX_GROUP_READ` entries (a stream may appear once).
            limit: the page size, capped by `max_read_limit`.

        Raises:
            InvalidStreamId, InvalidReadArgument: a bad argument; nothing was read.
            StoreError: the query failed (for every stream of the call).
        """
        call = "read_streams"
        if len(starts) > MAX_GROUP_READ:
            raise InvalidReadArgument(
                call, "starts", f"<{len(starts)} entries>", f"at most {MAX_GROUP_READ} entries"
            )
        page = _limit(call, limit, self.options.max_read_limit)
        ranges: list[tuple[str, int, int]] = []
        seen: set[str] = set()
        for stream_id, from_version in starts:
            self._check_stream_id(stream_id)
            if stream_id in seen:
                raise InvalidReadArgument(call, "starts", stream_id, "each stream at most once")
            seen.add(stream_id)
            low = _bound(f"read_streams({stream_id!r})", "from_version", from_version)
            ranges.append((stream_id, low, min(low + page - 1, _MAX_VERSION)))
        if not ranges:
            return []
        return await self._read_streams(ranges)

    async def read_stream_until(
        self, stream_id: str, at: datetime | float, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The stream as it stood at moment `at`: its longest prefix of events recorded at
        or before `at` (an aware datetime, or POSIX seconds). Time travel by version is
        `read_stream(stream_id, to_version=v)`.

        Raises:
            NaiveDatetime: `at` is a datetime without tzinfo.
            InvalidStreamId, InvalidReadArgument: another bad argument; nothing was read.
        """
        self._check_stream_id(stream_id)
        call = f"read_stream_until({stream_id!r})"
        moment = _moment(call, at)
        if limit is not None:
            _limit(call, limit, self.options.max_read_limit)
        first_after = await self._first_version_after(stream_id, moment)
        to_version = _MAX_VERSION if first_after is None else first_after - 1
        if to_version < 1:
            return []
        return await self.read_stream(stream_id, to_version=to_version, limit=limit)

    async def read_all(
        self,
        *,
        from_position: int = 0,
        to_position: int | None = None,
        limit: int | None = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        """Events of every stream in global (commit) order, `from_position` inclusive.

        Args:
            to_position: the last position to include (default: no bound).
            limit: page size (default 1,000, capped by `max_read_limit`); page on with
                `from_position=last.position + 1`.
            event_types: only these tags.
            stream_prefix: only streams whose id starts with this.

        Raises:
            InvalidReadArgument: a bad argument (named); nothing was read.
        """
        call = "read_all"
        high = _MAX_VERSION if to_position is None else _bound(call, "to_position", to_position)
        low = max(_bound(call, "from_position", from_position), 0)
        page = _limit(call, limit, self.options.max_read_limit)
        tags = _event_types(call, event_types)
        _check_stream_prefix(call, stream_prefix)
        return await self._read_all(low, high, tags, stream_prefix or None, page)

    async def read_log(
        self,
        *,
        from_position: int,
        to_position: int,
        limit: int,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """`read_all` for the bus's follower, on a connection of its own where the
        backend has one to spare (PostgreSQL: opened by the first call, closed with the
        store), so the follower never waits behind the actors' reads to hand other
        processes' commits on. Same arguments and errors as `read_all`; one caller at a
        time. SQLite reads on the event loop's thread (`StoreOptions.loop_reads`, pages
        of at most 1,000 events: a shorter page than `limit` then, read on from its
        end), else on its reader connection: a second reader thread there costs more
        in contention for the interpreter lock than the queue it would skip."""
        call = "read_log"
        high = _bound(call, "to_position", to_position)
        low = max(_bound(call, "from_position", from_position), 0)
        page = _limit(call, limit, self.options.max_read_limit)
        tags = _event_types(call, event_types)
        return await self._read_log(low, high, tags, page)

    async def _read_log(
        self, low: int, high: int, tags: list[str] | None, limit: int
    ) -> list[RecordedEvent]:
        """`read_log`'s query; a backend without a connection to spare reads as
        `read_all` does."""
        return await self._read_all(low, high, tags, None, limit)

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        self._check_stream_id(stream_id)
        return await self._stream_version(stream_id)

    async def find_command(self, command_id: str) -> AppendResult | None:
        """The result of the committed append with `command_id`, or None.

        Raises:
            InvalidReadArgument: `command_id` is not one an append could have used.
        """
        _check_command_id(command_id)
        row = await self._command_row(command_id)
        if row is None:
            return None
        stream_id, first_version, last_version, first_position, last_position = row
        return AppendResult(
            stream_id, first_version, last_version, first_position, last_position, duplicate=True
        )

    # -- snapshots and checkpoints ------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, state: object, *, schema_version: int = 1
    ) -> None:
        """Save `state` as the state of `stream_id` at `version` (replacing an older one);
        it rides in the writer's next batch.

        `schema_version` names the state's shape: `load_snapshot` ignores a snapshot saved
        with another shape version or type, so a changed state type falls back to replay.

        Raises:
            InvalidStreamId: a bad stream id.
            InvalidSnapshot: a bad version or schema version, or a state that cannot be
                encoded or would not load back as its type (`load_snapshot` would throw
                it away); nothing was written.
        """
        self._check_stream_id(stream_id)
        data = _encode_snapshot(
            self.registry, self._snapshot_decoder, stream_id, version, state, schema_version
        )
        if faults.enabled:
            await faults.hit_async("snapshot_write")
        await self._write_snapshot(
            stream_id,
            version,
            _type_name(type(state)),
            schema_version,
            data,
            zlib.crc32(data),
            time.time(),
        )

    async def load_snapshot(
        self, stream_id: str, state_type: type[S], *, schema_version: int = 1
    ) -> Snapshot[S] | None:
        """The latest snapshot of `stream_id` if it has `state_type` at `schema_version`
        and decodes cleanly; otherwise None (replay the stream from its start)."""
        self._check_stream_id(stream_id)
        row = await self._snapshot_row(stream_id)
        if row is None:
            return None
        return _snapshot(
            row, stream_id, state_type, schema_version, self._snapshot_decoder, self._log
        )

    async def save_checkpoint(
        self, name: str, position: int, *, fence: Lease | None = None
    ) -> None:
        """Durably record that subscriber `name` has handled everything up to `position`
        (it rides in the writer's next batch).

        With `fence` (a lease from `acquire_lease`/`renew_lease`), it is written only if
        the store's row of that lease still has the fence's owner and epoch, checked
        atomically with the write (its expiry is not checked).

        Raises:
            LeaseLost: `fence` is no longer held; the checkpoint is unchanged.
            InvalidCheckpoint: `name` is not a non-empty str of valid Unicode (one the
                backend can store), or `position` not an int from 0 to 2**62; nothing
                was written.
            InvalidLease: `fence` is not a `Lease`; nothing was written.
        """
        _check_checkpoint(name, position)
        checked = _fence("save_checkpoint", fence, self.options.max_stream_id_bytes)
        if faults.enabled:
            await faults.hit_async("checkpoint_write")
        if checked is None:
            await self._write_checkpoint(name, position, time.time())
        else:
            await self._write_fenced_checkpoint(name, position, time.time(), checked)

    async def load_checkpoint(self, name: str) -> int:
        """The last position saved for subscriber `name` (0 when none).

        Raises:
            InvalidCheckpoint: `name` is not a non-empty str of valid Unicode.
        """
        _check_checkpoint_name(name)
        return await self._checkpoint(name)

    # -- what a backend answers (arguments checked) -------------------------------------

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The highest committed position (0 when empty), whoever wrote it."""

    @abc.abstractmethod
    async def _read_stream(
        self, stream_id: str, low: int, high: int, limit: int
    ) -> list[RecordedEvent]:
        """At most `limit` events of `stream_id` with versions `low..high`, in order."""

    @abc.abstractmethod
    async def _read_streams(
        self, ranges: list[tuple[str, int, int]]
    ) -> list[list[RecordedEvent] | EventDecodeError]:
        """For each (stream id, low, high) of `ranges` (distinct streams), its events
        with versions `low..high` in order, or the error decoding them raised."""

    @abc.abstractmethod
    async def _first_version_after(self, stream_id: str, moment: float) -> int | None:
        """The first version of `stream_id` recorded after `moment`, or None."""

    @abc.abstractmethod
    async def _read_all(
        self, low: int, high: int, tags: list[str] | None, prefix: str | None, limit: int
    ) -> list[RecordedEvent]:
        """At most `limit` events at positions `low..high`, in order, filtered."""

    @abc.abstractmethod
    async def _stream_version(self, stream_id: str) -> int:
        """The version of `stream_id` (0 when it has no events)."""

    @abc.abstractmethod
    async def _command_row(self, command_id: str) -> Sequence[Any] | None:
        """(stream id, first and last version, first and last position) of `command_id`."""

    @abc.abstractmethod
    async def _snapshot_row(self, stream_id: str) -> Sequence[Any] | None:
        """(version, state type, schema version, data, checksum, recorded at) or None."""

    @abc.abstractmethod
    async def _checkpoint(self, name: str) -> int:
        """The position saved for `name` (0 when none)."""

    @abc.abstractmethod
    async def _write_snapshot(
        self,
        stream_id: str,
        version: int,
        state_type: str,
        schema_version: int,
        data: bytes,
        checksum: int,
        recorded_at: float,
    ) -> None:
        """Queue the snapshot's upsert for the writer's next batch; wait for its commit."""

    @abc.abstractmethod
    async def _write_checkpoint(self, name: str, position: int, updated_at: float) -> None:
        """Queue the checkpoint's upsert for the writer's next batch; wait for its commit."""

    @abc.abstractmethod
    async def _write_fenced_checkpoint(
        self, name: str, position: int, updated_at: float, fence: Fence
    ) -> None:
        """Upsert the checkpoint only if the lease row has `fence`'s owner and epoch, in
        one transaction; else `LeaseLost`, the checkpoint unchanged."""
