"""The SQLite writer lets its queue grow before a batch when the last one waited for
another process's write lock (`SQLiteEventStore._gathering`): that lock is most likely
still held, and the appends that come meanwhile join the batch."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from store import NO_STREAM, SQLiteEventStore, open_store
from store._options import StoreOptions
from store._sqlite import _GATHER_FROM, _MAX_GATHERING
from store._sqlite_batch import _BatchWriter
from tests.store._events import Deposited, make_registry


class _Busy:
    """A connection that says when a `BEGIN IMMEDIATE` found the lock taken."""

    def __init__(self, conn: sqlite3.Connection, refused: threading.Event) -> None:
        self._conn = conn
        self._refused = refused

    def execute(self, sql: str, *args: Any) -> Any:
        try:
            return self._conn.execute(sql, *args)
        except sqlite3.OperationalError:
            if sql == "BEGIN IMMEDIATE":
                self._refused.set()
            raise


async def test_the_batch_writer_measures_its_wait_for_another_connection_lock(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "events.db")
    async with open_store(path, registry=make_registry()):
        pass  # the schema
    holder = sqlite3.connect(path, isolation_level=None)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        writer = _BatchWriter(path, StoreOptions(), 0, 0)
        writer._begin(conn)
        conn.execute("ROLLBACK")
        assert writer.lock_wait == 0.0
        holder.execute("BEGIN IMMEDIATE")
        refused = threading.Event()
        thread = threading.Thread(target=writer._begin, args=(_Busy(conn, refused),))
        thread.start()
        assert refused.wait(timeout=30)  # the writer met the lock at least once
        holder.execute("ROLLBACK")  # the writer gets it now
        thread.join(timeout=30)
        assert not thread.is_alive()
        conn.execute("ROLLBACK")
        # it waited at least once (a tenth of a millisecond) before it got the lock
        assert writer.lock_wait >= 0.0001
    finally:
        holder.close()
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with open_store(str(tmp_path / "events.db"), registry=make_registry()) as opened:
        yield opened


@pytest.mark.parametrize(
    ("waited", "appends", "queued", "gather"),
    [
        (0.0, 1_000, 1, 0.0),  # no other process held the lock
        (0.002, 1_000, 1, 0.002),
        (0.002, 1_000, 999, 0.002),
        (0.050, 1_000, 1, _MAX_GATHERING),
        (0.002, _GATHER_FROM - 1, 1, 0.0),  # a small batch: nothing much would come
        # as many queued as the last batch took: its callers all came already
        (0.002, 1_000, 1_000, 0.0),
        (0.050, 1_000, 1_500, 0.0),
    ],
)
async def test_the_writer_gathers_as_long_as_the_last_batch_waited_for_the_lock(
    store: SQLiteEventStore, waited: float, appends: int, queued: int, gather: float
) -> None:
    batch = store._batch
    batch.lock_wait, batch.last_appends = waited, appends
    assert store._gathering(queued) == gather


@pytest.mark.parametrize("waited", [0.0, _MAX_GATHERING])
async def test_appends_queued_while_the_writer_gathers_share_its_batch(
    store: SQLiteEventStore, waited: float
) -> None:
    batch = store._batch
    batch.lock_wait, batch.last_appends = waited, _GATHER_FROM
    before = store.statistics().batches
    first = store.queue_append("a", [Deposited(1)], NO_STREAM, None, None)
    await anyio.lowlevel.checkpoint()  # the writer wakes: takes `first`, or gathers
    second = store.queue_append("b", [Deposited(2)], NO_STREAM, None, None)
    assert first is not None
    assert second is not None
    with anyio.fail_after(30):
        await first.future
        await second.future
    assert store.statistics().batches - before == (1 if waited else 2)


async def test_a_queue_as_long_as_the_last_batch_is_taken_at_once(
    store: SQLiteEventStore,
) -> None:
    """The last batch waited for the lock, but as many appends as it took are queued
    already when the writer wakes (every caller it answered sent the next): it takes
    them without gathering, so one queued a moment later goes to the next batch."""
    batch = store._batch
    batch.lock_wait, batch.last_appends = _MAX_GATHERING, _GATHER_FROM
    before = store.statistics().batches
    items = [
        store.queue_append(f"s{n}", [Deposited(n)], NO_STREAM, None, None)
        for n in range(_GATHER_FROM)
    ]
    await anyio.lowlevel.checkpoint()  # the writer wakes and takes them all
    late = store.queue_append("late", [Deposited(1)], NO_STREAM, None, None)
    assert late is not None
    with anyio.fail_after(30):
        for item in items:
            assert item is not None
            await item.future
        await late.future
    assert store.statistics().batches - before == 2


class _Clock:
    """`time` as the batch writer sees it, where each sleep while waiting for the
    write lock lasts `step` seconds more than it does and the first one lets the lock
    go (the `holder` connection rolls back)."""

    def __init__(self, holder: sqlite3.Connection, step: float) -> None:
        self._holder = holder
        self._step = step
        self.slept = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def perf_counter(self) -> float:
        return time.perf_counter() + self.slept

    def monotonic(self) -> float:
        return time.monotonic() + self.slept

    def sleep(self, seconds: float) -> None:
        if self.slept == 0.0:
            self._holder.execute("ROLLBACK")
        self.slept += self._step
        time.sleep(seconds)


async def test_a_batch_counts_the_time_it_held_the_write_lock_not_its_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`commit_ms` is the time a batch spent in its transaction: on a SQLite file from
    taking the write lock to the commit, so that the processes' shares of a run add up
    to how busy the lock was; the wait for it is not part of it."""
    import store._sqlite_batch as batch

    path = str(tmp_path / "events.db")
    async with open_store(path, registry=make_registry(), busy_timeout=1_000.0) as store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            holder.execute("BEGIN IMMEDIATE")
            clock = _Clock(holder, step=60.0)
            monkeypatch.setattr(batch, "time", clock)
            await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
        finally:
            holder.close()
        assert clock.slept >= 60.0  # it waited a minute, as its clock tells
        stats = store.statistics()
        assert stats.batches == 1
        assert 0 < stats.commit_ms_max < 60_000
