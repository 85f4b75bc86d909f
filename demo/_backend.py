"""Which backend a `--db` names, and how to name it in a report without its password.

A `postgresql://` (or `postgres://`) URL is the PostgreSQL store; anything else (a
path, ":memory:") is SQLite, as `open_store` decides.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["Backend", "backend_of", "redacted", "scratch_schema"]

Backend = Literal["sqlite", "postgresql"]

_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})


def backend_of(db: str | None) -> Backend:
    """ "postgresql" for a PostgreSQL URL, else "sqlite" (None: a temporary SQLite file)."""
    if db is not None and db.partition("://")[0].lower() in _POSTGRES_SCHEMES:
        return "postgresql"
    return "sqlite"


def redacted(db: str) -> str:
    """`db` as a report may show it: a URL's password replaced by "***"."""
    if backend_of(db) != "postgresql":
        return db
    parts = urlsplit(db)
    if parts.password is None:
        return db
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@asynccontextmanager
async def scratch_schema(url: str, prefix: str = "esactors_scratch") -> AsyncIterator[str]:
    """`url` naming a new schema of its own (the store creates it); dropped, with
    everything in it, on exit. Needs asyncpg (the PostgreSQL store does)."""
    import asyncpg  # PostgreSQL only: a SQLite run needs no asyncpg

    parts = urlsplit(url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        yield urlunsplit(parts._replace(query=urlencode([*query, ("schema", name)])))
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            statement = _drop_schema(name)
            await conn.execute(statement)
        finally:
            await conn.close()


def _drop_schema(name: str) -> str:
    """The statement dropping schema `name`, one `scratch_schema` made (a prefix and hex
    digits: nothing to quote but the identifier)."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a scratch schema name: {name!r}")
    return f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
