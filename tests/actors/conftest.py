from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors import ActorSystem, open_system
from tests._postgres import fresh_schema, url_with_schema


@pytest.fixture(params=["memory", "file", "postgresql"])
async def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """ ":memory:", a SQLite file and a schema of the test's own on the test PostgreSQL
    server (tests/_postgres.py): the runtime must behave alike on all three."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield ":memory:" if request.param == "memory" else str(tmp_path / "actors.db")


@pytest.fixture(params=["file", "postgresql"])
async def durable_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store that outlives the system opened on it (a test reopens it, or two
    processes share it): a SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield str(tmp_path / "actors.db")


@pytest.fixture
async def system(store_path: str) -> AsyncIterator[ActorSystem]:
    async with open_system(store_path, synchronous="NORMAL") as opened:
        yield opened
