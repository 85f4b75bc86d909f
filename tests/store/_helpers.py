"""Test-only helpers that reach into the store to make timing deterministic."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from store import RecordedEvent, SQLiteEventStore
from store._groupcommit import GroupCommitStore
from store._postgres import PostgresEventStore
from store._postgres_schema import quote_ident
from store._sqlite_connect import _in_thread
from tests._postgres import postgres_connection

_HOLD_SECONDS = 30.0


@asynccontextmanager
async def writer_held(store: GroupCommitStore) -> AsyncIterator[frozenset[int]]:
    """Keep the store's writer busy until exit, so every append made meanwhile waits
    in its queue and the writer takes them all as one batch when released. Yields the
    numbers of batches the hold and that queue may commit: the hold's own (checkpoint
    writes), then the queue as one batch. The writer process may instead send a queue
    of 16 or more in two halves, when both of its held batches are answered before it
    takes the queue (it then finds nothing in flight). The PostgreSQL store commits a
    queue of 64 or more in halves (`PostgresEventStore._batch_size`).

    Writer thread: a blocking call occupies the write connection's worker thread, and a
    checkpoint write queued behind it keeps the writer task waiting on that thread.
    Writer process: another connection holds the database's write lock, and two
    checkpoint writes fill the writer's two batches in flight (the first waits for the
    lock in the process). Either way the appends the body starts pile up in the queue.
    """
    if isinstance(store, PostgresEventStore):
        async with _postgres_writer_held(store):
            # The hold's batch, then the queue: whole, or halved while 64 or more wait
            # (at most 8 halvings for the queues these tests build).
            yield frozenset(range(2, 11))
        return
    assert isinstance(store, SQLiteEventStore)
    if store._process is not None:
        async with _process_writer_held(store):
            yield frozenset({3, 4})
        return
    gate = threading.Event()

    def block(_conn: sqlite3.Connection) -> None:
        gate.wait(_HOLD_SECONDS)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_in_thread, store._writer, block)
        await checkpoint()
        tg.start_soon(store.save_checkpoint, "test.writer-held", 0)
        await wait_all_tasks_blocked()
        try:
            yield frozenset({2})
        finally:
            gate.set()


@asynccontextmanager
async def _process_writer_held(store: SQLiteEventStore) -> AsyncIterator[None]:
    lock = sqlite3.connect(store.path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(store.save_checkpoint, f"test.writer-held-{n}", 0)
                await wait_all_tasks_blocked()
            try:
                yield
            finally:
                lock.execute("ROLLBACK")
    finally:
        lock.close()


@asynccontextmanager
async def _postgres_writer_held(store: PostgresEventStore) -> AsyncIterator[None]:
    """Another connection holds the row lock of a checkpoint: the writer's next batch
    (that checkpoint's write) waits for it in the server, the queue behind it."""
    conn = await postgres_connection()
    table = f"{quote_ident(store.schema)}.checkpoints"
    try:
        await conn.execute(
            f"INSERT INTO {table} (name, position, updated_at)"  # noqa: S608
            " VALUES ('test.writer-held', 0, 0) ON CONFLICT DO NOTHING"
        )
        async with anyio.create_task_group() as tg, conn.transaction():
            await conn.execute(
                f"SELECT 1 FROM {table} WHERE name = 'test.writer-held' FOR UPDATE"  # noqa: S608
            )
            tg.start_soon(store.save_checkpoint, "test.writer-held", 0)
            await wait_all_tasks_blocked()
            yield
    finally:
        await conn.close()


def stored_rows(path: str) -> list[tuple[int, str, int]]:
    """(position, stream_id, version) of every row in the file, by position."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT position, stream_id, version FROM events ORDER BY position"
        ).fetchall()
    conn.close()
    return [(int(p), str(s), int(v)) for p, s, v in rows]


async def read_everything(store: SQLiteEventStore) -> list[RecordedEvent]:
    """The whole global log, paged."""
    out: list[RecordedEvent] = []
    while True:
        page = await store.read_all(
            from_position=out[-1].position + 1 if out else 0, limit=store.options.max_read_limit
        )
        if not page:
            return out
        out.extend(page)


def wal_size(path: str) -> int:
    """The size of the database's -wal file (0 when there is none)."""
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0
