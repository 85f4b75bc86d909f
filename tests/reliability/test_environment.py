"""Storage environment (ENV-1, ENV-2, SEC-5) at the level of the actor system: a full
disk, a read-only file, a missing directory, private file modes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import store._sqlite
from actors import CommandFailed, open_system
from demo.bank import Account, Deposit, OpenAccount
from store import SQLiteEventStore, StoreError, StoreFull, StoreUnavailable
from store._sqlite_connect import _in_thread
from tests.reliability._report import Report, size


def _set_max_pages(conn: sqlite3.Connection, extra: int) -> None:
    """Test hook: cap the writer connection's file at its current size + `extra` pages."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    # PRAGMAs take no parameters; the value is an int computed here.
    conn.execute(f"PRAGMA max_page_count = {int(pages) + extra}").fetchone()


def partial_commands(acked: dict[str, int], path: Path) -> list[str]:
    """ENV-1 checker: per account, the stored deposits must be exactly the acknowledged
    ones (an acknowledged command missing, or a refused one stored, is a violation)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT stream_id, count(*) FROM events"
            " WHERE event_type = 'bank.deposited' GROUP BY stream_id"
        ).fetchall()
    conn.close()
    stored = {stream: int(n) for stream, n in rows}
    found = []
    for account, count in acked.items():
        if stored.get(Account.stream_id(account), 0) != count:
            found.append(
                f"{account}: {count} acked, {stored.get(Account.stream_id(account), 0)} stored"
            )
    return found


@pytest.mark.slow
async def test_env1_a_full_disk_refuses_whole_commands_and_writes_resume(
    tmp_path: Path, report: Report
) -> None:
    path = tmp_path / "events.db"
    accounts = [f"a{i}" for i in range(size(20, 100))]
    acked = dict.fromkeys(accounts, 0)
    refused = 0
    async with open_system(path) as system:
        router = system.aggregates(Account)
        for account in accounts:
            await router.ask(account, OpenAccount(account, "o" * 200))
        store = system.store
        assert isinstance(store, SQLiteEventStore)
        await _in_thread(store._writer, _set_max_pages, 4)
        with anyio.fail_after(120):
            for n in range(20_000):
                account = accounts[n % len(accounts)]
                try:
                    await router.ask(account, Deposit(account, 1 + n % 97))
                except (StoreFull, CommandFailed) as exc:
                    full = exc if isinstance(exc, StoreFull) else exc.__cause__
                    refused += isinstance(full, StoreFull)
                    if not isinstance(full, StoreFull):
                        raise
                    if refused >= 5:
                        break
                else:
                    acked[account] += 1
        assert refused == 5
        before = partial_commands(acked, path)
        # raise the limit: the same system, no restart, takes writes again
        await _in_thread(store._writer, _set_max_pages, 100_000)
        for account in accounts:
            await router.ask(account, Deposit(account, 1))
            acked[account] += 1
    after = partial_commands(acked, path)
    report.record(
        "ENV-1",
        acked=sum(acked.values()),
        refused=refused,
        partial_writes=len(before) + len(after),
        recovered=True,
    )
    assert before == []
    assert after == []


def test_env1_checker_sees_a_partial_command(tmp_path: Path) -> None:
    """Broken variant: an acknowledged deposit that is not in the file."""
    path = tmp_path / "e.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (stream_id TEXT, event_type TEXT)")
        conn.execute("INSERT INTO events VALUES ('account-a', 'bank.deposited')")
    conn.close()
    assert partial_commands({"a": 2}, path) == ["a: 2 acked, 1 stored"]


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    if os.geteuid() != 0:
        path.chmod(0o400)
        yield
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("root on a filesystem without chattr +i: no way to make the file read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_env2_read_only_file_and_missing_dir_fail_when_the_system_opens(
    tmp_path: Path, report: Report
) -> None:
    path = tmp_path / "events.db"
    async with open_system(path) as system:
        await system.aggregates(Account).ask("a", OpenAccount("a", "ada"))
    cases: dict[str, Any] = {}
    with _immutable(path):
        with pytest.raises(StoreUnavailable) as caught:
            async with open_system(path):
                pytest.fail("the system opened on a file it cannot write")
        cases["read_only"] = caught.value
    missing = tmp_path / "no-such-dir" / "events.db"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_system(missing):
            pytest.fail("the system opened in a missing directory")
    cases["missing_dir"] = caught.value
    assert "directory" in str(cases["missing_dir"])
    for error in cases.values():
        assert isinstance(error, StoreError)
    assert str(path) in str(cases["read_only"])
    assert str(missing) in str(cases["missing_dir"])
    report.record("ENV-2", cases=len(cases), clear_error_at_open=len(cases))


async def _file_modes(path: Path) -> dict[str, int]:
    """The modes of the database, WAL and shared-memory files the system creates under
    umask 022 (which would give 0644 to a file created without an explicit mode)."""
    old = os.umask(0o022)
    try:
        async with open_system(path) as system:
            await system.aggregates(Account).ask("a", OpenAccount("a", "ada"))
            return {
                suffix: os.stat(f"{path}{suffix}").st_mode & 0o777
                for suffix in ("", "-wal", "-shm")
            }
    finally:
        os.umask(old)


def not_private(modes: dict[str, int]) -> list[str]:
    """SEC-5 checker: every file readable or writable by anyone but the owner."""
    return [f"events.db{suffix} is {mode:o}" for suffix, mode in modes.items() if mode != 0o600]


async def test_sec5_files_are_private_under_umask_022_with_the_system(
    tmp_path: Path, report: Report
) -> None:
    modes = await _file_modes(tmp_path / "events.db")
    report.record("SEC-5", files=len(modes), not_0600=len(not_private(modes)))
    assert len(modes) == 3
    assert not_private(modes) == []


async def test_sec5_the_checker_catches_a_file_created_with_the_default_mode(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: the store lets SQLite create the file (mode 0644 under umask
    # 022); SQLite gives the -wal and -shm files the database file's mode.
    monkeypatch.setattr(store._sqlite, "_prepare_file", lambda path: None)
    violations = not_private(await _file_modes(tmp_path / "events.db"))
    report.record("SEC-5", broken_variant="file created without mode 0600", caught=len(violations))
    assert len(violations) == 3
