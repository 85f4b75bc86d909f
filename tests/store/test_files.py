"""The store's file: permissions, files it cannot use, a full disk, and its lifecycle."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from store import (
    NO_STREAM,
    ConcurrencyError,
    StoreClosed,
    StoreCorrupted,
    StoreFull,
    StoreOptions,
    StoreUnavailable,
    open_store,
)
from store._options import Writer
from store._sqlite_connect import _configure, _in_thread
from tests.store._events import Deposited, Noted, make_registry
from tests.store._helpers import stored_rows, wal_size


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


async def test_the_database_and_its_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with umask(0o022):
        async with open_store(path, registry=make_registry()) as store:
            await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
            modes = {
                suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
                for suffix in ("", "-wal", "-shm")
            }
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make `path` unwritable for this process: mode 0400, or, for root (which file
    modes do not stop), the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o400)
        yield
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: nothing is read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_read_only_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry()) as store:
        await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    with read_only(path):
        with pytest.raises(StoreUnavailable) as caught:
            async with open_store(path, registry=make_registry()):
                pytest.fail("the store opened a file it cannot write")
        assert str(path) in str(caught.value)
    assert [row[1:] for row in stored_rows(str(path))] == [("s", 1)]


async def test_a_missing_directory_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "events.db"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store(path):
            pytest.fail("the store opened in a missing directory")
    assert str(path) in str(caught.value)
    assert "directory" in str(caught.value)
    assert not path.parent.exists()


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are somebody's notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreCorrupted) as caught:
        async with open_store(path):
            pytest.fail("the store opened a file that is not a database")
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


async def test_a_database_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        async with open_store(path):
            pytest.fail("the store opened a file of a newer schema")


async def test_a_full_database_refuses_whole_appends_and_recovers_when_there_is_room(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry()) as store:
        await store.append("first", [Noted("x" * 1000)], expected_version=NO_STREAM)

        # Test-only: lower the size limit on the store's own write connection.
        def limit_pages(conn: sqlite3.Connection, extra: int) -> None:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            # PRAGMAs take no parameters; this is an int computed here.
            conn.execute(f"PRAGMA max_page_count = {int(pages) + extra}").fetchone()

        await _in_thread(store._writer, limit_pages, 2)
        acknowledged = [1]

        async def fill() -> None:
            for n in range(10_000):
                await store.append(f"s-{n}", [Noted("y" * 1500)] * 3, expected_version=NO_STREAM)
                acknowledged[0] += 3

        with anyio.fail_after(30), pytest.raises(StoreFull) as caught:
            await fill()
        assert "full" in str(caught.value)
        assert "nothing was written" in str(caught.value)
        # Every acknowledged append is whole; the refused one left nothing behind.
        rows = stored_rows(str(path))
        count = acknowledged[0]
        assert len(rows) == count
        assert [p for p, _, _ in rows] == list(range(1, count + 1))
        assert await store.last_position() == count == store.statistics().last_position
        refused = f"s-{(count - 1) // 3}"
        assert await store.stream_version(refused) == 0

        await _in_thread(store._writer, limit_pages, 10_000)
        result = await store.append(refused, [Noted("y" * 1500)] * 3, expected_version=NO_STREAM)
        assert (result.first_position, result.last_position) == (
            count + 1,
            count + 3,
        )


# -- lifecycle ----------------------------------------------------------------------------


async def test_an_error_in_the_store_context_propagates_unwrapped(
    store_path: str, store_writer: Writer
) -> None:
    async def conflict_inside_the_store() -> None:
        async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
            await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
            await store.append("s", [Deposited(1)], expected_version=NO_STREAM)

    with pytest.raises(ConcurrencyError) as caught:
        await conflict_inside_the_store()
    assert caught.value.stream_id == "s"
    assert caught.value.__context__ is None


async def test_a_closed_store_refuses_appends_and_reads(
    store_path: str, store_writer: Writer
) -> None:
    async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
        await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    assert store.closed
    with pytest.raises(StoreClosed, match="'s'"):
        await store.append("s", [Deposited(2)], expected_version=1)
    with pytest.raises(StoreClosed):
        await store.read_stream("s")
    with pytest.raises(StoreClosed):
        await store.save_checkpoint("p", 1)


async def test_cancelling_the_store_context_closes_it_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with anyio.move_on_after(0.05) as scope:
        async with open_store(path, registry=make_registry()) as store:
            await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert store.closed
    assert stored_rows(str(path)) == [(1, "s", 1)]


async def test_closing_folds_the_wal_back_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry()) as store:
        for n in range(20):
            await store.append(f"s-{n}", [Noted("x" * 500)] * 5, expected_version=NO_STREAM)
        assert wal_size(str(path)) > 0
    assert wal_size(str(path)) == 0
    assert len(stored_rows(str(path))) == 100


async def test_closing_does_not_wait_for_another_connections_reader(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry()) as store:
        await store.append("s", [Noted("first")], expected_version=NO_STREAM)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
        # Closing used to wait busy_timeout (60 s here) for this reader. The close is
        # shielded, so a deadline cannot cut it short: it only records the overrun.
        with anyio.move_on_after(20) as deadline:
            async with open_store(path, registry=make_registry(), busy_timeout=60) as store:
                await store.append("s", [Noted("second")], expected_version=1)
        assert not deadline.cancel_called, "closing waited for another connection's reader"
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert [row[2] for row in stored_rows(str(path))] == [1, 2]


class _BusyThenWal:
    """A connection whose switch to WAL meets SQLITE_BUSY `busy` times first."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.statements: list[str] = []

    def execute(self, sql: str, *args: object) -> _BusyThenWal:
        self.statements.append(sql)
        if sql == "PRAGMA journal_mode = WAL" and self.busy:
            self.busy -= 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = 5  # SQLITE_BUSY, as SQLite answers a lock race
            raise error
        return self

    def fetchone(self) -> tuple[str]:
        return ("wal",)


def test_a_switch_to_wal_that_meets_another_opener_is_tried_again() -> None:
    racing = _BusyThenWal(busy=3)
    _configure(racing, StoreOptions(), False)  # type: ignore[arg-type]  # a stand-in
    assert racing.statements.count("PRAGMA journal_mode = WAL") == 4
    stuck = _BusyThenWal(busy=10**9)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _configure(stuck, StoreOptions(busy_timeout=0.05), False)  # type: ignore[arg-type]


async def test_the_wal_is_checkpointed_past_10000_pages_not_sqlites_1000(tmp_path: Path) -> None:
    """About 1,900 pages of appends: at SQLite's default the committing writer would
    have checkpointed at 1,000 and started the WAL over, keeping the file near 1,000
    pages; at 10,000 the WAL holds them all."""
    path = str(tmp_path / "events.db")
    async with open_store(path, registry=make_registry()) as store:
        for n in range(30):
            events = [Noted(f"{n}-{i}-" + "x" * 3_500) for i in range(60)]
            await store.append(f"s{n}", events, expected_version=NO_STREAM)
        assert wal_size(path) > 1_500 * 4_096
