from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from store import ANY, SQLiteEventStore, StoreClosed, open_store
from tests.store._events import Noted, make_registry


async def test_a_backup_holds_every_committed_event_and_opens_as_a_store(
    store: SQLiteEventStore, tmp_path: Path
) -> None:
    if not isinstance(store, SQLiteEventStore):
        pytest.skip("backup() copies a SQLite file; a PostgreSQL database has pg_dump")
    for n in range(5):
        await store.append(f"s-{n % 2}", [Noted(str(n)), Noted(f"{n}b")], expected_version=ANY)
    target = tmp_path / "copy.db"
    assert await store.backup(target) == 10
    async with open_store(str(target), registry=make_registry()) as copy:
        assert await copy.read_all() == await store.read_all()
        assert await copy.stream_version("s-0") == 6


async def test_a_backup_taken_while_appends_run_is_a_prefix_of_the_log(tmp_path: Path) -> None:
    async with open_store(str(tmp_path / "live.db"), registry=make_registry()) as store:
        done = anyio.Event()

        async def writer(n: int) -> None:
            while not done.is_set():
                await store.append(f"s-{n}", [Noted("x")], expected_version=ANY)

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(writer, n)
            while await store.last_position() < 50:
                await anyio.wait_all_tasks_blocked()
            copied = await store.backup(tmp_path / "copy.db")
            done.set()
        live = await store.read_all()
    async with open_store(str(tmp_path / "copy.db"), registry=make_registry()) as copy:
        assert await copy.read_all() == live[:copied]
    assert copied >= 50


async def test_a_backup_refuses_an_existing_file_and_a_closed_store(tmp_path: Path) -> None:
    existing = tmp_path / "there.db"
    existing.write_bytes(b"keep me")
    async with open_store(str(tmp_path / "a.db"), registry=make_registry()) as store:
        with pytest.raises(FileExistsError, match=r"there\.db"):
            await store.backup(existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(StoreClosed):
        await store.backup(tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()
