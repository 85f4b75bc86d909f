"""The PostgreSQL schema and its migrations: the SQLite tables, plus the position counter
and the batch-append function, in one schema of the database.

The tables have the SQLite store's names and columns (`events`, `commands`, `snapshots`,
`checkpoints`; times are POSIX seconds as double precision), plus:

- `position_counter`: one row holding the last position handed out. Every batch append
  locks it (`SELECT ... FOR UPDATE`), inserts its events at `last+1..last+n` and bumps it
  in the same transaction, so commits that add events are serialised by its row lock:
  positions are gap-free (a rollback rolls the counter back with the rows) and a reader
  that sees position N sees every position below N (the next writer only gets the lock
  once the previous commit is visible).
- `schema_version`: one row per migration applied (version, applied_at).
- `esactors_append_batch(...)`: the plpgsql function that runs a whole batch in one
  statement (see `store._postgres_batch`); version 4 added chained appends.
- `leases` (version 3): one row per lease name (owner, epoch, expires_at, updated_at;
  times by the server's clock), never deleted.

The schema's name is the only text that enters SQL: it is checked (`check_schema_name`)
and quoted as an identifier (`quote_ident`). Everything else is a bound parameter.

`migrate(conn, schema)` brings the schema to `SCHEMA_VERSION`. Safe when several
processes open the same empty database at once: the work runs in one transaction that
first takes `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)` and reads the version again
under it, so one process migrates and the others find the work done.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from store._postgres_function import _append_batch_function

__all__ = [
    "MIGRATION_LOCK_KEY",
    "SCHEMA_VERSION",
    "check_schema_name",
    "current_schema",
    "migrate",
    "quote_ident",
    "schema_version",
]

MIGRATION_LOCK_KEY: Final = 0x65_73_61_63_74_6F_72_73  # "esactors" in ASCII
"""The advisory lock key migrations take (per database: one migration at a time)."""

_MAX_IDENTIFIER_BYTES: Final = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names


def check_schema_name(schema: object) -> str:
    """`schema` if it can name a schema as is; `ValueError` otherwise (not a str, empty,
    over 63 UTF-8 bytes, a NUL or a lone surrogate, or `pg_`-prefixed: reserved)."""
    if type(schema) is not str:
        raise ValueError(f"a schema name must be a str, not {type(schema).__name__}")
    try:
        size = len(schema.encode())
    except UnicodeEncodeError:
        raise ValueError(f"schema name {schema!r} is not valid Unicode") from None
    if not schema or size > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"schema name {schema!r} must be 1 to 63 UTF-8 bytes, not {size}")
    if "\x00" in schema:
        raise ValueError(f"schema name {schema!r} contains a NUL character")
    if schema.lower().startswith("pg_"):
        raise ValueError(f"schema name {schema!r}: names starting pg_ are reserved")
    return schema


def quote_ident(name: str) -> str:
    """`name` (checked by `check_schema_name`) as a quoted SQL identifier."""
    return '"' + check_schema_name(name).replace('"', '""') + '"'


async def current_schema(conn: asyncpg.Connection) -> str:
    """The connection's current schema (the first existing one on its search_path)."""
    name = await conn.fetchval("SELECT current_schema()")
    if name is None:
        raise ValueError(
            "the connection has no current schema (its search_path names none that exists);"
            " pass a schema name"
        )
    return str(name)


def _v1(s: str) -> tuple[str, ...]:
    """Version 1, in schema `s` (already quoted)."""
    return (
        f"""
        CREATE TABLE {s}.events (
            position       bigint           PRIMARY KEY,
            stream_id      text             NOT NULL,
            version        bigint           NOT NULL,
            event_type     text             NOT NULL,
            schema_version bigint           NOT NULL,
            data           bytea            NOT NULL,
            metadata       bytea,
            command_id     text,
            recorded_at    double precision NOT NULL,
            checksum       bigint           NOT NULL,
            UNIQUE (stream_id, version)
        )
        """,
        f"""
        CREATE TABLE {s}.commands (
            command_id     text             PRIMARY KEY,
            stream_id      text             NOT NULL,
            first_version  bigint           NOT NULL,
            last_version   bigint           NOT NULL,
            first_position bigint           NOT NULL,
            last_position  bigint           NOT NULL,
            digest         bytea            NOT NULL,
            recorded_at    double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.snapshots (
            stream_id      text             PRIMARY KEY,
            version        bigint           NOT NULL,
            state_type     text             NOT NULL,
            schema_version bigint           NOT NULL,
            data           bytea            NOT NULL,
            checksum       bigint           NOT NULL,
            recorded_at    double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.checkpoints (
            name           text             PRIMARY KEY,
            position       bigint           NOT NULL,
            updated_at     double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.position_counter (
            only_row       boolean          PRIMARY KEY DEFAULT true CHECK (only_row),
            last_position  bigint           NOT NULL CHECK (last_position >= 0)
        )
        """,
        f"INSERT INTO {s}.position_counter (only_row, last_position) VALUES (true, 0)",  # noqa: S608
    )


def _v2(s: str) -> tuple[str, ...]:
    """Version 2, in schema `s` (already quoted): drops version 1's batch function (its
    arguments were one array per append and per row). Version 2 created the batch
    function with a fast path; version 3 creates its current form, so a new schema
    creates it once."""
    return (
        f"""
        DROP FUNCTION IF EXISTS {s}.esactors_append_batch(
            text[], integer[], bigint[], text[], bytea[], integer[], integer[], integer[],
            bytea[], text[], bigint[], bytea[], bigint[], text[], integer[], integer[],
            bytea[], text[], double precision, text[], bigint[], text[], bigint[], bytea[],
            bigint[], double precision[], text[], bigint[], double precision[])
        """,
    )


def _v3(s: str) -> tuple[str, ...]:
    """Version 3, in schema `s` (already quoted): leases, and drops version 2's batch
    function (it had no fence arguments). Version 3 created the batch function with
    fences; version 4 creates its current form, so a new schema creates it once."""
    return (
        f"""
        CREATE TABLE {s}.leases (
            name           text             PRIMARY KEY,
            owner          text             NOT NULL,
            epoch          bigint           NOT NULL,
            expires_at     double precision NOT NULL,
            updated_at     double precision NOT NULL
        )
        """,
        f"""
        DROP FUNCTION IF EXISTS {s}.esactors_append_batch(
            text[], bigint[], text[], bigint[], bytea, integer[], bigint[], bytea[], text[],
            bigint[], integer[], bytea[], text[], bigint[], boolean, bigint,
            double precision, text[], bigint[], text[], bigint[], bytea[], bigint[],
            double precision[], text[], bigint[], double precision[])
        """,
    )


def _v4(s: str) -> tuple[str, ...]:
    """Version 4, in schema `s` (already quoted): the batch function with chained
    appends (it replaces version 3's, which had no `p_chained` argument)."""
    return (
        f"""
        DROP FUNCTION IF EXISTS {s}.esactors_append_batch(
            text[], bigint[], text[], bigint[], bytea, integer[], bigint[], bytea[], text[],
            bigint[], integer[], bytea[], text[], bigint[], boolean, bigint,
            double precision, text[], bigint[], text[], bigint[], bytea[], bigint[],
            double precision[], text[], bigint[], double precision[], text[], text[],
            bigint[])
        """,
        _append_batch_function(s),
    )


def _migrations(schema: str) -> tuple[tuple[str, ...], ...]:
    s = quote_ident(schema)
    return (_v1(s), _v2(s), _v3(s), _v4(s))


SCHEMA_VERSION: Final = 4
"""The version `migrate` brings a schema to: the number of migrations."""
assert len(_migrations("public")) == SCHEMA_VERSION


async def schema_version(conn: asyncpg.Connection, schema: str) -> int:
    """The version recorded in `schema` (0: not migrated, or no such schema)."""
    s = quote_ident(schema)
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.schema_version")
    if not exists:
        return 0
    found = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")  # noqa: S608
    return int(found)


async def migrate(conn: asyncpg.Connection, schema: str | None = None) -> int:
    """Bring `schema` (default: the connection's current schema; created if missing) to
    `SCHEMA_VERSION`; returns the version found before. Raises `RuntimeError` for a
    schema written by a newer esactors.

    A schema already current costs one query and takes no lock. Otherwise the work runs
    in one transaction holding `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`, which re-reads
    the version under the lock: concurrent migrators wait, then find it done. Must not be
    called inside a transaction the caller opened (it commits its own).
    """
    if schema is None:
        schema = await current_schema(conn)
    s = quote_ident(schema)
    found = await schema_version(conn, schema)
    if found == SCHEMA_VERSION:
        return found
    if found > SCHEMA_VERSION:
        raise _newer(schema, found)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        for statement in _bootstrap(s):
            await conn.execute(statement)
        found = await schema_version(conn, schema)
        if found > SCHEMA_VERSION:
            raise _newer(schema, found)
        record = _record_version(s)
        for number, statements in enumerate(_migrations(schema)[found:], start=found + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(record, number)
    return found


def _bootstrap(s: str) -> tuple[str, ...]:
    """The schema and its version table, in schema `s` (already quoted)."""
    return (
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        (
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            " version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        ),
    )


def _record_version(s: str) -> str:
    """The statement recording a migration applied, in schema `s` (already quoted)."""
    return (
        f"INSERT INTO {s}.schema_version (version, applied_at)"  # noqa: S608
        " VALUES ($1, extract(epoch FROM clock_timestamp()))"
    )


def _newer(schema: str, found: int) -> RuntimeError:
    return RuntimeError(
        f"the schema {schema!r} has esactors schema version {found}, newer than this"
        f" esactors understands ({SCHEMA_VERSION}); upgrade esactors to open it"
    )
