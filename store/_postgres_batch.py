"""The write path of the PostgreSQL store: a whole batch of appends in one round trip.

`write_batch(conn, schema, appends, recorded_at)` turns the batch into parallel arrays
and runs `esactors_append_batch(...)` (created by `store._postgres_schema.migrate`) in
one `fetch`: one Bind/Execute/Sync exchange once asyncpg has the statement prepared
(the first call on a connection adds one Parse/Describe exchange). Run on a connection
with no transaction open, the statement is its own transaction and commits at Sync, so
the position counter's row lock is held from the function's first statement to the
commit and never across a round trip to the client.

The function decides each append in order exactly as the SQLite writer does:

1. a command id already committed (before, or earlier in this batch): the same stream
   and digest is a duplicate (the first result, nothing written); anything else is an
   idempotency conflict;
2. the expected version (exact, `NO_STREAM`, `STREAM_EXISTS`, `ANY`) against the stream's
   version, chained within the batch (an accepted append moves it for the next one);
3. accepted appends take the next positions, contiguous, in batch order.

Snapshot and checkpoint upserts ride in the same statement (arrays again), so they
commit with the appends in the same single round trip. As in the SQLite writer, a
failure of those writes (a subtransaction inside the function) leaves the appends
committed and comes back as `BatchResult.write_error`.

Failures of the statement itself (connection lost, statement timeout, a serialization
error because the caller opened a REPEATABLE READ transaction, a unique violation
because something wrote `events` without the function) raise the asyncpg error and
nothing of the batch is written, except that after a lost connection the commit's
outcome is unknown: the store must treat the batch as of unknown outcome (its appends
with command ids can be retried safely).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg
import msgspec

from store._batch import _BatchAppend
from store._errors import ConcurrencyError, IdempotencyConflict, StoreError
from store._postgres_schema import quote_ident
from store._records import AppendResult

__all__ = [
    "CONCURRENCY",
    "DUPLICATE",
    "IDEMPOTENCY_CONFLICT",
    "OK",
    "AppendOutcome",
    "BatchAppend",
    "BatchResult",
    "CheckpointWrite",
    "SnapshotWrite",
    "append_result",
    "write_batch",
]

OK: Final = 0
"""Committed: `first_version..last_version` at `first_position..last_position`."""
DUPLICATE: Final = 1
"""Its command id committed before (or earlier in the batch) with the same stream and
digest: the positions and versions are that first result's; nothing was written."""
CONCURRENCY: Final = 2
"""The expected version did not match: `actual` is the stream's version at that point
of the batch (0: no stream). Nothing was written."""
IDEMPOTENCY_CONFLICT: Final = 3
"""Its command id committed with another stream or other events: `recorded_stream` is
the stream it was recorded on. Nothing was written."""
_WRITE_ERROR: Final = 4


BatchAppend = _BatchAppend
"""What the batch reads of an append (the queued `_Append`, as for the SQLite writer)."""


class AppendOutcome(msgspec.Struct, frozen=True, gc=False):
    """The outcome of one append of a batch, as the function decided it.

    Attributes:
        kind: `OK`, `DUPLICATE`, `CONCURRENCY` or `IDEMPOTENCY_CONFLICT`.
        first_version, last_version, first_position, last_position: where the events
            are (`OK`, `DUPLICATE`); 0 otherwise.
        actual: the stream's version it was checked against (`CONCURRENCY`); 0 otherwise.
        recorded_stream: the stream the command id was recorded on
            (`IDEMPOTENCY_CONFLICT`); None otherwise.
    """

    kind: int
    first_version: int
    last_version: int
    first_position: int
    last_position: int
    actual: int
    recorded_stream: str | None


class BatchResult(msgspec.Struct, frozen=True, gc=False):
    """The outcomes of a batch, one per append in order, and the error of its snapshot
    and checkpoint writes (`"SQLSTATE: message"`) if they failed (the appends stand)."""

    outcomes: list[AppendOutcome]
    write_error: str | None


class SnapshotWrite(msgspec.Struct, frozen=True, gc=False):
    """A snapshot upsert: replaces the stored one unless that has a newer version."""

    stream_id: str
    version: int
    state_type: str
    schema_version: int
    data: bytes
    checksum: int
    recorded_at: float


class CheckpointWrite(msgspec.Struct, frozen=True, gc=False):
    """A checkpoint upsert: the last one queued for a name wins."""

    name: str
    position: int
    updated_at: float


_QUERIES: dict[str, str] = {}


def _query(schema: str) -> str:
    query = _QUERIES.get(schema)
    if query is None:
        params = ", ".join(f"${n}" for n in range(1, 30))
        query = _QUERIES[schema] = (
            "SELECT kind, first_version, last_version, first_position, last_position,"  # noqa: S608 (a quoted identifier)
            f" actual, recorded_stream FROM {quote_ident(schema)}.esactors_append_batch({params})"
        )
    return query


async def write_batch(
    conn: asyncpg.Connection,
    schema: str,
    appends: Sequence[BatchAppend],
    recorded_at: float,
    *,
    snapshots: Sequence[SnapshotWrite] = (),
    checkpoints: Sequence[CheckpointWrite] = (),
) -> BatchResult:
    """Commit `appends` (and the snapshot and checkpoint upserts) in one statement.

    `conn` must have no transaction open (the statement commits itself) or one at READ
    COMMITTED that the caller commits at once (the counter lock is then held until
    that commit). `recorded_at` (POSIX seconds, the client's clock as in SQLite) is
    stored on every event and command row of the batch.

    Raises `ValueError` before sending anything for text PostgreSQL cannot store (a NUL
    character) or a command id without a digest; asyncpg's errors as they come. A time
    limit is the connection's `statement_timeout` (server side: the lock wait counts),
    or cancelling the caller (asyncpg then asks the server to cancel the statement; if
    the cancel comes too late the batch may still commit: unknown outcome).
    """
    streams: list[str] = []  # distinct, in order of first appearance: slot = index + 1
    slot_of: dict[str, int] = {}
    slots: list[int] = []
    expected: list[int] = []
    command_ids: list[str | None] = []
    digests: list[bytes | None] = []
    groups: list[int] = []
    sigs: list[int] = []
    group_of: dict[str, int] = {}
    sig_of: dict[tuple[str, int, bytes], int] = {}
    counts: list[int] = []
    metadata: list[bytes | None] = []
    tags: list[str] = []
    schema_versions: list[int] = []
    data: list[bytes] = []
    checksums: list[int] = []
    row_streams: list[str] = []
    row_appends: list[int] = []
    row_offsets: list[int] = []
    row_metadata: list[bytes | None] = []
    row_commands: list[str | None] = []
    for index, item in enumerate(appends, 1):
        stream_id = item.stream_id
        slot = slot_of.get(stream_id)
        if slot is None:
            streams.append(stream_id)
            slot = slot_of[stream_id] = len(streams)
        slots.append(slot)
        command_id = item.command_id
        if command_id is None:
            groups.append(0)
            sigs.append(0)
        else:
            digest = item.digest
            if digest is None:
                raise ValueError(f"command id {command_id!r} comes without a digest")
            if "\x00" in command_id:
                raise ValueError(f"command id {command_id!r} contains a NUL character")
            groups.append(group_of.setdefault(command_id, len(group_of) + 1))
            sigs.append(sig_of.setdefault((command_id, slot, digest), len(sig_of) + 1))
        expected.append(item.expected)
        command_ids.append(command_id)
        digests.append(item.digest)
        rows = item.rows
        count = len(rows)
        counts.append(count)
        metadata_bytes = item.metadata_bytes
        metadata.append(metadata_bytes)
        if count == 1:
            tag, schema_version, payload, checksum = rows[0]
            tags.append(tag)
            schema_versions.append(schema_version)
            data.append(payload)
            checksums.append(checksum)
            row_offsets.append(0)
        else:
            for tag, schema_version, payload, checksum in rows:
                tags.append(tag)
                schema_versions.append(schema_version)
                data.append(payload)
                checksums.append(checksum)
            row_offsets.extend(range(count))
        row_streams.extend([stream_id] * count)
        row_appends.extend([index] * count)
        row_metadata.extend([metadata_bytes] * count)
        row_commands.extend([command_id] * count)
    for snapshot in snapshots:
        if "\x00" in snapshot.stream_id or "\x00" in snapshot.state_type:
            raise ValueError(f"snapshot of {snapshot.stream_id!r}: a NUL character")
    for checkpoint in checkpoints:
        if "\x00" in checkpoint.name:
            raise ValueError(f"checkpoint name {checkpoint.name!r} contains a NUL character")
    records = await conn.fetch(
        _query(schema),
        streams,
        slots,
        expected,
        command_ids,
        digests,
        groups,
        sigs,
        counts,
        metadata,
        tags,
        schema_versions,
        data,
        checksums,
        row_streams,
        row_appends,
        row_offsets,
        row_metadata,
        row_commands,
        recorded_at,
        [s.stream_id for s in snapshots] if snapshots else None,
        [s.version for s in snapshots] if snapshots else None,
        [s.state_type for s in snapshots] if snapshots else None,
        [s.schema_version for s in snapshots] if snapshots else None,
        [s.data for s in snapshots] if snapshots else None,
        [s.checksum for s in snapshots] if snapshots else None,
        [s.recorded_at for s in snapshots] if snapshots else None,
        [c.name for c in checkpoints] if checkpoints else None,
        [c.position for c in checkpoints] if checkpoints else None,
        [c.updated_at for c in checkpoints] if checkpoints else None,
    )
    write_error: str | None = None
    if records and records[-1][0] == _WRITE_ERROR:
        write_error = records.pop()[6]
    if len(records) != len(slots):
        raise RuntimeError(
            f"esactors_append_batch answered {len(records)} outcomes for {len(slots)} appends"
        )
    return BatchResult([AppendOutcome(*record) for record in records], write_error)


def append_result(item: BatchAppend, outcome: AppendOutcome) -> AppendResult | StoreError:
    """What the store's caller gets for `item`: its `AppendResult`, or the error."""
    kind = outcome.kind
    if kind == OK or kind == DUPLICATE:
        return AppendResult(
            item.stream_id,
            outcome.first_version,
            outcome.last_version,
            outcome.first_position,
            outcome.last_position,
            duplicate=kind == DUPLICATE,
        )
    if kind == CONCURRENCY:
        return ConcurrencyError(item.stream_id, item.expected, outcome.actual)
    if kind == IDEMPOTENCY_CONFLICT:
        assert item.command_id is not None
        assert outcome.recorded_stream is not None
        return IdempotencyConflict(item.command_id, item.stream_id, outcome.recorded_stream)
    raise ValueError(f"unknown append outcome kind {kind}")
