from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests._postgres import fresh_schema, url_with_schema


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """aiosqlite runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A schema of its own on the test PostgreSQL server (see tests/_postgres.py)."""
    async for name in fresh_schema():
        yield name


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    """The test server's URL with a schema of this test's own."""
    return url_with_schema(postgres_schema)
