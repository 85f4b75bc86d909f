"""The PostgreSQL server the tests use: `$ESACTORS_TEST_POSTGRES` (default: the local
`test` database). Each test gets a schema of its own, dropped after it. Without a
server the PostgreSQL tests skip with one line saying why; under CI (`CI=true`) they
fail instead, so a green CI run always means they ran."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest

from store._postgres_schema import quote_ident

POSTGRES_URL = os.environ.get("ESACTORS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_unavailable: list[str] = []


async def postgres_connection() -> asyncpg.Connection:
    """A connection to the test server; skips the test (fails it under CI) without one."""
    if _unavailable:
        pytest.skip(_unavailable[0])
    try:
        conn: asyncpg.Connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"no PostgreSQL answers at {POSTGRES_URL} ({type(exc).__name__}: {exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        _unavailable.append(reason)
        pytest.skip(reason)
    return conn


async def fresh_schema() -> AsyncIterator[str]:
    """A unique schema name not yet in the database; dropped with its tables after."""
    name = f"esactors_test_{uuid.uuid4().hex[:12]}"
    conn = await postgres_connection()
    try:
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()


def url_with_schema(schema: str) -> str:
    """The test server's URL naming `schema` (the store creates it)."""
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}schema={quote(schema)}"
