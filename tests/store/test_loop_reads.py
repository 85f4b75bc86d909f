"""`loop_reads`: a SQLite file's group reads run on the event loop's thread, through a
connection of their own, and fall back to the reader thread when that cannot read."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import store._sqlite as sqlite_store
from store import ANY, SQLiteEventStore, open_store
from tests.store._events import Noted


async def _filled(store: SQLiteEventStore) -> list[tuple[str, int]]:
    store.registry.register(Noted)
    for stream_id, length in {"s-1": 1, "s-3": 3, "s-5": 5}.items():
        for n in range(length):
            await store.append(stream_id, [Noted(f"{stream_id}:{n}")], expected_version=ANY)
    return [("s-5", 2), ("s-1", 1), ("s-3", 1), ("s-none", 1)]


def _count_thread_reads(store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads each read through the reader thread's connection ran on."""
    calls: list[str] = []
    read_call = store._read_call

    async def counted(fn: Any) -> Any:
        def run(conn: sqlite3.Connection) -> Any:
            calls.append(threading.current_thread().name)
            return fn(conn)

        return await read_call(run)

    monkeypatch.setattr(store, "_read_call", counted)
    return calls


async def _read_twice(store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fill `store`, read its streams twice (each time checked against what they hold)
    and return the reads the reader thread made meanwhile."""
    starts = await _filled(store)
    expected = await _expected(store, starts)
    thread_reads = _count_thread_reads(store, monkeypatch)
    assert await store.read_streams(starts, limit=3) == expected
    assert await store.read_streams(starts, limit=3) == expected
    return thread_reads


async def _expected(store: SQLiteEventStore, starts: list[tuple[str, int]]) -> list[Any]:
    return [await store.read_stream(s, from_version=v, limit=3) for s, v in starts]


@pytest.mark.parametrize("loop_reads", [True, False])
async def test_group_reads_run_on_the_loop_thread_unless_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_reads: bool
) -> None:
    async with open_store(tmp_path / "events.db", loop_reads=loop_reads) as store:
        starts = await _filled(store)
        expected = await _expected(store, starts)
        thread_reads = _count_thread_reads(store, monkeypatch)
        assert await store.read_streams(starts, limit=3) == expected
        assert await store.read_streams(starts[:1], limit=3) == expected[:1]  # one stream
        if loop_reads:
            assert thread_reads == []
            assert store._loop_thread == threading.get_ident()
        else:
            assert len(thread_reads) == 2
            assert threading.current_thread().name not in thread_reads


async def test_a_page_past_the_bound_takes_the_reader_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path / "events.db") as store:
        starts = await _filled(store)
        thread_reads = _count_thread_reads(store, monkeypatch)
        bound = sqlite_store._LOOP_READ_MAX_PAGE
        await store.read_streams(starts, limit=bound)
        assert thread_reads == []
        got = await store.read_streams(starts, limit=bound + 1)
        assert len(thread_reads) == 1
        assert got == [await store.read_stream(s, from_version=v) for s, v in starts]


class _Locked(sqlite3.Connection):
    """A connection every statement of which meets a lock."""

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("database is locked")


async def test_a_loop_read_that_meets_a_lock_is_made_on_the_reader_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(path: str) -> sqlite3.Connection:
        return sqlite3.connect(path, factory=_Locked, check_same_thread=False)

    monkeypatch.setattr(sqlite_store, "_open_loop_reader", locked)
    async with open_store(tmp_path / "events.db") as store:
        thread_reads = await _read_twice(store, monkeypatch)
        assert len(thread_reads) == 2  # each tried on the loop first, then read there
        assert store._loop_reader is not None


async def test_a_loop_connection_that_cannot_open_turns_loop_reads_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def failing(path: str) -> sqlite3.Connection:
        opened.append(path)
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite_store, "_open_loop_reader", failing)
    async with open_store(tmp_path / "events.db") as store:
        thread_reads = await _read_twice(store, monkeypatch)
        assert len(opened) == 1  # not tried again
        assert len(thread_reads) == 2


async def test_the_loop_connection_reads_nothing_on_another_thread(tmp_path: Path) -> None:
    async with open_store(tmp_path / "events.db") as store:
        starts = await _filled(store)
        await store.read_streams(starts, limit=3)
        assert store._loop_connection() is not None
        other: list[object] = []
        thread = threading.Thread(target=lambda: other.append(store._loop_connection()))
        thread.start()
        thread.join()
        assert other == [None]
    assert store._loop_reader is not None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store._loop_reader.execute("SELECT 1")  # closed with the store


async def test_a_memory_store_reads_on_its_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_store(":memory:") as store:
        starts = await _filled(store)
        expected = await _expected(store, starts)
        thread_reads = _count_thread_reads(store, monkeypatch)
        assert await store.read_streams(starts, limit=3) == expected
        assert len(thread_reads) == 1
        assert store._loop_reader is None


@pytest.mark.parametrize("loop_reads", [True, False])
async def test_the_followers_log_reads_on_the_loop_thread_a_page_at_most_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_reads: bool
) -> None:
    async with open_store(tmp_path / "events.db", loop_reads=loop_reads) as store:
        await _filled(store)
        bound = 4
        monkeypatch.setattr(sqlite_store, "_LOOP_READ_MAX_PAGE", bound)
        thread_reads = _count_thread_reads(store, monkeypatch)
        everything = await store.read_all(from_position=0)
        assert len(everything) == 9
        page = await store.read_log(from_position=1, to_position=9, limit=100)
        typed = await store.read_log(
            from_position=1, to_position=9, limit=100, event_types=["test.noted"]
        )
        if loop_reads:  # a shorter page, as a cut one: the follower reads on from it
            assert page == typed == everything[:bound]
            assert len(thread_reads) == 1  # read_all's
        else:
            assert page == typed == everything
            assert len(thread_reads) == 3
