"""SQLite connections: the file, each connection's settings, work on its thread."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import aiosqlite
import anyio

from store import _sqlite_batch
from store._errors import StoreUnavailable
from store._options import StoreOptions
from store._sqlite_errors import _SQLITE_BUSY, _SQLITE_LOCKED, _code, _translate

T = TypeVar("T")


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` as one call on the connection's worker thread.

    aiosqlite's public API costs one thread hop per statement; a batch transaction is
    several statements, so the store hands the whole unit of work over at once.
    """
    raw: sqlite3.Connection = conn._conn
    # aiosqlite leaves _execute unannotated; it returns what fn returns.
    return cast(T, await conn._execute(fn, raw, *args))  # type: ignore[no-untyped-call]


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
    # Checkpoint every 10,000 WAL pages (40 MiB), not SQLite's 1,000. A batch of appends
    # to many streams rewrites one index page per stream: about 600 pages for 1,000
    # appends over 1,000 accounts. At 1,000 pages the committing writer checkpointed
    # after almost every other batch, copying each page once per batch; at 10,000 a
    # checkpoint copies a page rewritten by 16 batches once (docs/architecture.md).
    conn.execute("PRAGMA wal_autocheckpoint = 10000")


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


def _open_loop_reader(path: str) -> sqlite3.Connection:
    """A read-only connection for reads made on the event loop's own thread (see
    `StoreOptions.loop_reads`). It never waits for a lock (busy_timeout 0: a read that
    meets one goes to the reader thread, which waits), and may be closed from another
    thread (the store guards which thread reads with it)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA cache_size = -32768")  # as the other connections
    except BaseException:
        conn.close()
        raise
    return conn


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
    last = conn.execute(_sqlite_batch._SELECT_LAST_POSITION).fetchone()[0]
    return data_version, int(last or 0)


def _checkpoint_wal(conn: sqlite3.Connection) -> None:
    # Fold the WAL back into the file if no other connection is using it, without
    # waiting: with busy_timeout, TRUNCATE waits out every other process's readers and
    # writer, so closing took busy_timeout whenever another process had the file open.
    # If it cannot run now, the last connection to close checkpoints the WAL anyway.
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
