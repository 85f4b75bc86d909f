"""The SQLite event store: WAL, one writer with group commit, a separate reader.

The writer owns the write connection. Every append waiting when it wakes goes into one
`BEGIN IMMEDIATE ... COMMIT` (`_BatchWriter`, store/_sqlite_batch.py), run as a single
call on aiosqlite's worker thread, or in the writer process (store/_sqlite_process.py),
so the per-commit cost (fsync under `synchronous=FULL`) and the thread hop are paid per
batch, not per append. Callers' futures resolve only after `COMMIT` returned. The queue
and answering callers are `GroupCommitStore`'s (store/_groupcommit.py); this module has
the reads, snapshots, checkpoints and backup, and opening the store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, TypeVar, Unpack

import aiosqlite
import anyio
import anyio.abc

from store import _sqlite_batch
from store._batch import _Append, _BatchResult, _Write
from store._codec import EventRegistry
from store._decode import _decode_groups, _decode_rows
from store._errors import EventDecodeError, StoreClosed, StoreError, StoreUnavailable
from store._options import StoreOptions, StoreSettings, resolve_options
from store._prepare import Fence
from store._records import Lease, RecordedEvent
from store._schema import migrate
from store._sqlite_batch import _SELECT_LAST_POSITION, _BatchWriter, _json
from store._sqlite_connect import (
    _checkpoint_wal,
    _connect,
    _in_thread,
    _open_loop_reader,
    _prepare_file,
    _state,
)
from store._sqlite_errors import _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_PROTOCOL, _code, _translate
from store._sqlite_process import _ProcessWriter, _start_process
from store._sqlite_rows import _SELECT_VERSION
from store._sqlite_watch import Watcher

__all__ = ["SQLiteEventStore", "open_sqlite_store"]

T = TypeVar("T")
S = TypeVar("S")

ForeignListener = Callable[[int, int, Sequence[RecordedEvent]], None]
"""`SQLiteEventStore.add_foreign_listener`'s listener: (first, last, events)."""

_READ_STREAM: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
# Several streams' pages in one statement: the ranges come as a JSON array of
# [stream id, low, high] (one bound value however many streams), each matched on the
# (stream_id, version) index.
_READ_STREAMS: Final = (
    "SELECT e.position, e.stream_id, e.version, e.event_type, e.schema_version, e.data,"
    " e.metadata, e.command_id, e.recorded_at, e.checksum FROM json_each(?) AS w"
    " JOIN events AS e ON e.stream_id = json_extract(w.value, '$[0]')"
    " AND e.version >= json_extract(w.value, '$[1]')"
    " AND e.version <= json_extract(w.value, '$[2]')"
    " ORDER BY e.stream_id, e.version"
)
_GROUP_READ: Final = (_READ_STREAMS, _READ_STREAM)
"""`read_streams`' statement, by whether it reads one stream (`_READ_STREAM`'s parameters)."""
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
# Leases. Times are this host's time.time(), bound by the caller. Acquire: a new row at
# epoch 1; an existing one only if its owner asks again (unexpired: same epoch) or it
# has expired (the next epoch). SET reads the row as it was before the update.
_ACQUIRE_LEASE: Final = (
    "INSERT INTO leases (name, owner, epoch, expires_at, updated_at) VALUES (?, ?, 1, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET"
    " epoch = CASE WHEN owner = excluded.owner AND expires_at > excluded.updated_at"
    " THEN epoch ELSE epoch + 1 END,"
    " owner = excluded.owner, expires_at = excluded.expires_at,"
    " updated_at = excluded.updated_at"
    " WHERE owner = excluded.owner OR expires_at <= excluded.updated_at"
    " RETURNING name, owner, epoch, expires_at"
)
_RENEW_LEASE: Final = (
    "UPDATE leases SET expires_at = ?, updated_at = ? WHERE name = ? AND owner = ? AND epoch = ?"
    " RETURNING name, owner, epoch, expires_at"
)
_RELEASE_LEASE: Final = (
    "UPDATE leases SET expires_at = min(expires_at, ?1), updated_at = ?1"
    " WHERE name = ?2 AND owner = ?3 AND epoch = ?4"
)
_READ_LEASES: Final = (
    "SELECT name, owner, epoch, expires_at FROM leases WHERE substr(name, 1, ?) = ? ORDER BY name"
)
_SELECT_COMMAND: Final = (
    "SELECT stream_id, first_version, last_version, first_position, last_position"
    " FROM commands WHERE command_id = ?"
)
_RETRYABLE_READ: Final = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_PROTOCOL})
_READ_RETRIES: Final = 3
_MAX_GATHERING: Final = 0.004
"""The longest the writer lets its queue grow before a batch (`_gathering`), seconds."""
_GATHER_FROM: Final = 16
"""The fewest appends of the last batch for the writer to let its queue grow."""
_LOOP_READ_MAX_PAGE: Final = 1_000
"""The largest page a group read makes on the event loop's thread (`loop_reads`); a
larger one goes to the reader thread, so a loop read stays short."""


class SQLiteEventStore(_ProcessWriter):
    """An append-only event log in one SQLite file. Obtain one with `open_store`.

    Every method is safe to call from many tasks at once. Appends are group-committed by
    one writer task; reads use their own connection (WAL readers never block the writer).
    """

    # The thread writer decides a stale append again in its transaction (the writer
    # process never decides one again, so none of its appends becomes stale).
    _redecides_stale = True

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
        super().__init__(path, registry, options, last_position, process)
        self._writer = writer
        self._reader = reader
        # what the write connection knows is current: the writer thread's state
        self._batch = _BatchWriter(path, options, data_version, last_position)
        self._reader_closed = False
        # reads on the event loop's thread (`loop_reads`): opened by the first one,
        # used only on the thread that opened it
        self._loop_reader: sqlite3.Connection | None = None
        self._loop_thread = 0
        self._loop_reads = options.loop_reads and path != ":memory:"
        self._watcher: Watcher | None = None  # started by the first `wait_for_commit`
        self._foreign_listeners: list[ForeignListener] = []
        if process is None:
            # The appends decide again in the transaction where they live (the thread).
            self._batch.redecide = self._preparer.redecided
            self._batch.decode = self._decode_foreign

    # -- other processes' commits, as the writer meets them ------------------------------

    def add_foreign_listener(self, listener: ForeignListener) -> Callable[[], None]:
        """Call `listener(first, last, events)` on the event loop with the commits of
        other connections (other processes) the writer met as it began a batch:
        positions `first` to `last`, all committed by others, `events` those of them
        this process decodes (a follower skips the others too). Only the thread writer
        on a file meets them; a batch that fails to decode is not handed on (a read of
        the store reports it). It must not block; an exception it raises is logged and
        otherwise ignored. Returns a function that removes the listener.
        """
        listeners = self._foreign_listeners
        listeners.append(listener)
        if self._process is None and self.path != ":memory:":
            # The thread writer reads and decodes the events themselves only while
            # someone takes them (else their versions only).
            self._batch.on_foreign = self._foreign_from_writer

        def remove() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(listener)
            if not listeners:
                self._batch.on_foreign = None

        return remove

    def _decode_foreign(self, rows: list[Any]) -> list[RecordedEvent]:
        """On the writer's thread: the events of other processes' `rows` this process
        decodes (of the types its registry knows; a follower skips the others too)."""
        known = set(self.registry.tags())
        return self._decode_rows([row for row in rows if row[3] in known])

    def _foreign_from_writer(self, first: int, last: int, events: list[RecordedEvent]) -> None:
        """On the writer's thread, as it begins a batch: hand the events to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._hand_foreign, first, last, events)

    def _hand_foreign(self, first: int, last: int, events: list[RecordedEvent]) -> None:
        listeners = self._foreign_listeners
        for listener in tuple(listeners):
            try:
                listener(first, last, events)
            except Exception:  # noqa: BLE001 - isolated and reported
                self._log.error("store.listener_failed", listener=repr(listener), exc_info=True)

    async def _commit_batch(self, appends: list[_Append], writes: list[_Write]) -> _BatchResult:
        return await _in_thread(self._writer, self._batch._write_batch, appends, writes)

    def _gathering(self, queued: int) -> float:
        """When the last batch waited for another process's write lock, and was not
        small, wait as long (at most `_MAX_GATHERING`) before taking the next: that
        lock is most likely still held, and the appends that come meanwhile join the
        batch instead of waiting for the one after (under two processes busy on one
        file the batches were half as large, each transaction costing about the same).
        A small batch is taken at once: few appends would come meanwhile; and so is a
        queue already holding as many items (`queued`) as the last batch took appends:
        its callers all came (as when each batch answers every command in flight, and
        they all send their next before the writer runs), and waiting would only idle
        the process."""
        batch = self._batch
        if batch.last_appends < _GATHER_FROM or queued >= batch.last_appends:
            return 0.0
        return min(batch.lock_wait, _MAX_GATHERING)

    def _translate_error(self, exc: BaseException, what: str) -> StoreError:
        return _translate(exc, what)

    # -- the queries of the checked calls (store/_calls.py) ---------------------------

    async def _read_stream(
        self, stream_id: str, low: int, high: int, limit: int
    ) -> list[RecordedEvent]:
        return await self._read(_READ_STREAM, (stream_id, low, high, limit))

    async def _read_streams(
        self, ranges: list[tuple[str, int, int]]
    ) -> list[list[RecordedEvent] | EventDecodeError]:
        self._check_readable()
        registry = self.registry
        alone = len(ranges) == 1  # the plain statement: a fifth cheaper than json_each's
        params: tuple[Any, ...]
        if alone:
            stream_id, low, high = ranges[0]
            params = (stream_id, low, high, high - low + 1)
        else:
            params = (_json.encode(ranges),)
        if self._loop_reads and ranges[0][2] - ranges[0][1] < _LOOP_READ_MAX_PAGE:
            rows = self._loop_read(_GROUP_READ[alone], params)
            if rows is not None:
                return _decode_groups(registry, ranges, rows)

        def run(conn: sqlite3.Connection) -> list[list[RecordedEvent] | EventDecodeError]:
            return _decode_groups(
                registry, ranges, conn.execute(_GROUP_READ[alone], params).fetchall()
            )

        return await self._read_call(run)

    async def _read_log(
        self, low: int, high: int, tags: list[str] | None, limit: int
    ) -> list[RecordedEvent]:
        # The follower's read: on the loop's thread too, a page of at most
        # _LOOP_READ_MAX_PAGE events (a shorter page: it reads on from where it ends).
        if self._loop_reads:
            self._check_readable()
            limit = min(limit, _LOOP_READ_MAX_PAGE)
            rows = self._loop_read(*_read_all_statement(low, high, tags, None, limit))
            if rows is not None:
                return self._decode_rows(rows)
        return await self._read_all(low, high, tags, None, limit)

    def _loop_read(self, sql: str, params: tuple[Any, ...]) -> list[Any] | None:
        """The rows of `sql` read on the event loop's thread (`loop_reads`), or None
        when they cannot be read there now (a lock, say): the reader thread then reads
        them, waiting the lock out, or reports the error."""
        conn = self._loop_connection()
        if conn is None:
            return None
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error:
            return None

    def _loop_connection(self) -> sqlite3.Connection | None:
        """The connection for reads on the event loop's thread, opened by the first one;
        None on another thread, or when it cannot be opened (reads then take the reader
        thread, and this is not tried again)."""
        conn = self._loop_reader
        if conn is None:
            try:
                conn = _open_loop_reader(self.path)
            except sqlite3.Error:
                self._loop_reads = False
                return None
            self._loop_reader, self._loop_thread = conn, threading.get_ident()
        elif threading.get_ident() != self._loop_thread:
            return None
        return conn

    async def _first_version_after(self, stream_id: str, moment: float) -> int | None:
        value = await self._scalar(_FIRST_VERSION_AFTER, (stream_id, moment))
        return None if value is None else int(value)

    async def _read_all(
        self, low: int, high: int, tags: list[str] | None, prefix: str | None, limit: int
    ) -> list[RecordedEvent]:
        return await self._read(*_read_all_statement(low, high, tags, prefix, limit))

    async def _stream_version(self, stream_id: str) -> int:
        return int(await self._scalar(_SELECT_VERSION, (stream_id,)) or 0)

    async def last_position(self) -> int:
        """The highest committed position in the file (0 when empty), whoever wrote it."""
        value = await self._scalar(_SELECT_LAST_POSITION, ())
        return int(value or 0)

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        """The highest committed position once it is above `after` (a commit of any
        process), or after `timeout` seconds whatever it is.

        The first call starts the store's watcher thread (store/_sqlite_watch.py): every
        `watch_interval` it reads `PRAGMA data_version`, which changes when any other
        connection (this store's writer included) has committed.
        """
        if self._reader_closed:
            raise StoreClosed(f"the store {self.path!r} is closed")
        if self.path == ":memory:":  # no other connection can write to it
            await anyio.sleep(timeout)
            return self._last_position
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = Watcher(
                self.path, self.options.watch_interval, self._last_position
            )
        return max(await watcher.wait(after, timeout), self._last_position)

    async def _command_row(self, command_id: str) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._row(_SELECT_COMMAND, (command_id,))
        return row

    async def _snapshot_row(self, stream_id: str) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._row(_SELECT_SNAPSHOT, (stream_id,))
        return row

    async def _checkpoint(self, name: str) -> int:
        return int(await self._scalar(_SELECT_CHECKPOINT, (name,)) or 0)

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
        await self._enqueue_write(
            _UPSERT_SNAPSHOT,
            (stream_id, version, state_type, schema_version, data, checksum, recorded_at),
        )

    async def _write_checkpoint(self, name: str, position: int, updated_at: float) -> None:
        await self._enqueue_write(_UPSERT_CHECKPOINT, (name, position, updated_at))

    async def _write_fenced_checkpoint(
        self, name: str, position: int, updated_at: float, fence: Fence
    ) -> None:
        await self._enqueue_write(_UPSERT_CHECKPOINT, (name, position, updated_at), fence)

    # Lease writes ride in the writer's batches like checkpoints: one writer, one clock.

    async def _acquire_lease(self, name: str, owner: str, ttl: float) -> Lease | None:
        now = time.time()
        row = await self._enqueue_write(
            _ACQUIRE_LEASE, (name, owner, now + ttl, now), returning=True
        )
        return _lease(row)

    async def _renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        now = time.time()
        row = await self._enqueue_write(
            _RENEW_LEASE, (now + ttl, now, lease.name, lease.owner, lease.epoch), returning=True
        )
        return _lease(row)

    async def _release_lease(self, lease: Lease) -> None:
        await self._enqueue_write(
            _RELEASE_LEASE, (time.time(), lease.name, lease.owner, lease.epoch)
        )

    async def _read_leases(self, prefix: str) -> list[Lease]:
        self._check_readable()

        def run(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute(_READ_LEASES, (len(prefix), prefix)).fetchall()
            return [Lease(str(n), str(o), int(e), float(x)) for n, o, e, x in rows]

        return await self._read_call(run)

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
        return _decode_rows(self.registry, rows)

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
                row = copy.execute(_sqlite_batch._SELECT_LAST_POSITION).fetchone()
            except BaseException:
                copy.close()
                with contextlib.suppress(OSError):
                    os.remove(target)
                raise
            copy.close()
            return int(row[0] or 0) if row is not None else 0

        return await self._read_call(run)


def _read_all_statement(
    low: int, high: int, tags: list[str] | None, prefix: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """`read_all`'s statement for its filters, and its parameters."""
    if tags is not None and prefix:
        return _READ_ALL_TYPES_PREFIX, (low, high, _json.encode(tags), len(prefix), prefix, limit)
    if tags is not None:
        return _READ_ALL_TYPES, (low, high, _json.encode(tags), limit)
    if prefix:
        return _READ_ALL_PREFIX, (low, high, len(prefix), prefix, limit)
    return _READ_ALL, (low, high, limit)


def _lease(row: Sequence[Any] | None) -> Lease | None:
    """The lease a statement's `RETURNING name, owner, epoch, expires_at` row holds."""
    if row is None:
        return None
    name, owner, epoch, expires_at = row
    return Lease(str(name), str(owner), int(epoch), float(expires_at))


@contextlib.asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    registry: EventRegistry | None = None,
    options: StoreOptions | None = None,
    **settings: Unpack[StoreSettings],
) -> AsyncIterator[SQLiteEventStore]:
    """Open (creating and migrating it if needed) the event store in SQLite file `path`.

    Args:
        path: a file path (created with mode 0600), or ":memory:" for a private
            in-memory store that lives as long as the context.
        registry: the event types the store can append and read (a new, empty one if
            omitted; register types on `store.registry`).
        options: the store's options as one `StoreOptions` (default: the defaults).
        **settings: `StoreOptions` fields as keywords (`StoreSettings`: `synchronous`,
            `busy_timeout`, limits...), each replacing that field of `options`.

    On exit the writer commits every append it has accepted, the WAL is checkpointed
    and both connections are closed; appends made after exit raise `StoreClosed`.

    Raises:
        InvalidStoreOption: an option out of its range, or one there is none of.
        StoreUnavailable: the file or its directory cannot be opened or written.
        StoreCorrupted: the file is not a SQLite database or is damaged.
    """
    opts = resolve_options(options, settings)
    path = os.fspath(path)
    memory = path == ":memory:"
    if memory and opts.writer == "process":
        raise ValueError(
            "writer='process' needs a database file: a ':memory:' database lives in one"
            " connection, which another process cannot share"
        )
    _prepare_file(path)
    writer, reader, data_version, last_position, process = await _open_file(path, opts, memory)
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
        async with store._serving(
            store._run_writer if process is None else store._run_process_writer
        ):
            yield store
    finally:
        with anyio.CancelScope(shield=True):
            store._reader_closed = True
            store._loop_reads = False
            if store._loop_reader is not None:
                store._loop_reader.close()
            if store._watcher is not None:
                store._watcher.close()
            if not memory:
                with contextlib.suppress(Exception):
                    await _in_thread(writer, _checkpoint_wal)
            if reader is not writer:
                await reader.close()
            await writer.close()
        store._log.info("store.closed", position=store._last_position)


async def _open_file(
    path: str, opts: StoreOptions, memory: bool
) -> tuple[aiosqlite.Connection, aiosqlite.Connection, int, int, anyio.abc.Process | None]:
    """The store's file opened and migrated: the write connection, the read connection
    (the same one for ":memory:"), the file's data version and last position, and the
    writer process (`writer="process"`). On an error what was opened is closed and the
    error raised as the store's."""
    writer = await _connect(path, opts, memory=memory)
    reader = writer
    process = None
    try:
        await _in_thread(writer, migrate)
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
    return writer, reader, data_version, last_position, process
