from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests._postgres import fresh_schema, url_with_schema


@pytest.fixture(params=["memory", "postgresql"])
async def store_target(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Where a test's store lives: ":memory:" or a PostgreSQL schema of the test's own
    (tests/_postgres.py); projections must behave alike on both."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield ":memory:"


@pytest.fixture(params=["file", "postgresql"])
async def durable_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store two connections share: a SQLite file or a PostgreSQL schema."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield str(tmp_path / "events.db")
