from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from store import NO_STREAM, StoreUnavailable, open_store
from store import _sqlite as sqlite_store
from store._sqlite_connect import _in_thread
from tests.store._events import Noted, make_registry


def _locked() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = 5  # SQLITE_BUSY
    return error


async def test_a_read_that_meets_a_transient_lock_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path / "e.db", registry=make_registry()) as store:
        await store.append("s-1", [Noted("a")], expected_version=NO_STREAM)
        real = _in_thread
        failures = [_locked(), _locked()]

        async def flaky(conn: Any, fn: Callable[..., Any], *args: Any) -> Any:
            if conn is store._reader and failures:
                raise failures.pop()
            return await real(conn, fn, *args)

        monkeypatch.setattr(sqlite_store, "_in_thread", flaky)
        assert await store.stream_version("s-1") == 1
        assert failures == []


async def test_a_read_that_stays_locked_is_reported_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path / "e.db", registry=make_registry()) as store:
        real = _in_thread
        calls = 0

        async def locked(conn: Any, fn: Callable[..., Any], *args: Any) -> Any:
            nonlocal calls
            if conn is store._reader:
                calls += 1
                raise _locked()
            return await real(conn, fn, *args)

        monkeypatch.setattr(sqlite_store, "_in_thread", locked)
        with pytest.raises(StoreUnavailable, match="lock"):
            await store.read_stream("s-1")
        assert calls == sqlite_store._READ_RETRIES + 1
