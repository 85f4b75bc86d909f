"""The write path of the PostgreSQL store: a whole batch of appends in one round trip.

`write_batch(conn, schema, appends, recorded_at)` turns the batch into parallel arrays
and runs `esactors_append_batch(...)` (created by `store._postgres_schema.migrate`) in
one `fetch`: one Bind/Execute/Sync exchange once asyncpg has the statement prepared
(the first call on a connection adds one Parse/Describe exchange). Run on a connection
with no transaction open, the statement is its own transaction and commits at Sync, so
the position counter's row lock is held from the function's first statement to the
commit and never across a round trip to the client.

The client proposes every row's version as if every append were accepted (an exact
expected version is its stream's base; `ANY` and `STREAM_EXISTS` take it from the
writer's `StreamVersions` cache; versions chain within the batch). Under the counter
lock the function first tries the fast path: check that each base the cache cannot
vouch for exists, then insert every row (and command id) set-based in a subtransaction.
The unique indexes are the guard: a row above a stream's real version (another process
wrote it, a stale cache, a refused expected version) or a stored command id raises
`unique_violation`, which undoes only the fast path. Then, and when the client already
knows a proposal cannot hold, the careful path decides each append in order on the
stored state, exactly as the SQLite writer does:

1. a command id already committed (before, or earlier in this batch): the same stream
   and digest is a duplicate (the first result, nothing written); anything else is an
   idempotency conflict;
2. the expected version (exact, `NO_STREAM`, `STREAM_EXISTS`, `ANY`) against the stream's
   version, chained within the batch (an accepted append moves it for the next one);
3. accepted appends take the next positions, contiguous, in batch order.

Both paths end in the same state for the same stored history; the cache only decides
which one runs. It is filled from committed outcomes only, and versions only grow, so it
can be behind (costing the careful path), never ahead, unless the schema's history was
replaced (made anew, restored): a counter below the last position the cache saw turns
the fast path off and clears it. The function answers one row: the last position before
the batch, plus, from the careful path only, one array per outcome field.

The same statement sends `NOTIFY` on the schema's channel
(`store._postgres_listen.channel_name`) with the batch's last position as the payload,
if the batch wrote any event: PostgreSQL delivers it when the batch commits (never
before: a listener woken can read the events), and drops it if the batch rolls back.
Other processes' stores listen there (`PostgresEventStore.wait_for_commit`).

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

import itertools
from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg
import msgspec

from store._batch import _BatchAppend
from store._errors import ChainBroken, ConcurrencyError, IdempotencyConflict, StoreError
from store._postgres_listen import channel_name
from store._postgres_schema import quote_ident
from store._records import ANY, STREAM_EXISTS, AppendResult

__all__ = [
    "CHAIN_BROKEN",
    "CONCURRENCY",
    "DUPLICATE",
    "IDEMPOTENCY_CONFLICT",
    "LEASE_LOST",
    "OK",
    "AppendOutcome",
    "BatchAppend",
    "BatchResult",
    "CheckpointWrite",
    "SnapshotWrite",
    "StreamVersions",
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
LEASE_LOST: Final = 5
"""Its fence's lease has another owner or epoch (or no row): `recorded_stream` is the
lease's owner now (None: no such lease), `actual` its epoch. Nothing was written."""
CHAIN_BROKEN: Final = 6
"""The append it is chained to (`write_batch`'s `chained`) was not accepted as a fresh
append. Nothing was written."""


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


class StreamVersions:
    """The writer's cache of stream versions: for each stream it wrote (or saw refused),
    the version it had after that commit. Events are never removed, so a stream's
    version only grows: the cache can be behind (another process wrote since), never
    ahead. `write_batch` proposes versions from it; a stale entry only sends the batch
    down the careful path. Holds at most `limit` streams (the oldest go first)."""

    __slots__ = ("limit", "position", "versions")

    def __init__(self, limit: int = 100_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        self.limit = limit
        self.versions: dict[str, int] = {}
        self.position = 0
        """The last position of the last batch it saw commit: the function takes the
        careful path if the counter is below it (the cache is then cleared)."""

    def get(self, stream_id: str) -> int | None:
        """The version last seen for `stream_id`, or None."""
        return self.versions.get(stream_id)

    def clear(self) -> None:
        self.versions.clear()
        self.position = 0

    def _trim(self) -> None:
        versions = self.versions
        excess = len(versions) - self.limit
        if excess > 0:
            excess += self.limit // 4  # trim in steps, not once per batch
            for stream_id in list(itertools.islice(versions, excess)):
                del versions[stream_id]


_QUERIES: dict[str, str] = {}


# The call's parameters. Most arrays go as text in PostgreSQL's array syntax, cast on the
# server (`array_in`): built with `str.join`, that costs the client a third of what
# asyncpg's binary array encoding does (it inspects every element); the rows' data go
# as one bytea and the offsets that cut it. The rest are asyncpg arrays (mostly NULL).
_PARAMS: Final = (
    "$1::text::text[], $2::text::bigint[], $3::text::text[], $4::text::bigint[], $5,"
    " $6::text::integer[], $7::text::bigint[], $8, $9, $10::text::bigint[],"
    " $11::text::integer[], $12, $13::text::text[], $14::text::bigint[]"
    + "".join(f", ${n}" for n in range(15, 28))
)


def _ints(values: Iterable[int]) -> str:
    """`values` as a PostgreSQL array literal."""
    return "{" + ",".join(map(str, values)) + "}"


def _texts(values: Sequence[str]) -> str:
    """`values` (no NUL) as a PostgreSQL array literal: every element quoted, so only a
    double quote or a backslash needs escaping (and in most batches none does)."""
    if not values:
        return "{}"
    joined = '","'.join(values)
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        joined = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + joined + '"}'


def _query(schema: str, fenced: bool = False, chained: bool = False) -> str:
    """The batch statement of `schema`: the function's call, materialized (run once, to
    the end, before anything else of the statement), then `pg_notify` on the schema's
    channel ($28) with the batch's last position, only if the batch wrote events: the
    fast path wrote every row ($29 of them) after `start_position`; the careful path's
    last written position is its highest `last_positions` of an accepted append (none:
    nothing written). The notification goes out when the statement's transaction
    commits, never before, and not at all if it rolls back."""
    key = f"{schema}\x00{fenced:d}{chained:d}"
    query = _QUERIES.get(key)
    if query is None:
        # A batch with fences passes them too ($30 to $32), one with chained appends
        # those and the links ($33); one without keeps the call it always had (the
        # later arguments default to NULL).
        params = _PARAMS
        if fenced or chained:
            params += ", $30::text[], $31::text[], $32::bigint[]"
        if chained:
            params += ", $33::integer[]"
        query = _QUERIES[key] = (
            "WITH r AS MATERIALIZED (SELECT start_position, kinds, first_versions,"  # noqa: S608 (a quoted identifier)
            " last_versions, first_positions, last_positions, actuals, recorded_streams,"
            f" write_error FROM {quote_ident(schema)}.esactors_append_batch({params})),"
            " b AS (SELECT r.*, CASE WHEN r.kinds IS NULL THEN r.start_position + $29::bigint"
            " ELSE (SELECT max(u.lp) FROM unnest(r.kinds, r.last_positions) AS u(k, lp)"
            " WHERE u.k = 0) END AS last FROM r)"
            " SELECT start_position, kinds, first_versions, last_versions, first_positions,"
            " last_positions, actuals, recorded_streams, write_error,"
            " CASE WHEN last > start_position THEN pg_notify($28::text, last::text) END"
            " FROM b"
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
    versions: StreamVersions | None = None,
    fences: Sequence[tuple[str, str, int] | None] | None = None,
    chained: Sequence[int] | None = None,
) -> BatchResult:
    """Commit `appends` (and the snapshot and checkpoint upserts) in one statement.

    `conn` must have no transaction open (the statement commits itself) or one at READ
    COMMITTED that the caller commits at once (the counter lock is then held until
    that commit). `recorded_at` (POSIX seconds, the client's clock as in SQLite) is
    stored on every event and command row of the batch.

    The fast path: every row goes with the version it gets if every append is
    accepted (an exact expected version is its base; `ANY` and `STREAM_EXISTS` take
    theirs from `versions`, the writer's cache, updated here after each commit;
    versions chain within the batch). The function inserts them set-based; the unique
    indexes refuse a row above a stream's real version or a stored command id, and a
    base the cache cannot vouch for is checked to exist. If anything does not hold
    (another process wrote the stream, a refusal, a command id stored or repeated),
    the batch falls back to deciding each append on the stored state, still in the
    same statement and under the same lock. Without `versions`, `ANY` and
    `STREAM_EXISTS` on a stream not yet in the batch take the careful path.

    `fences` (one per append, None for an unfenced one; None or all None: no fence)
    makes the function lock those leases (FOR SHARE, to the commit) before the counter
    and refuse alone (`LEASE_LOST`) each fenced append whose lease row has not the
    fence's owner and epoch, after its command id was looked up (a duplicate is still
    answered as one). Such a batch takes the careful path if a fence failed.

    `chained` (one per append: the index in `appends` of the append it is chained to,
    -1 for none; None: none is) makes the function refuse alone (`CHAIN_BROKEN`) an
    append whose predecessor was not accepted as a fresh append.

    Raises `ValueError` before sending anything for text PostgreSQL cannot store (a NUL
    character), a command id without a digest or an append without events; asyncpg's
    errors as they come. A time limit is the connection's `statement_timeout` (server
    side: the lock wait counts), or cancelling the caller (asyncpg then asks the server
    to cancel the statement; if the cancel comes too late the batch may still commit:
    unknown outcome). Only a committed result updates `versions`.

    A batch that wrote events notifies the schema's channel (`channel_name(schema)`)
    with its last position, delivered at the commit; one that wrote none (every append
    refused or a duplicate, or only snapshots and checkpoints) notifies nobody.
    """
    arrays = _arrays(appends, versions.versions if versions is not None else {})
    fence_args = _check_writes(appends, snapshots, checkpoints, fences)
    if chained is not None:
        if len(chained) != len(appends):
            raise ValueError(f"{len(chained)} chain links for {len(appends)} appends")
        fence_args = (fence_args or (None, None, None)) + ([index + 1 for index in chained],)
    record = await conn.fetchrow(
        _query(schema, bool(fence_args), chained is not None),
        *_arguments(
            schema,
            arrays,
            recorded_at,
            versions.position if versions is not None else 0,
            snapshots,
            checkpoints,
        ),
        *fence_args,
    )
    assert record is not None
    return _result(record, appends, arrays, versions)


class _Arrays:
    """A batch's appends as the statement's arrays (filled by `_arrays`): per event row
    `streams` to `commands` (`metadata`, `commands`: None if every row's is NULL); per
    append `expected` to `bases`; the bases the function checks exist (`check_streams`,
    `check_versions`); per stream its version after the batch if every append is
    accepted (`chain`); whether the client already knows a proposal cannot hold
    (`careful`), and whether an append carries more than one event (`multi`)."""

    __slots__ = (
        "bases",
        "careful",
        "chain",
        "check_streams",
        "check_versions",
        "checksums",
        "commands",
        "counts",
        "data",
        "digests",
        "expected",
        "metadata",
        "multi",
        "schema_versions",
        "streams",
        "tags",
        "versions",
    )

    def __init__(self) -> None:
        self.streams: list[str] = []
        self.versions: list[int] = []
        self.tags: list[str] = []
        self.schema_versions: list[int] = []
        self.data: list[bytes] = []
        self.checksums: list[int] = []
        self.metadata: list[bytes | None] | None = None  # set once filled
        self.commands: list[str | None] | None = None  # set once filled
        self.expected: list[int] = []
        self.counts: list[int] = []
        self.digests: list[bytes | None] = []
        self.bases: list[int] = []  # per append: its stream's version before it, all accepted
        self.check_streams: list[str] = []
        self.check_versions: list[int] = []
        self.chain: dict[str, int] = {}  # per stream: its version after the batch, all accepted
        self.careful = False
        self.multi = False


def _arrays(appends: Sequence[BatchAppend], known: dict[str, int]) -> _Arrays:
    """The rows of `appends`, each with the version it gets if every append is accepted
    (its base from the expected version, `known`, the cache, or the batch's chain).
    Raises `ValueError` for an append without events or a bad command id."""
    arrays = _Arrays()
    chain, bases, expected, counts = arrays.chain, arrays.bases, arrays.expected, arrays.counts
    digests, check_streams = arrays.digests, arrays.check_streams
    check_versions = arrays.check_versions
    row_streams, row_versions, tags = arrays.streams, arrays.versions, arrays.tags
    schema_versions, data, checksums = arrays.schema_versions, arrays.data, arrays.checksums
    row_metadata: list[bytes | None] = []
    row_commands: list[str | None] = []
    command_ids: set[str] = set()
    careful = multi = has_metadata = False
    for item in appends:
        stream_id = item.stream_id
        wanted = item.expected
        rows = item.rows
        count = len(rows)
        if not count:
            raise ValueError(f"an append to {stream_id!r} without events")
        base = chain.get(stream_id)
        if base is None:
            cached = known.get(stream_id)
            if wanted >= 0:
                base = wanted
                if cached is None or cached < wanted:
                    if wanted > 0:  # the unique index cannot tell a base that is missing
                        check_streams.append(stream_id)
                        check_versions.append(wanted)
                elif cached > wanted:  # versions only grow: refused
                    careful = True
            elif cached is not None and (cached > 0 or wanted == ANY):
                base = cached  # ANY, STREAM_EXISTS: as the cache knows it (it exists)
            else:
                base = 0
                careful = True
        elif wanted != base and (wanted >= 0 or (wanted == STREAM_EXISTS and base == 0)):
            careful = True
        chain[stream_id] = base + count
        bases.append(base)
        expected.append(wanted)
        counts.append(count)
        command_id = item.command_id
        if command_id is not None and _repeated_command(command_id, item.digest, command_ids):
            careful = True  # a resend, or a conflict, within the batch
        digests.append(item.digest)
        metadata_bytes = item.metadata_bytes
        if metadata_bytes is not None:
            has_metadata = True
        if count == 1:
            tag, schema_version, payload, checksum = rows[0]
            row_streams.append(stream_id)
            row_versions.append(base + 1)
            tags.append(tag)
            schema_versions.append(schema_version)
            data.append(payload)
            checksums.append(checksum)
            row_metadata.append(metadata_bytes)
            row_commands.append(command_id)
        else:
            multi = True
            _add_rows(arrays, item, base, row_metadata, row_commands)
    arrays.metadata = row_metadata if has_metadata else None
    arrays.commands = row_commands if command_ids else None
    arrays.careful = careful
    arrays.multi = multi
    return arrays


def _repeated_command(command_id: str, digest: bytes | None, seen: set[str]) -> bool:
    """Whether `command_id` is in `seen` (the batch's command ids so far: a resend, or
    a conflict, within the batch), adding it; `ValueError` for a command id without a
    digest or with a NUL character."""
    if digest is None:
        raise ValueError(f"command id {command_id!r} comes without a digest")
    if "\x00" in command_id:
        raise ValueError(f"command id {command_id!r} contains a NUL character")
    if command_id in seen:
        return True
    seen.add(command_id)
    return False


def _add_rows(
    arrays: _Arrays,
    item: BatchAppend,
    base: int,
    row_metadata: list[bytes | None],
    row_commands: list[str | None],
) -> None:
    """Add the rows of `item`, an append of several events whose stream is at `base`
    before it, to `arrays` (and its metadata and command id per row to `row_metadata`
    and `row_commands`)."""
    rows = item.rows
    count = len(rows)
    tags, schema_versions, data, checksums = (
        arrays.tags,
        arrays.schema_versions,
        arrays.data,
        arrays.checksums,
    )
    for tag, schema_version, payload, checksum in rows:
        tags.append(tag)
        schema_versions.append(schema_version)
        data.append(payload)
        checksums.append(checksum)
    arrays.streams.extend([item.stream_id] * count)
    arrays.versions.extend(range(base + 1, base + count + 1))
    row_metadata.extend([item.metadata_bytes] * count)
    row_commands.extend([item.command_id] * count)


def _check_writes(
    appends: Sequence[BatchAppend],
    snapshots: Sequence[SnapshotWrite],
    checkpoints: Sequence[CheckpointWrite],
    fences: Sequence[tuple[str, str, int] | None] | None,
) -> tuple[object, ...]:
    """Check the snapshots, checkpoints and fences (`ValueError` for a NUL character or
    a fence count that is not the appends') and answer the fence parameters ($30 to
    $32: names, owners, epochs), or none for a batch without a fence."""
    for snapshot in snapshots:
        if "\x00" in snapshot.stream_id or "\x00" in snapshot.state_type:
            raise ValueError(f"snapshot of {snapshot.stream_id!r}: a NUL character")
    for checkpoint in checkpoints:
        if "\x00" in checkpoint.name:
            raise ValueError(f"checkpoint name {checkpoint.name!r} contains a NUL character")
    fence_args: tuple[object, ...] = ()
    if fences is not None and any(fence is not None for fence in fences):
        if len(fences) != len(appends):
            raise ValueError(f"{len(fences)} fences for {len(appends)} appends")
        fence_args = (
            [None if f is None else f[0] for f in fences],
            [None if f is None else f[1] for f in fences],
            [None if f is None else f[2] for f in fences],
        )
    return fence_args


def _arguments(
    schema: str,
    arrays: _Arrays,
    recorded_at: float,
    position: int,
    snapshots: Sequence[SnapshotWrite],
    checkpoints: Sequence[CheckpointWrite],
) -> tuple[object, ...]:
    """The statement's parameters $1 to $29 (see `_PARAMS` and `_query`); `position` is
    the last one the versions cache saw commit (0: no cache)."""
    data = arrays.data
    has_commands = arrays.commands is not None
    check_streams = arrays.check_streams
    return (
        _texts(arrays.streams),
        _ints(arrays.versions),
        _texts(arrays.tags),
        _ints(arrays.schema_versions),
        b"".join(data),
        _ints(itertools.accumulate(map(len, data), initial=0)),
        _ints(arrays.checksums),
        arrays.metadata,
        arrays.commands,
        _ints(arrays.expected),
        _ints(arrays.counts) if arrays.multi else None,
        arrays.digests if has_commands else None,
        _texts(check_streams) if check_streams else None,
        _ints(arrays.check_versions) if check_streams else None,
        arrays.careful,
        position,
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
        channel_name(schema),
        len(arrays.streams),
    )


def _result(
    record: asyncpg.Record,
    appends: Sequence[BatchAppend],
    arrays: _Arrays,
    versions: StreamVersions | None,
) -> BatchResult:
    """The outcomes in the statement's answer `record`, one per append (the fast path
    answers no arrays: every append accepted as proposed), with `versions` updated from
    them."""
    start, kinds, fvs, lvs, fps, lps, actuals, recorded, write_error, _ = record
    outcomes: list[AppendOutcome] = []
    if not appends:
        return BatchResult(outcomes, write_error)
    if kinds is None:  # the fast path: every append accepted as proposed
        position = start
        for base, count in zip(arrays.bases, arrays.counts, strict=True):
            outcomes.append(
                AppendOutcome(OK, base + 1, base + count, position + 1, position + count, 0, None)
            )
            position += count
        if versions is not None:
            versions.versions.update(arrays.chain)
            versions.position = position
            versions._trim()
        return BatchResult(outcomes, write_error)
    if len(kinds) != len(appends):
        raise RuntimeError(
            f"esactors_append_batch answered {len(kinds)} outcomes for {len(appends)} appends"
        )
    outcomes = [
        AppendOutcome(*fields)
        for fields in zip(kinds, fvs, lvs, fps, lps, actuals, recorded, strict=True)
    ]
    if versions is not None:
        if start < versions.position:
            versions.clear()  # another history than the one it knows
        known = versions.versions
        last = start
        for item, outcome in zip(appends, outcomes, strict=True):
            if outcome.kind == OK:
                known[item.stream_id] = outcome.last_version
                last = outcome.last_position
            elif outcome.kind == CONCURRENCY:
                known[item.stream_id] = outcome.actual  # its version at that point
        versions.position = last
        versions._trim()
    return BatchResult(outcomes, write_error)


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
    if kind == CHAIN_BROKEN:
        return ChainBroken(item.stream_id, item.expected)
    if kind == IDEMPOTENCY_CONFLICT:
        assert item.command_id is not None
        assert outcome.recorded_stream is not None
        return IdempotencyConflict(item.command_id, item.stream_id, outcome.recorded_stream)
    raise ValueError(f"unknown append outcome kind {kind}")
