from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import SQLiteEventStore, open_store
from store._options import Writer
from tests.store._events import make_registry


@pytest.fixture(params=["file", "memory", "process", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store a contract test runs on: a file with the in-process writer thread,
    ":memory:", a file with the writer process (`writer="process"`), or PostgreSQL (a
    schema of the test's own on the test server)."""
    return str(request.param)


@pytest.fixture
def store_path(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a contract test's store lives: a file in tmp_path, ":memory:", or the
    PostgreSQL URL of a schema of the test's own."""
    if store_kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return ":memory:" if store_kind == "memory" else str(tmp_path / "events.db")


@pytest.fixture
def store_writer(store_kind: str) -> Writer:
    """The `writer` option that goes with `store_path`."""
    return "process" if store_kind == "process" else "thread"


@pytest.fixture
async def store(store_path: str, store_writer: Writer) -> AsyncIterator[SQLiteEventStore]:
    async with open_store(store_path, registry=make_registry(), writer=store_writer) as opened:
        yield opened
