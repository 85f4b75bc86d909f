from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests._postgres import fresh_schema, url_with_schema


@pytest.fixture(params=["memory", "file", "postgresql"])
async def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a test's store lives: ":memory:", a SQLite file (reads on a connection of
    their own, concurrent with the writer) or a PostgreSQL schema of the test's own."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield ":memory:" if request.param == "memory" else str(tmp_path / "events.db")


@pytest.fixture(params=["file", "postgresql"])
async def durable_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store two connections (or processes) share: a SQLite file or a PostgreSQL schema."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield str(tmp_path / "events.db")
