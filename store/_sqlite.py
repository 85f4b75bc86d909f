"""The SQLite event store: WAL, one writer task with group commit, a separate reader.

The writer owns the write connection. Every append waiting when it wakes goes into one
`BEGIN IMMEDIATE ... COMMIT`, run as a single call on aiosqlite's worker thread, so the
per-commit cost (fsync under `synchronous=FULL`) and the thread hop are paid per batch,
not per append. Expected versions are checked inside the transaction, under SQLite's
write lock, against versions this connection knows are current: a cache that
`PRAGMA data_version` invalidates whenever another connection (another process) has
committed. A conflicting append is rejected alone; `UNIQUE(stream_id, version)` stays the
final guard, and should it ever fire the batch is redone with one savepoint per append.
Positions are assigned by the writer inside the transaction, so they follow commit order
with no gaps. Callers' futures resolve only after `COMMIT` returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import os
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, Protocol, TypeVar, cast

import aiosqlite
import anyio
import msgspec

from store import _wire, faults
from store._codec import EventRegistry, UpcasterFailed
from store._errors import (
    ConcurrencyError,
    CorruptEvent,
    EventDecodeError,
    EventTooLarge,
    IdempotencyConflict,
    InvalidAppend,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidReadArgument,
    InvalidSnapshot,
    InvalidStoreOption,
    InvalidStreamId,
    NaiveDatetime,
    ReadTooLarge,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreUnavailable,
    TooManyEvents,
    UnknownEventType,
    UnregisteredEventType,
    top_field,
    validation_path,
)
from store._logging import get_logger
from store._records import (
    ANY,
    STREAM_EXISTS,
    AppendResult,
    RecordedEvent,
    Snapshot,
    StoreStatistics,
)
from store._schema import migrate

__all__ = ["CommitListener", "SQLiteEventStore", "StoreOptions", "open_store"]

T = TypeVar("T")
S = TypeVar("S")

CommitListener = Callable[[Sequence[RecordedEvent]], None]
"""Called by the writer, in position order, with the events of each committed batch."""

Synchronous = Literal["FULL", "NORMAL"]
Writer = Literal["thread", "process"]

_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, event_type, schema_version, data,"
    " metadata, command_id, recorded_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PLAIN_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, event_type, schema_version, data,"
    " recorded_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
"""The same row as `_INSERT_EVENT` when metadata and command_id are NULL: binding two
fewer parameters makes executemany about a fifth cheaper."""
_INSERT_COMMAND: Final = (
    "INSERT INTO commands (command_id, stream_id, first_version, last_version,"
    " first_position, last_position, digest, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _rows_statements(insert: str, width: int) -> dict[int, str]:
    """`insert` (an `INSERT ... VALUES (?, ...)` literal of `width` placeholders) as one
    statement per size in `_ROWS_PER_STATEMENT`, taking that many rows at once.

    Only placeholders are repeated: no value ever enters the SQL text. One statement
    for hundreds of rows is cheaper for SQLite than `executemany`, and the writer thread
    gives up the GIL once per statement instead of once per row, which is what keeps a
    commit quick while the event loop is saturated (each time the thread takes the GIL
    back from a busy loop it can wait the interpreter's whole switch interval, 5 ms).
    """
    head, _, row = insert.partition(" VALUES ")
    assert row.count("?") == width, insert
    return {n: f"{head} VALUES {', '.join([row] * n)}" for n in _ROWS_PER_STATEMENT}


_ROWS_PER_STATEMENT: Final = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
"""The statement sizes of a batch insert: at most 10 statements for up to 1,023 rows."""
_INSERT_EVENTS: Final = _rows_statements(_INSERT_EVENT, 10)
_INSERT_PLAIN_EVENTS: Final = _rows_statements(_INSERT_PLAIN_EVENT, 8)
_INSERT_COMMANDS: Final = _rows_statements(_INSERT_COMMAND, 8)
_SELECT_COMMANDS: Final = (
    "SELECT command_id, stream_id, first_version, last_version, first_position,"
    " last_position, digest FROM commands WHERE command_id IN (SELECT value FROM json_each(?))"
)
_SELECT_VERSIONS: Final = (
    "SELECT stream_id, max(version) FROM events"
    " WHERE stream_id IN (SELECT value FROM json_each(?)) GROUP BY stream_id"
)
_SELECT_VERSION: Final = "SELECT max(version) FROM events WHERE stream_id = ?"
_SELECT_LAST_POSITION: Final = "SELECT max(position) FROM events"
_READ_STREAM: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
_READ_ALL: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE position >= ? AND position <= ? ORDER BY position LIMIT ?"
)
_READ_ALL_TYPES: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE position >= ? AND position <= ?"
    " AND event_type IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?"
)
_READ_ALL_PREFIX: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE position >= ? AND position <= ?"
    " AND substr(stream_id, 1, ?) = ? ORDER BY position LIMIT ?"
)
_READ_ALL_TYPES_PREFIX: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE position >= ? AND position <= ?"
    " AND event_type IN (SELECT value FROM json_each(?))"
    " AND substr(stream_id, 1, ?) = ? ORDER BY position LIMIT ?"
)
_FIRST_VERSION_AFTER: Final = (
    "SELECT min(version) FROM events WHERE stream_id = ? AND recorded_at > ?"
)
_UPSERT_SNAPSHOT: Final = (
    "INSERT INTO snapshots (stream_id, version, state_type, schema_version, data, checksum,"
    " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET"
    " version = excluded.version, state_type = excluded.state_type,"
    " schema_version = excluded.schema_version, data = excluded.data,"
    " checksum = excluded.checksum, recorded_at = excluded.recorded_at"
    " WHERE excluded.version >= snapshots.version"
)
_SELECT_SNAPSHOT: Final = (
    "SELECT version, state_type, schema_version, data, checksum, recorded_at"
    " FROM snapshots WHERE stream_id = ?"
)
_UPSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
    " updated_at = excluded.updated_at"
)
_SELECT_CHECKPOINT: Final = "SELECT position FROM checkpoints WHERE name = ?"
_SELECT_COMMAND: Final = (
    "SELECT stream_id, first_version, last_version, first_position, last_position"
    " FROM commands WHERE command_id = ?"
)

_MAX_VERSION: Final = 2**62
_IN_LIST_CHUNK: Final = 2_000
_VERSION_CACHE_LIMIT: Final = 200_000
_VALID_STREAM_ID_CACHE_LIMIT: Final = 100_000
_MAX_IN_FLIGHT: Final = 2
"""Batches the writer process may hold at once: one committing, one queued behind it."""
_MIN_SPLIT: Final = 8
"""With nothing in flight, a queue of at least twice this many appends goes to the
writer process in two halves, so one half is answered while the other commits."""
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14
_SQLITE_NOTADB: Final = 26
_SQLITE_PROTOCOL: Final = 15
_RETRYABLE_READ: Final = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_PROTOCOL})
_READ_RETRIES: Final = 3

_Future = asyncio.Future
# A statement that changes nothing: queued behind every pending append, its commit
# tells `wait_settled` that they are settled.
_SETTLED_SQL: Final = "SELECT 1"
_json = msgspec.json.Encoder()
_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(dict[str, str])


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tuning and limits of a SQLite event store; every limit is finite.

    Each int option takes 1 to 2**62, `busy_timeout` 0.001 to 2,147,483 seconds; any
    other value is refused with `InvalidStoreOption` (naming the option and its range)
    before anything is opened.

    Attributes:
        synchronous: "FULL" (default): an acknowledged append survives power loss.
            "NORMAL": survives a crash of the process, may lose the last commits on
            power loss, and commits faster.
        busy_timeout: seconds a write waits for another process's lock before the
            writer retries the batch (`busy_retries` times) and then fails it with
            `StoreUnavailable`.
        busy_retries: see `busy_timeout`.
        max_event_bytes: the largest encoded event accepted (default 1 MiB).
        max_events_per_append: the most events one append may carry.
        max_stream_id_bytes: the longest stream id, in UTF-8 bytes.
        max_pending_appends: appends queued for the writer before `append` waits.
        max_batch_events: the most events the writer puts in one transaction.
        max_read_limit: the largest page a read may ask for.
        writer: where the write transactions run. "thread" (default): on the write
            connection's worker thread, one batch at a time. "process": in a writer
            process of their own (files only, not ":memory:"), with up to two batches
            in flight, so the event loop answers one batch while the next commits; it
            takes 0.1-0.2 s to start and trades the GIL's serialisation for one
            more process (see docs/architecture.md, "The writer process").
    """

    synchronous: Synchronous = "FULL"
    busy_timeout: float = 5.0
    busy_retries: int = 3
    max_event_bytes: int = 1024 * 1024
    max_events_per_append: int = 10_000
    max_stream_id_bytes: int = 256
    max_pending_appends: int = 100_000
    max_batch_events: int = 20_000
    max_read_limit: int = 100_000
    writer: Writer = "thread"

    def __post_init__(self) -> None:
        if self.synchronous not in ("FULL", "NORMAL"):
            raise InvalidStoreOption("synchronous", self.synchronous, "'FULL' or 'NORMAL'")
        if self.writer not in ("thread", "process"):
            raise InvalidStoreOption("writer", self.writer, "'thread' or 'process'")
        for name in (
            "max_event_bytes",
            "max_events_per_append",
            "max_stream_id_bytes",
            "max_pending_appends",
            "max_batch_events",
            "max_read_limit",
            "busy_retries",
        ):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= _MAX_INT_OPTION:
                raise InvalidStoreOption(name, value, f"an int from 1 to 2**62 ({_MAX_INT_OPTION})")
        timeout = self.busy_timeout
        if type(timeout) not in (int, float) or not (
            _MIN_BUSY_TIMEOUT <= timeout <= _MAX_BUSY_TIMEOUT
        ):
            raise InvalidStoreOption(
                "busy_timeout",
                timeout,
                f"a number of seconds from {_MIN_BUSY_TIMEOUT} to {_MAX_BUSY_TIMEOUT:,}"
                " (SQLite counts it in int32 milliseconds)",
            )


# The int options' upper bound: far past any real use, and `max_read_limit + 1` is
# still a SQLite integer (which also fits the writer process's setup frame).
_MAX_INT_OPTION: Final = 2**62
# SQLite's busy timeout is an int32 of milliseconds: a longer one wraps around and
# turns the busy handler off (a lock then fails at once), a shorter one rounds to none.
_MIN_BUSY_TIMEOUT: Final = 0.001
_MAX_BUSY_TIMEOUT: Final = 2_147_483


class _Append(msgspec.Struct, gc=False):
    """An append waiting for the writer. A struct, not a class with `__slots__`: built
    once per append on the event loop, where a C constructor costs a third as much.
    Not tracked by the garbage collector: the queue, the batch and its caller's task
    refer to it only while it is pending, and none of them outlives that."""

    stream_id: str
    expected: int
    events: Sequence[Any]
    rows: list[tuple[str, int, bytes, int]]
    metadata: dict[str, str] | None
    metadata_bytes: bytes | None
    command_id: str | None
    digest: bytes | None
    future: asyncio.Future[AppendResult]


class _BatchAppend(Protocol):
    """What the batch transaction reads of an append: an `_Append` on the writer
    thread, a decoded `_wire.AppendWire` in the writer process."""

    @property
    def stream_id(self) -> str: ...
    @property
    def expected(self) -> int: ...
    @property
    def rows(self) -> list[tuple[str, int, bytes, int]]: ...
    @property
    def metadata_bytes(self) -> bytes | None: ...
    @property
    def command_id(self) -> str | None: ...
    @property
    def digest(self) -> bytes | None: ...


class _Write:
    """A keyed upsert (snapshot, checkpoint) that rides in the next batch transaction."""

    __slots__ = ("future", "params", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...], future: asyncio.Future[None]) -> None:
        self.sql, self.params, self.future = sql, params, future


_Outcome = AppendResult | StoreError


class _BatchResult:
    __slots__ = ("commit_seconds", "last_position", "outcomes", "recorded_at", "write_error")

    def __init__(
        self,
        outcomes: list[_Outcome],
        recorded_at: float,
        commit_seconds: float,
        write_error: StoreError | None,
        last_position: int,
    ) -> None:
        self.outcomes = outcomes
        self.recorded_at = recorded_at
        self.commit_seconds = commit_seconds
        self.write_error = write_error
        self.last_position = last_position


class _BatchWriter:
    """The write transaction of a batch, and what the connection it runs on knows.

    Runs where the write connection lives: on aiosqlite's worker thread (the default
    writer) or in the writer process (`writer="process"`). Its state is that
    connection's: the streams' current versions (a cache that `PRAGMA data_version`
    invalidates when another connection commits) and the last position.
    """

    def __init__(
        self, path: str, options: StoreOptions, data_version: int, last_position: int
    ) -> None:
        self.path = path
        self.options = options
        self._data_version = data_version
        self._versions: dict[str, int] = {}
        self._last_position = last_position
        self._max_rows_per_statement = 0  # read from the connection by the first insert

    def _write_batch(
        self, conn: sqlite3.Connection, appends: Sequence[_BatchAppend], writes: list[_Write]
    ) -> _BatchResult:
        """One transaction for the whole batch, where the write connection lives (the
        connection's worker thread, or the writer process)."""
        started = time.perf_counter()
        if faults.enabled:
            faults.hit("before_begin")
        self._begin(conn)
        try:
            if faults.enabled:
                faults.hit("after_begin")
            recorded_at = time.time()
            outcomes = self._apply_appends(conn, appends, recorded_at, careful=False)
            write_error = self._apply_writes(conn, writes)
            if faults.enabled:
                faults.hit("after_insert_before_commit")
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            # Only reachable if our view of versions was wrong; redo with savepoints.
            self._rollback(conn)
            self._begin(conn)
            try:
                recorded_at = time.time()
                outcomes = self._apply_appends(conn, appends, recorded_at, careful=True)
                write_error = self._apply_writes(conn, writes)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise _translate(exc, "append") from exc
            except BaseException:
                self._rollback(conn)
                raise
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _translate(exc, "append") from exc
        except BaseException:
            self._rollback(conn)
            raise
        return _BatchResult(
            outcomes,
            recorded_at,
            time.perf_counter() - started,
            write_error,
            self._last_position,
        )

    def _begin(self, conn: sqlite3.Connection) -> None:
        for attempt in range(self.options.busy_retries + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if _code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    raise
                if attempt == self.options.busy_retries:
                    raise StoreUnavailable(
                        f"the database {self.path!r} stayed locked by another connection for"
                        f" {self.options.busy_retries + 1} x busy_timeout"
                        f" ({self.options.busy_timeout}s); nothing was written"
                    ) from exc
        data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if data_version != self._data_version:
            # Another connection committed since we last looked: forget what we knew.
            self._data_version = data_version
            self._versions.clear()
            row = conn.execute(_SELECT_LAST_POSITION).fetchone()
            self._last_position = int(row[0] or 0)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        self._versions.clear()
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute(_SELECT_LAST_POSITION).fetchone()
            self._last_position = int(row[0] or 0)
            self._data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])

    def _apply_appends(
        self,
        conn: sqlite3.Connection,
        appends: Sequence[_BatchAppend],
        recorded_at: float,
        *,
        careful: bool,
    ) -> list[_Outcome]:
        if not appends:
            return []
        known = self._known_commands(conn, appends)
        versions = self._current_versions(conn, appends, fresh=careful)
        position = self._last_position
        outcomes: list[_Outcome] = []
        # The rows of the batch, flat (one value after the other): see _insert_rows.
        event_rows: list[Any] = []
        command_rows: list[Any] = []
        plain_rows: list[Any] = []
        append_outcome = outcomes.append
        add_event_row = event_rows.extend
        add_plain_row = plain_rows.extend
        for item in appends:
            stream_id = item.stream_id
            command_id = item.command_id
            if command_id is not None:
                seen = known.get(command_id)
                if seen is not None:
                    seen_stream, seen_result, seen_digest = seen
                    if seen_stream != stream_id or seen_digest != item.digest:
                        append_outcome(IdempotencyConflict(command_id, stream_id, seen_stream))
                    else:
                        append_outcome(msgspec.structs.replace(seen_result, duplicate=True))
                    continue
            current = versions.get(stream_id, 0)
            expected = item.expected
            # expected >= NO_STREAM must equal current; STREAM_EXISTS needs current > 0.
            if (
                expected != current
                and expected != ANY
                and (expected != STREAM_EXISTS or current == 0)
            ):
                append_outcome(ConcurrencyError(stream_id, expected, current))
                continue
            metadata_bytes = item.metadata_bytes
            first_position = position + 1
            version = current
            if careful:
                rows: list[tuple[Any, ...]] = []
                for tag, schema_version, data, checksum in item.rows:
                    position += 1
                    version += 1
                    rows.append(
                        (
                            position,
                            stream_id,
                            version,
                            tag,
                            schema_version,
                            data,
                            metadata_bytes,
                            command_id,
                            recorded_at,
                            checksum,
                        )
                    )
            elif metadata_bytes is None and command_id is None:
                # A plain loop, not a comprehension: most appends carry one event, and a
                # comprehension per append costs more than the rows it builds.
                for tag, schema_version, data, checksum in item.rows:
                    position += 1
                    version += 1
                    add_plain_row(
                        (
                            position,
                            stream_id,
                            version,
                            tag,
                            schema_version,
                            data,
                            recorded_at,
                            checksum,
                        )
                    )
            else:
                for tag, schema_version, data, checksum in item.rows:
                    position += 1
                    version += 1
                    add_event_row(
                        (
                            position,
                            stream_id,
                            version,
                            tag,
                            schema_version,
                            data,
                            metadata_bytes,
                            command_id,
                            recorded_at,
                            checksum,
                        )
                    )
            if careful:
                conn.execute("SAVEPOINT append")
                try:
                    conn.executemany(_INSERT_EVENT, rows)
                except sqlite3.IntegrityError:
                    conn.execute("ROLLBACK TO append")
                    conn.execute("RELEASE append")
                    actual = int(conn.execute(_SELECT_VERSION, (stream_id,)).fetchone()[0] or 0)
                    versions[stream_id] = actual
                    position = first_position - 1
                    append_outcome(ConcurrencyError(stream_id, expected, actual))
                    continue
                conn.execute("RELEASE append")
            versions[stream_id] = version
            result = AppendResult(stream_id, current + 1, version, first_position, position)
            append_outcome(result)
            if command_id is not None:
                command_rows.extend(
                    (
                        command_id,
                        stream_id,
                        result.first_version,
                        result.last_version,
                        result.first_position,
                        result.last_position,
                        item.digest,
                        recorded_at,
                    )
                )
                known[command_id] = (stream_id, result, item.digest)
        if plain_rows:
            self._insert_rows(conn, _INSERT_PLAIN_EVENTS, 8, plain_rows)
        if event_rows:
            self._insert_rows(conn, _INSERT_EVENTS, 10, event_rows)
        if command_rows:
            self._insert_rows(conn, _INSERT_COMMANDS, 8, command_rows)
        self._last_position = position
        cache = self._versions
        if versions is not cache:
            if len(cache) > _VERSION_CACHE_LIMIT:
                cache.clear()
            cache.update(versions)
        return outcomes

    def _insert_rows(
        self, conn: sqlite3.Connection, statements: dict[int, str], width: int, flat: list[Any]
    ) -> None:
        """Insert the rows in `flat` (`width` values each) with the fewest statements."""
        rows = len(flat) // width
        most = self._max_rows_per_statement
        if most == 0:  # the connection's limit on placeholders, read once
            variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            most = self._max_rows_per_statement = max(1, variables // 10)
        done = 0
        for size in _ROWS_PER_STATEMENT:
            if size > most:
                continue
            while rows - done >= size:
                conn.execute(statements[size], flat[done * width : (done + size) * width])
                done += size

    def _known_commands(
        self, conn: sqlite3.Connection, appends: Sequence[_BatchAppend]
    ) -> dict[str, tuple[str, AppendResult, bytes | None]]:
        ids = [item.command_id for item in appends if item.command_id is not None]
        known: dict[str, tuple[str, AppendResult, bytes | None]] = {}
        for start in range(0, len(ids), _IN_LIST_CHUNK):
            chunk = _json.encode(ids[start : start + _IN_LIST_CHUNK])
            for cid, sid, fv, lv, fp, lp, digest in conn.execute(_SELECT_COMMANDS, (chunk,)):
                known[cid] = (sid, AppendResult(sid, fv, lv, fp, lp), digest)
        return known

    def _current_versions(
        self, conn: sqlite3.Connection, appends: Sequence[_BatchAppend], *, fresh: bool
    ) -> dict[str, int]:
        cache = self._versions
        missing: list[str] = []
        if fresh:
            versions: dict[str, int] = {}
            for item in appends:
                stream_id = item.stream_id
                if stream_id not in versions:
                    versions[stream_id] = 0
                    missing.append(stream_id)
        else:
            # Work in the cache itself: a failed transaction clears it (`_rollback`).
            if len(cache) > _VERSION_CACHE_LIMIT:
                cache.clear()
            versions = cache
            for item in appends:
                stream_id = item.stream_id
                if stream_id not in cache:
                    cache[stream_id] = 0
                    missing.append(stream_id)
        for start in range(0, len(missing), _IN_LIST_CHUNK):
            chunk = _json.encode(missing[start : start + _IN_LIST_CHUNK])
            for stream_id, version in conn.execute(_SELECT_VERSIONS, (chunk,)):
                versions[stream_id] = int(version)
        return versions

    def _apply_writes(self, conn: sqlite3.Connection, writes: list[_Write]) -> StoreError | None:
        if not writes:
            return None
        conn.execute("SAVEPOINT writes")
        try:
            for write in writes:
                conn.execute(write.sql, write.params)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO writes")
            conn.execute("RELEASE writes")
            return _translate(exc, "write")
        conn.execute("RELEASE writes")
        return None


class SQLiteEventStore:
    """An append-only event log in one SQLite file. Obtain one with `open_store`.

    Every method is safe to call from many tasks at once. Appends are group-committed by
    one writer task; reads use their own connection (WAL readers never block the writer).
    """

    def __init__(
        self,
        path: str,
        registry: EventRegistry,
        options: StoreOptions,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        data_version: int,
        last_position: int,
        process: anyio.abc.Process | None = None,
    ) -> None:
        self.path = path
        self.registry = registry
        self.options = options
        self._writer = writer
        self._reader = reader
        self._pending: deque[_Append | _Write] = deque()
        # Stream ids that passed `_check_stream_id` (exact str only; bounded).
        self._valid_stream_ids: set[str] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._writer_done = asyncio.Event()
        self._listeners: list[CommitListener] = []
        # what the write connection knows is current: the writer thread's state
        self._batch = _BatchWriter(path, options, data_version, last_position)
        self._last_position = last_position  # of the last batch answered
        # the writer process (writer="process"): batches sent and not yet answered
        self._process = process
        self._in_flight: deque[tuple[list[_Append], list[_Write]]] = deque()
        self._slot = asyncio.Event()
        self._failure: StoreError | None = None
        # kept here, not in the reader: a reader cancelled mid-frame resumes it
        self._frames = None
        if process is not None:
            assert process.stdout is not None  # opened with stdout=PIPE
            self._frames = _Frames(process.stdout)
        # statistics (event-loop side)
        self._appends = 0
        self._events = 0
        self._rejected = 0
        self._batches = 0
        self._commit_seconds = 0.0
        self._commit_seconds_max = 0.0
        self._snapshot_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
        self._reader_closed = False
        # The loop the store was opened on: its writer task and every future live there.
        self._loop = asyncio.get_running_loop()
        self._log = get_logger("store", path=path)

    # -- appending ----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[msgspec.Struct],
        *,
        expected_version: int,
        command_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append `events` to `stream_id` atomically, after checking its version.

        Args:
            stream_id: the stream (aggregate instance) to append to.
            events: one or more registered event structs, in order.
            expected_version: the stream's current version as the caller knows it, or
                `NO_STREAM` (must not exist), `STREAM_EXISTS`, or `ANY` (no check).
            command_id: makes the append idempotent: if an append with this id already
                committed (same stream and events), its first result is returned with
                `duplicate=True` and nothing is written.
            metadata: string key/values stored with every event of this append.

        Returns:
            Where the events landed, once they are committed (durably, under
            `synchronous=FULL`).

        Raises:
            ConcurrencyError: the stream is not at `expected_version`; nothing written.
            IdempotencyConflict: `command_id` committed before with other events.
            InvalidStreamId: `stream_id` is not one the store can take; nothing written.
            InvalidAppend: a bad append (expected version, no events, an unregistered
                type, an event that would not decode as its type (`InvalidEvent`),
                size, command id, metadata); nothing written.
            StoreFull, StoreUnavailable, StoreCorrupted: the file could not take the
                write; nothing of this append was written.
            StoreClosed: the store is closing.

        Cancellation: cancelling the caller before the writer took the append withdraws
        it; once the writer has it, it commits or fails as a unit and only the reply is
        lost. Treat a cancelled append as of unknown outcome (retry with the same
        `command_id`).
        """
        if self._closing:
            raise self._failure or StoreClosed(
                f"the store {self.path!r} is closed; append to {stream_id!r} refused"
            )
        if type(stream_id) is not str or stream_id not in self._valid_stream_ids:
            self._check_stream_id(stream_id)
        if type(expected_version) is not int or expected_version < STREAM_EXISTS:
            raise InvalidExpectedVersion(stream_id, expected_version)
        options = self.options
        count = len(events)
        if count == 0:
            raise InvalidAppend(f"append to stream {stream_id!r} carries no events")
        if count > options.max_events_per_append:
            raise TooManyEvents(stream_id, count, options.max_events_per_append)
        # The registry's encode, inlined: this loop runs once per event on the command path.
        registry = self.registry
        entries = registry._by_type
        encode = registry._encoder.encode
        limit = options.max_event_bytes
        crc32 = zlib.crc32
        rows: list[tuple[str, int, bytes, int]] = []
        for event in events:
            entry = entries.get(type(event))
            if entry is None:
                raise UnregisteredEventType(stream_id, type(event))
            try:
                data = encode(event)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidAppend(
                    f"event {type(event).__qualname__} for stream {stream_id!r} cannot be"
                    f" encoded: {exc}"
                ) from exc
            if len(data) > limit:
                raise EventTooLarge(stream_id, entry.tag, len(data), limit)
            # What a reader will do with these bytes, done now: msgspec does not check
            # field types when a struct is built, and an event stored that does not
            # decode would fail every reader of its stream.
            try:
                entry.decoder.decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                reason = str(exc)
                raise InvalidEvent(
                    stream_id, entry.tag, type(event), validation_path(reason), reason
                ) from exc
            rows.append((entry.tag, entry.schema_version, data, crc32(data)))
        meta: dict[str, str] | None = None
        meta_bytes = None
        if metadata:
            meta = _check_metadata(stream_id, metadata)
            try:
                meta_bytes = _meta_encoder.encode(meta)
            except UnicodeEncodeError as exc:
                raise InvalidAppend(
                    f"metadata for stream {stream_id!r} is not valid Unicode"
                    f" (lone surrogate): {exc}"
                ) from None
        digest = None
        if command_id is not None:
            if not isinstance(command_id, str) or not 0 < len(command_id) <= 256:
                raise InvalidAppend(
                    f"command_id for stream {stream_id!r} must be a non-empty str of at most"
                    f" 256 characters, not {command_id!r}"
                )
            try:
                command_id.encode()
            except UnicodeEncodeError:
                # Caught here, not at the INSERT, where it would fail the whole batch.
                raise InvalidAppend(
                    f"command_id {command_id!r} for stream {stream_id!r} is not valid"
                    " Unicode (lone surrogate)"
                ) from None
            digest = _digest(stream_id, rows)
        pending = self._pending
        if len(pending) >= options.max_pending_appends:
            await self._wait_for_room(stream_id)
        future: asyncio.Future[AppendResult] = _Future(loop=self._loop)
        pending.append(
            _Append(
                stream_id,
                expected_version,
                events,
                rows,
                meta,
                meta_bytes,
                command_id,
                digest,
                future,
            )
        )
        wake = self._wake
        if not wake.is_set():
            wake.set()
        return await future

    async def _wait_for_room(self, stream_id: str) -> None:
        while len(self._pending) >= self.options.max_pending_appends:
            self._room.clear()
            await self._room.wait()
            if self._closing:
                raise StoreClosed(
                    f"the store {self.path!r} closed; append to {stream_id!r} refused"
                )

    def check_stream_id(self, stream_id: object) -> None:
        """Raise `InvalidStreamId` unless this store can take `stream_id`: a non-empty,
        non-blank str of valid Unicode with no control, format or separator characters,
        of at most `max_stream_id_bytes` UTF-8 bytes. Every method taking a stream id
        checks it; call this to refuse an id before doing work of your own with it.
        Cheap for an id seen before (a set lookup).
        """
        if type(stream_id) is str and stream_id in self._valid_stream_ids:
            return
        self._check_stream_id(stream_id)

    def _check_stream_id(self, stream_id: object) -> None:
        if type(stream_id) is str and stream_id in self._valid_stream_ids:
            return
        if type(stream_id) is not str:
            raise InvalidStreamId(stream_id, "it must be a str")
        if not stream_id or stream_id.isspace():
            raise InvalidStreamId(stream_id, "it is empty or blank")
        try:
            size = len(stream_id.encode())
        except UnicodeEncodeError:
            raise InvalidStreamId(stream_id, "it is not valid Unicode (lone surrogate)") from None
        if not stream_id.isprintable():
            raise InvalidStreamId(stream_id, "it contains control, format or separator characters")
        if size > self.options.max_stream_id_bytes:
            raise InvalidStreamId(
                stream_id,
                f"it is {size} bytes long, over the limit of"
                f" {self.options.max_stream_id_bytes} (max_stream_id_bytes)",
            )
        valid = self._valid_stream_ids
        if len(valid) >= _VALID_STREAM_ID_CACHE_LIMIT:
            valid.clear()
        valid.add(stream_id)

    async def wait_settled(self) -> None:
        """Return once every append submitted before this call has committed or failed,
        including appends whose callers were cancelled while the writer held them.

        A caller that gave up on an append (cancelled) learns its outcome by reading
        after this returns. It waits for the writer's queue as far as the call, not for
        appends submitted later. Raises `StoreClosed` (or the store's failure) once the
        store no longer writes: what was queued then has been failed.
        """
        await self._enqueue_write(_SETTLED_SQL, ())

    async def _enqueue_write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._closing:
            raise self._failure or StoreClosed(f"the store {self.path!r} is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(sql, params, future))
        self._wake.set()
        await future

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call `listener` after every commit with that batch's events, in position order.

        The listener runs on the writer task, before the appenders are answered: it must
        not block or await (hand the events to a queue). An exception it raises is logged
        and otherwise ignored. Returns a function that removes the listener.
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- the writer ---------------------------------------------------------------------

    async def _run_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        pending = self._pending
        try:
            while True:
                if not pending:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                appends, writes = self._take(len(pending))
                if not appends and not writes:
                    continue
                with anyio.CancelScope(shield=True):
                    await self._commit(appends, writes)
        finally:
            self._fail_pending(StoreClosed(f"the store {self.path!r} closed before the write"))
            self._writer_done.set()

    def _take(self, most: int) -> tuple[list[_Append], list[_Write]]:
        """Take up to `most` queued items (and at most `max_batch_events` events)."""
        pending = self._pending
        max_events = self.options.max_batch_events
        appends: list[_Append] = []
        writes: list[_Write] = []
        taken = 0
        while pending and taken < max_events and most > 0:
            item = pending.popleft()
            most -= 1
            if item.future.cancelled():
                continue
            if type(item) is _Append:
                appends.append(item)
                taken += len(item.rows)
            else:
                writes.append(cast(_Write, item))
        if not self._room.is_set():
            self._room.set()
        return appends, writes

    async def _commit(self, appends: list[_Append], writes: list[_Write]) -> None:
        try:
            result = await _in_thread(self._writer, self._batch._write_batch, appends, writes)
        except Exception as exc:  # noqa: BLE001 - the batch failed as a unit: tell each caller
            _fail_batch(appends, writes, _translate(exc, "commit"))
            return
        await self._answer(appends, writes, result)

    # -- the writer process (writer="process") ------------------------------------------

    async def _run_process_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Send batches to the writer process (at most `_MAX_IN_FLIGHT` unanswered) while
        `_receive_replies` answers them, in order, as the process commits them."""
        process = self._process
        assert process is not None
        assert process.stdin is not None
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._receive_replies)
                await self._send_batches(process.stdin)
                with anyio.CancelScope(shield=True):
                    while self._in_flight and self._failure is None:
                        self._slot.clear()
                        await self._slot.wait()
                    # End of input: the process finishes and exits; the reader sees EOF.
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await process.stdin.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                self._closing = True
                if self._in_flight and self._failure is None:
                    # Cancelled with batches in flight: the process commits or fails
                    # each as a unit, as the writer thread's shielded commit does; read
                    # its answers before stopping it, so no outcome goes unreported.
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await process.stdin.aclose()
                    options = self.options
                    with anyio.move_on_after(options.busy_timeout * (options.busy_retries + 1)):
                        await self._receive_replies()
                await _stop_process(process, self.options.busy_timeout)
            error = self._failure or StoreClosed(
                f"the store {self.path!r} closed before the write was answered"
            )
            while self._in_flight:
                _fail_batch(*self._in_flight.popleft(), error)
            self._fail_pending(error)
            self._writer_done.set()

    async def _send_batches(self, stdin: anyio.abc.ByteSendStream) -> None:
        pending = self._pending
        in_flight = self._in_flight
        while self._failure is None:
            if not pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(in_flight) >= _MAX_IN_FLIGHT:
                self._slot.clear()
                await self._slot.wait()
                continue
            most = len(pending)
            free = _MAX_IN_FLIGHT - len(in_flight)
            if free > 1 and most >= 2 * _MIN_SPLIT:
                most = -(-most // free)  # share the queue out over the free slots
            appends, writes = self._take(most)
            if not appends and not writes:
                continue
            wire = _wire.AppendWire
            batch = _wire.Batch(
                [
                    wire(
                        item.stream_id,
                        item.expected,
                        item.rows,
                        item.metadata_bytes,
                        item.command_id,
                        item.digest,
                    )
                    for item in appends
                ],
                [(write.sql, list(write.params)) for write in writes],
            )
            in_flight.append((appends, writes))
            try:
                with anyio.CancelScope(shield=True):
                    await stdin.send(_wire.frame(batch))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the process is gone: the reader reports it and fails the batches

    async def _receive_replies(self) -> None:
        process, frames = self._process, self._frames
        assert process is not None
        assert frames is not None
        try:
            while (payload := await frames.next()) is not None:
                try:
                    reply = _wire.from_writer.decode(payload)
                except msgspec.DecodeError:
                    reply = None
                if not isinstance(reply, _wire.Done | _wire.Failed):
                    # Not what it must answer: stop trusting it (its batches are unknown).
                    self._log.error("store.writer_process_garbled", answer=repr(reply)[:200])
                    process.kill()
                    break
                appends, writes = self._in_flight.popleft()
                self._slot.set()
                if isinstance(reply, _wire.Done):
                    if not (reply.others or writes or self._listeners or faults.enabled):
                        self._answer_plainly(appends, reply)
                        continue
                    with anyio.CancelScope(shield=True):
                        write_error = reply.write_error
                        result = _BatchResult(
                            _outcomes(appends, reply),
                            reply.recorded_at,
                            reply.seconds,
                            None if write_error is None else _store_error(*write_error),
                            reply.last_position,
                        )
                        await self._answer(appends, writes, result)
                else:
                    _fail_batch(appends, writes, _store_error(reply.error, reply.message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        if self._in_flight or not self._closing:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.options.busy_timeout):
                await process.wait()  # its exit code, for the report
            code = process.returncode
            exited = (
                f"the writer process of the store {self.path!r} exited"
                f"{'' if code is None else f' (code {code})'}"
            )
            sent = sum(len(appends) + len(writes) for appends, writes in self._in_flight)
            self._failure = StoreUnavailable(f"{exited}; the store takes no more writes: reopen it")
            self._closing = True
            self._log.error("store.writer_process_failed", returncode=code, in_flight=sent)
            unknown = StoreUnavailable(
                f"{exited} while it held this write: its outcome is unknown (one of {sent}"
                " sent to it); reopen the store and retry with the same command id"
            )
            while self._in_flight:
                _fail_batch(*self._in_flight.popleft(), unknown)
            self._fail_pending(self._failure)
            self._slot.set()
            self._wake.set()

    def _answer_plainly(self, appends: list[_Append], done: _wire.Done) -> None:
        """`_answer` for the writer process's common batch (every append committed, no
        keyed write, no commit listener, no fault rule): built and answered in one pass."""
        self._last_position = done.last_position
        for item, (first_version, last_version, first_position, last_position) in zip(
            appends, done.results, strict=True
        ):
            future = item.future
            if not future.done():
                future.set_result(
                    AppendResult(
                        item.stream_id, first_version, last_version, first_position, last_position
                    )
                )
        # Every append committed, so their positions are one contiguous run.
        events = done.results[-1][3] - done.results[0][2] + 1 if appends else 0
        self._count(len(appends), events, 0, [], done.seconds)

    async def _answer(
        self, appends: list[_Append], writes: list[_Write], result: _BatchResult
    ) -> None:
        self._last_position = result.last_position
        if result.write_error is not None:
            for write in writes:
                if not write.future.done():
                    write.future.set_exception(result.write_error)
        else:
            for write in writes:
                if not write.future.done():
                    write.future.set_result(None)
        if faults.enabled:
            await faults.hit_async("after_commit_before_publish")
        outcomes = result.outcomes
        listeners = self._listeners
        committed = 0
        events = 0
        rejected = 0
        if listeners:
            # Listeners see the batch before any appender is answered.
            published: list[RecordedEvent] = []
            recorded_at = result.recorded_at
            for item, outcome in zip(appends, outcomes, strict=True):
                if isinstance(outcome, AppendResult):
                    if not outcome.duplicate:
                        committed += 1
                        events += len(item.rows)
                        _recorded(item, outcome, recorded_at, published)
                else:
                    rejected += 1
            self._count(committed, events, rejected, writes, result.commit_seconds)
            if published:
                for listener in tuple(listeners):
                    try:
                        listener(published)
                    except Exception:  # noqa: BLE001 - isolated and reported; the writer goes on
                        self._log.error(
                            "store.listener_failed", listener=repr(listener), exc_info=True
                        )
            if faults.enabled:
                await faults.hit_async("after_commit_before_reply")
            for item, outcome in zip(appends, outcomes, strict=True):
                future = item.future
                if not future.done():
                    if isinstance(outcome, AppendResult):
                        future.set_result(outcome)
                    else:
                        future.set_exception(outcome)
            return
        # No listener: count and answer in one pass.
        if faults.enabled:
            await faults.hit_async("after_commit_before_reply")
        for item, outcome in zip(appends, outcomes, strict=True):
            future = item.future
            if isinstance(outcome, AppendResult):
                if not outcome.duplicate:
                    committed += 1
                    events += len(item.rows)
                if not future.done():
                    future.set_result(outcome)
            else:
                rejected += 1
                if not future.done():
                    future.set_exception(outcome)
        self._count(committed, events, rejected, writes, result.commit_seconds)

    def _count(
        self, committed: int, events: int, rejected: int, writes: list[_Write], seconds: float
    ) -> None:
        self._rejected += rejected
        if committed or writes:
            self._batches += 1
            self._appends += committed
            self._events += events
            self._commit_seconds += seconds
            self._commit_seconds_max = max(self._commit_seconds_max, seconds)

    def _fail_pending(self, error: StoreError) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(error)
        self._room.set()

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
        if limit is not None:
            page = self._limit(call, limit)
            return await self._read(_READ_STREAM, (stream_id, low, high, page))
        cap = self.options.max_read_limit
        rows = await self._read(_READ_STREAM, (stream_id, low, high, cap + 1))
        if len(rows) > cap:
            raise ReadTooLarge(stream_id, low, cap)
        return rows

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
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise NaiveDatetime(f"read_stream_until({stream_id!r})", at)
            moment = at.timestamp()
        elif type(at) in (int, float) and not math.isnan(at):
            moment = float(at)
        else:
            raise InvalidReadArgument(
                f"read_stream_until({stream_id!r})",
                "at",
                at,
                "an aware datetime or POSIX seconds (an int or float, not NaN)",
            )
        if limit is not None:
            self._limit(f"read_stream_until({stream_id!r})", limit)
        first_after = await self._scalar(_FIRST_VERSION_AFTER, (stream_id, moment))
        to_version = _MAX_VERSION if first_after is None else int(first_after) - 1
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
        page = self._limit(call, limit)
        if event_types is not None:
            tags = _tags(event_types)
            if tags is None:
                raise InvalidReadArgument(
                    call, "event_types", event_types, "a sequence of str tags (valid Unicode)"
                )
            event_types = tags
        if stream_prefix is not None and (
            type(stream_prefix) is not str or not _encodable(stream_prefix)
        ):
            raise InvalidReadArgument(
                call, "stream_prefix", stream_prefix, "a str (valid Unicode) or None"
            )
        if event_types is not None and stream_prefix:
            types = _json.encode(list(event_types))
            return await self._read(
                _READ_ALL_TYPES_PREFIX,
                (low, high, types, len(stream_prefix), stream_prefix, page),
            )
        if event_types is not None:
            return await self._read(
                _READ_ALL_TYPES, (low, high, _json.encode(list(event_types)), page)
            )
        if stream_prefix:
            return await self._read(
                _READ_ALL_PREFIX, (low, high, len(stream_prefix), stream_prefix, page)
            )
        return await self._read(_READ_ALL, (low, high, page))

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        self._check_stream_id(stream_id)
        value = await self._scalar(_SELECT_VERSION, (stream_id,))
        return int(value or 0)

    async def last_position(self) -> int:
        """The highest committed position in the file (0 when empty), whoever wrote it."""
        value = await self._scalar(_SELECT_LAST_POSITION, ())
        return int(value or 0)

    async def find_command(self, command_id: str) -> AppendResult | None:
        """The result of the committed append with `command_id`, or None.

        Raises:
            InvalidReadArgument: `command_id` is not one an append could have used.
        """
        if (
            type(command_id) is not str
            or not 0 < len(command_id) <= 256
            or not _encodable(command_id)
        ):
            raise InvalidReadArgument(
                "find_command",
                "command_id",
                command_id,
                "a non-empty str of at most 256 characters (valid Unicode)",
            )
        row = await self._row(_SELECT_COMMAND, (command_id,))
        if row is None:
            return None
        stream_id, first_version, last_version, first_position, last_position = row
        return AppendResult(
            stream_id, first_version, last_version, first_position, last_position, duplicate=True
        )

    def _limit(self, call: str, limit: int | None) -> int:
        cap = self.options.max_read_limit
        if limit is None:
            return cap
        if type(limit) is not int or limit < 1:
            raise InvalidReadArgument(call, "limit", limit, "a positive int (a page size)")
        return min(limit, cap)

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        self._check_readable()
        decode = self._decode_rows

        def run(conn: sqlite3.Connection) -> list[RecordedEvent]:
            return decode(conn.execute(sql, params).fetchall())

        return await self._read_call(run)

    async def _scalar(self, sql: str, params: tuple[Any, ...]) -> Any:
        row = await self._row(sql, params)
        return None if row is None else row[0]

    async def _row(self, sql: str, params: tuple[Any, ...]) -> Any:
        self._check_readable()

        def run(conn: sqlite3.Connection) -> Any:
            return conn.execute(sql, params).fetchone()

        return await self._read_call(run)

    async def _read_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # A read can meet a lock or a WAL-index race it could not wait out (SQLITE_BUSY,
        # SQLITE_PROTOCOL) when other processes write hard; a read has no side effect,
        # so it is simply tried again a few times before the error is reported.
        for attempt in range(_READ_RETRIES + 1):
            try:
                return await _in_thread(self._reader, fn)
            except StoreError:
                raise
            except sqlite3.OperationalError as exc:
                if _code(exc) not in _RETRYABLE_READ or attempt == _READ_RETRIES:
                    raise _translate(exc, "read") from exc
            except sqlite3.Error as exc:
                raise _translate(exc, "read") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_readable(self) -> None:
        if self._reader_closed:
            raise StoreClosed(f"the store {self.path!r} is closed")

    def _decode_rows(self, rows: list[Any]) -> list[RecordedEvent]:
        decode = self.registry.decode
        out: list[RecordedEvent] = []
        append = out.append
        crc32 = zlib.crc32
        for position, stream_id, version, tag, schema_version, data, meta, cid, at, crc in rows:
            if type(data) is not bytes or crc32(data) != crc:
                raise CorruptEvent.at(
                    stream_id, version, tag, schema_version, "its payload fails its checksum"
                )
            try:
                event = decode(tag, schema_version, data)
                metadata = _meta_decoder.decode(meta) if meta else {}
            except LookupError:
                raise UnknownEventType.at(stream_id, version, tag, schema_version) from None
            except UpcasterFailed as exc:
                raise EventDecodeError(
                    f"stream {stream_id!r} version {version} ({tag!r} schema {schema_version})"
                    f" cannot be read: {exc}; fix that upcaster",
                    stream_id,
                    version,
                    tag,
                    schema_version,
                ) from exc
            except (
                msgspec.DecodeError,
                msgspec.ValidationError,
                TypeError,
                UnicodeDecodeError,
            ) as exc:
                raise CorruptEvent.at(stream_id, version, tag, schema_version, str(exc)) from exc
            append(
                RecordedEvent(
                    stream_id, version, position, tag, schema_version, event, metadata, at, cid
                )
            )
        return out

    # -- snapshots and checkpoints ------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, state: object, *, schema_version: int = 1
    ) -> None:
        """Save `state` as the state of `stream_id` at `version` (replacing an older one).

        `schema_version` names the state's shape: `load_snapshot` ignores a snapshot saved
        with another shape version or type, so a changed state type falls back to replay.

        Raises:
            InvalidStreamId: a bad stream id.
            InvalidSnapshot: a bad version or schema version, or a state that cannot be
                encoded or would not load back as its type (`load_snapshot` would throw
                it away); nothing was written.
        """
        self._check_stream_id(stream_id)
        if type(version) is not int or not 0 <= version <= _MAX_VERSION:
            raise InvalidSnapshot(
                stream_id, f"its version must be an int from 0 to 2**62, not {version!r}"
            )
        if type(schema_version) is not int or not 1 <= schema_version <= _MAX_VERSION:
            raise InvalidSnapshot(
                stream_id,
                f"its schema_version must be an int from 1 to 2**62, not {schema_version!r}",
            )
        state_type = type(state)
        try:
            data = self.registry.encode_state(state)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidSnapshot(
                stream_id, f"its state {state_type.__qualname__} cannot be encoded: {exc}"
            ) from exc
        # What `load_snapshot(stream_id, type(state))` will do with these bytes, done now.
        try:
            self._snapshot_decoder(state_type).decode(data)
        except (TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            reason = str(exc)
            raise InvalidSnapshot(
                stream_id,
                f"its state {state_type.__qualname__} would not load back as its type:"
                f" {reason}; build it with values of the declared field types",
                top_field(validation_path(reason)),
            ) from exc
        if faults.enabled:
            await faults.hit_async("snapshot_write")
        await self._enqueue_write(
            _UPSERT_SNAPSHOT,
            (
                stream_id,
                version,
                _type_name(type(state)),
                schema_version,
                data,
                zlib.crc32(data),
                time.time(),
            ),
        )

    async def load_snapshot(
        self, stream_id: str, state_type: type[S], *, schema_version: int = 1
    ) -> Snapshot[S] | None:
        """The latest snapshot of `stream_id` if it has `state_type` at `schema_version`
        and decodes cleanly; otherwise None (replay the stream from its start)."""
        self._check_stream_id(stream_id)
        row = await self._row(_SELECT_SNAPSHOT, (stream_id,))
        if row is None:
            return None
        version, type_name, stored_schema, data, checksum, recorded_at = row
        if type_name != _type_name(state_type) or stored_schema != schema_version:
            return None
        if type(data) is not bytes or zlib.crc32(data) != checksum:
            self._log.warning("store.snapshot_corrupt", stream_id=stream_id, version=version)
            return None
        try:
            state = self._snapshot_decoder(state_type).decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._log.warning("store.snapshot_undecodable", stream_id=stream_id, version=version)
            return None
        return Snapshot(stream_id, int(version), state, int(stored_schema), float(recorded_at))

    def _snapshot_decoder(self, state_type: type[Any]) -> msgspec.msgpack.Decoder[Any]:
        """The decoder of snapshots of `state_type`, built once (TypeError: msgspec
        cannot decode that type)."""
        decoder = self._snapshot_decoders.get(state_type)
        if decoder is None:
            decoder = self._snapshot_decoders[state_type] = msgspec.msgpack.Decoder(state_type)
        return decoder

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that subscriber `name` has handled everything up to `position`.

        Raises:
            InvalidCheckpoint: `name` is not a non-empty str of valid Unicode, or
                `position` not an int from 0 to 2**62; nothing was written.
        """
        _check_checkpoint_name(name)
        if type(position) is not int or not 0 <= position <= _MAX_VERSION:
            raise InvalidCheckpoint(
                name, f"its position must be an int from 0 to 2**62, not {position!r}"
            )
        if faults.enabled:
            await faults.hit_async("checkpoint_write")
        await self._enqueue_write(_UPSERT_CHECKPOINT, (name, position, time.time()))

    async def load_checkpoint(self, name: str) -> int:
        """The last position saved for subscriber `name` (0 when none).

        Raises:
            InvalidCheckpoint: `name` is not a non-empty str of valid Unicode.
        """
        _check_checkpoint_name(name)
        value = await self._scalar(_SELECT_CHECKPOINT, (name,))
        return int(value or 0)

    async def backup(self, path: str | os.PathLike[str]) -> int:
        """Copy a consistent snapshot of the store into a new SQLite file at `path`.

        The copy uses SQLite's online backup API on the reader connection in one step,
        inside one read transaction: it holds every transaction committed before it
        started and none after, while appends go on. The copy opens with `open_store`.

        Args:
            path: the new file; it must not exist yet.

        Returns:
            The last position in the copy (0 for an empty store).

        Raises:
            FileExistsError: `path` already exists (a backup never overwrites a file).
            StoreClosed: the store is closed.
            StoreError: SQLite failed the copy (the partial file is removed).

        Cancellation: the copy runs on the reader's thread and completes; the caller
        stops waiting for it.
        """
        target = os.fspath(path)
        self._check_readable()

        def run(conn: sqlite3.Connection) -> int:
            try:  # created empty, exclusively: a backup never overwrites a file
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                raise FileExistsError(f"backup target {target!r} already exists") from None
            copy = sqlite3.connect(target)
            try:
                conn.backup(copy)
                row = copy.execute(_SELECT_LAST_POSITION).fetchone()
            except BaseException:
                copy.close()
                with contextlib.suppress(OSError):
                    os.remove(target)
                raise
            copy.close()
            return int(row[0] or 0) if row is not None else 0

        return await self._read_call(run)

    # -- statistics and lifecycle -------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        """Counters since the store was opened (a frozen snapshot)."""
        batches = self._batches
        return StoreStatistics(
            appends=self._appends,
            events=self._events,
            rejected=self._rejected,
            batches=batches,
            events_per_batch=self._events / batches if batches else 0.0,
            appends_per_batch=self._appends / batches if batches else 0.0,
            commit_ms_mean=1000 * self._commit_seconds / batches if batches else 0.0,
            commit_ms_max=1000 * self._commit_seconds_max,
            pending=len(self._pending),
            last_position=self._last_position,
        )

    @property
    def closed(self) -> bool:
        """Whether the store stopped accepting appends."""
        return self._closing

    async def _drain_and_close(self) -> None:
        self._closing = True
        self._wake.set()
        self._room.set()
        await self._writer_done.wait()


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` as one call on the connection's worker thread.

    aiosqlite's public API costs one thread hop per statement; a batch transaction is
    several statements, so the store hands the whole unit of work over at once.
    """
    raw: sqlite3.Connection = conn._conn
    # aiosqlite leaves _execute unannotated; it returns what fn returns.
    return cast(T, await conn._execute(fn, raw, *args))  # type: ignore[no-untyped-call]


def _fail_batch(appends: list[_Append], writes: list[_Write], error: StoreError) -> None:
    for item in appends:
        if not item.future.done():
            item.future.set_exception(error)
    for write in writes:
        if not write.future.done():
            write.future.set_exception(error)


def _outcomes(appends: list[_Append], done: _wire.Done) -> list[_Outcome]:
    """The writer process's outcomes (see `store._wire.Done`) as the thread's."""
    outcomes: list[_Outcome] = [
        AppendResult(item.stream_id, *numbers)
        for item, numbers in zip(appends, done.results, strict=True)
    ]
    for index, kind, text, a, b in done.others:
        item = appends[index]
        if kind == "duplicate":
            outcomes[index] = AppendResult(item.stream_id, *done.results[index], duplicate=True)
        elif kind == "conflict":
            outcomes[index] = ConcurrencyError(item.stream_id, a, b)
        elif kind == "idempotency":
            outcomes[index] = IdempotencyConflict(cast(str, item.command_id), item.stream_id, text)
        else:
            outcomes[index] = _store_error(kind, text)
    return outcomes


_ERRORS_BY_NAME: Final[dict[str, type[StoreError]]] = {
    cls.__name__: cls for cls in (StoreError, StoreFull, StoreCorrupted, StoreUnavailable)
}


def _store_error(name: str, message: str) -> StoreError:
    """An error the writer process reported (its class by name, its message)."""
    return _ERRORS_BY_NAME.get(name, StoreError)(message)


class _Frames:
    """The frames (`store._wire`) of the writer process's output, as payloads."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next frame's payload, or None at end of output."""
        buffer = self._buffer
        header = _wire.HEADER.size
        while True:
            if len(buffer) >= header:
                (size,) = _wire.HEADER.unpack_from(buffer)
                end = header + size
                if len(buffer) >= end:
                    payload = bytes(buffer[header:end])
                    del buffer[:end]
                    return payload
            try:
                buffer += await self._stream.receive()
            except anyio.EndOfStream:
                return None


async def _start_process(path: str, options: StoreOptions) -> anyio.abc.Process:
    """Start the writer process and wait until its connection is open."""
    env = dict(os.environ)
    # The child imports this package the way this process did.
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
    # The fault rules this process runs with now (not those it was started with, which
    # it may have replaced) apply to the writer's points too; "" means none.
    spec, seed = faults.current()
    env[faults.ENV], env[faults.SEED_ENV] = spec, str(seed)
    process = await anyio.open_process(
        [sys.executable, "-m", "store._writer_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        env=env,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        await process.stdin.send(_wire.frame(_wire.Setup(path, dataclasses.asdict(options))))
        payload = await _Frames(process.stdout).next()
        ready = None if payload is None else _wire.from_writer.decode(payload)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _stop_process(process, 0)
        raise
    if not isinstance(ready, _wire.Ready):
        with anyio.CancelScope(shield=True):
            code = await _stop_process(process, options.busy_timeout)
        raise StoreUnavailable(
            f"the writer process for the store {path!r} did not start (exit code {code});"
            " its error is on standard error"
        )
    return process


async def _stop_process(process: anyio.abc.Process, grace: float) -> int | None:
    """Close the process's input, wait for it to exit (killing it after `grace`
    seconds) and close its output; returns its exit code."""
    if process.stdin is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
    return process.returncode


def _recorded(
    item: _Append, result: AppendResult, recorded_at: float, out: list[RecordedEvent]
) -> None:
    stream_id = item.stream_id
    # Built only when a listener exists; one dict per append, shared by its events.
    metadata = {} if item.metadata is None else item.metadata
    command_id = item.command_id
    version = result.first_version
    position = result.first_position
    for event, (tag, schema_version, _data, _crc) in zip(item.events, item.rows, strict=True):
        out.append(
            RecordedEvent(
                stream_id,
                version,
                position,
                tag,
                schema_version,
                event,
                metadata,
                recorded_at,
                command_id,
            )
        )
        version += 1
        position += 1


def _bound(call: str, name: str, value: object) -> int:
    """A version or position argument of a read, clamped to what SQLite can bind."""
    if type(value) is not int:
        raise InvalidReadArgument(call, name, value, "an int")
    return max(-_MAX_VERSION, min(value, _MAX_VERSION))


def _check_checkpoint_name(name: object) -> None:
    if type(name) is not str or not name:
        raise InvalidCheckpoint(name, "its name must be a non-empty str")
    if not _encodable(name):
        # Caught here, not at the INSERT, where it would fail the whole batch.
        raise InvalidCheckpoint(name, "its name is not valid Unicode (lone surrogate)")


def _encodable(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate), so SQLite can bind it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _tags(values: object) -> list[str] | None:
    """`values` as a list of str tags of valid Unicode, or None if it is not one (a
    str is one tag, not a sequence of them: refused too)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return None
    tags = list(values)
    if all(type(t) is str and _encodable(t) for t in tags):
        return tags
    return None


def _check_metadata(stream_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
    out = dict(metadata)
    for key, value in out.items():
        if type(key) is not str or type(value) is not str:
            raise InvalidAppend(
                f"metadata for stream {stream_id!r} must map str to str;"
                f" got {key!r}: {type(value).__name__}"
            )
    return out


def _digest(stream_id: str, rows: Sequence[tuple[str, int, bytes, int]]) -> bytes:
    h = hashlib.blake2b(stream_id.encode(), digest_size=16)
    for tag, schema_version, data, _crc in rows:
        h.update(b"\x00%s\x00%d\x00" % (tag.encode(), schema_version))
        h.update(data)
    return h.digest()


def _type_name(tp: type[Any]) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _translate(exc: BaseException, what: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if not isinstance(exc, sqlite3.Error):
        return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")
    code = _code(exc)
    if code == _SQLITE_FULL:
        return StoreFull(f"{what} failed, the database is full ({exc}); nothing was written")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupted(f"{what} failed, the database file is damaged: {exc}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreUnavailable(
            f"{what} failed, another connection held the database lock too long: {exc}"
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR):
        return StoreUnavailable(f"{what} failed, the database file cannot be written: {exc}")
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")


def _prepare_file(path: str) -> None:
    if path == ":memory:":
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise StoreUnavailable(f"cannot open the store {path!r}: its directory does not exist")
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the store {path!r}: {exc.strerror}") from exc
    os.close(fd)


def _configure(conn: sqlite3.Connection, options: StoreOptions, memory: bool) -> None:
    # busy_timeout is set by sqlite3.connect(timeout=...): PRAGMAs take no parameters.
    if not memory:
        mode = _switch_to_wal(conn, options.busy_timeout)
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"could not switch the database to WAL mode (got {mode!r})")
    conn.execute(_SYNCHRONOUS[options.synchronous])
    conn.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache per connection
    conn.execute("PRAGMA temp_store = MEMORY")
    # A long reader keeps the WAL from being recycled, so it grows; once a checkpoint
    # has folded it back, the next write truncates the file to this size (64 MiB)
    # instead of keeping its high-water mark until the store closes.
    conn.execute("PRAGMA journal_size_limit = 67108864")


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> object:
    # Two processes opening a new file at once both hold a shared lock and want an
    # exclusive one to switch it to WAL; SQLite answers one of them SQLITE_BUSY at once,
    # without the busy handler (it would deadlock). Try again within busy_timeout: by
    # then the other has switched the file, and the switch is a no-op.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if _code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # on the connection's own thread, while opening


_SYNCHRONOUS: Final = {"FULL": "PRAGMA synchronous = FULL", "NORMAL": "PRAGMA synchronous = NORMAL"}


async def _connect(path: str, options: StoreOptions, *, memory: bool) -> aiosqlite.Connection:
    conn = aiosqlite.connect(path, isolation_level=None, timeout=options.busy_timeout)
    try:
        # Shielded: a cancellation here would strand the connection the worker thread is
        # opening (aiosqlite drops it without closing it). Opening takes no lock, so it
        # is quick; the configuration below is the cancellation point.
        with anyio.CancelScope(shield=True):
            opened = await conn
    except sqlite3.Error as exc:
        with anyio.CancelScope(shield=True):
            await conn.close()
        raise _translate(exc, f"opening {path!r}") from exc
    try:
        await _in_thread(opened, _configure, options, memory)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await opened.close()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, f"opening {path!r}") from exc
        raise
    return opened


@contextlib.asynccontextmanager
async def open_store(
    path: str | os.PathLike[str],
    *,
    registry: EventRegistry | None = None,
    **options: Any,
) -> AsyncIterator[SQLiteEventStore]:
    """Open (creating and migrating it if needed) the event store in SQLite file `path`.

    Args:
        path: a file path (created with mode 0600), or ":memory:" for a private
            in-memory store that lives as long as the context.
        registry: the event types the store can append and read (a new, empty one if
            omitted; register types on `store.registry`).
        **options: fields of `StoreOptions` (`synchronous`, `busy_timeout`, limits...).

    On exit the writer commits every append it has accepted, the WAL is checkpointed
    and both connections are closed; appends made after exit raise `StoreClosed`.

    Raises:
        StoreUnavailable: the file or its directory cannot be opened or written.
        StoreCorrupted: the file is not a SQLite database or is damaged.
    """
    opts = StoreOptions(**options)
    path = os.fspath(path)
    memory = path == ":memory:"
    if memory and opts.writer == "process":
        raise ValueError(
            "writer='process' needs a database file: a ':memory:' database lives in one"
            " connection, which another process cannot share"
        )
    _prepare_file(path)
    writer = await _connect(path, opts, memory=memory)
    reader = writer
    process = None
    try:
        await _in_thread(writer, _migrate)
        if not memory:
            reader = await _connect(path, opts, memory=False)
        data_version, last_position = await _in_thread(writer, _state)
        if opts.writer == "process":
            process = await _start_process(path, opts)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await writer.close()
            if reader is not writer:
                await reader.close()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, f"opening {path!r}") from exc
        if isinstance(exc, RuntimeError):
            raise StoreUnavailable(str(exc)) from exc
        raise
    store = SQLiteEventStore(
        path,
        registry or EventRegistry(),
        opts,
        writer,
        reader,
        data_version,
        last_position,
        process,
    )
    store._log.info("store.opened", synchronous=opts.synchronous, position=last_position)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store._run_writer if process is None else store._run_process_writer)
            try:
                yield store
            finally:
                with anyio.CancelScope(shield=True):
                    await store._drain_and_close()
    except BaseExceptionGroup as group:
        # The writer task does not raise, so the group wraps the error the caller's own
        # `async with` body raised: hand that back as it was raised, not wrapped.
        if len(group.exceptions) != 1 or not isinstance(group.exceptions[0], Exception):
            raise
        _reraise(group.exceptions[0])
    finally:
        with anyio.CancelScope(shield=True):
            store._reader_closed = True
            if not memory:
                with contextlib.suppress(Exception):
                    await _in_thread(writer, _checkpoint_wal)
            if reader is not writer:
                await reader.close()
            await writer.close()
        store._log.info("store.closed", position=store._last_position)


def _reraise(error: Exception) -> NoReturn:
    """Raise `error` again, keeping the context it had (not the group it came out of)."""
    context, suppress = error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__context__, error.__suppress_context__ = context, suppress
        del error, context


def _migrate(conn: sqlite3.Connection) -> int:
    return migrate(conn)


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
    last = conn.execute(_SELECT_LAST_POSITION).fetchone()[0]
    return data_version, int(last or 0)


def _checkpoint_wal(conn: sqlite3.Connection) -> None:
    # Fold the WAL back into the file if no other connection is using it, without
    # waiting: with busy_timeout, TRUNCATE waits out every other process's readers and
    # writer, so closing took busy_timeout whenever another process had the file open.
    # If it cannot run now, the last connection to close checkpoints the WAL anyway.
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
