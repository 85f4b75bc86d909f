"""The SQLite schema and its migrations, versioned by `PRAGMA user_version`.

Every statement here is a constant: stream ids, tags and payloads are always bound
parameters, never spliced into SQL text.
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["SCHEMA_VERSION", "migrate"]

_V1: Final = (
    """
    CREATE TABLE events (
        position       INTEGER PRIMARY KEY,
        stream_id      TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        event_type     TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        metadata       BLOB,
        command_id     TEXT,
        recorded_at    REAL    NOT NULL,
        checksum       INTEGER NOT NULL,
        UNIQUE (stream_id, version)
    )
    """,
    """
    CREATE TABLE commands (
        command_id     TEXT    PRIMARY KEY,
        stream_id      TEXT    NOT NULL,
        first_version  INTEGER NOT NULL,
        last_version   INTEGER NOT NULL,
        first_position INTEGER NOT NULL,
        last_position  INTEGER NOT NULL,
        digest         BLOB    NOT NULL,
        recorded_at    REAL    NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE snapshots (
        stream_id      TEXT    PRIMARY KEY,
        version        INTEGER NOT NULL,
        state_type     TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        checksum       INTEGER NOT NULL,
        recorded_at    REAL    NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE checkpoints (
        name           TEXT    PRIMARY KEY,
        position       INTEGER NOT NULL,
        updated_at     REAL    NOT NULL
    ) WITHOUT ROWID
    """,
)

_V2: Final = (
    # Leases (`acquire_lease`): one row per name, never deleted; a release or an expiry
    # only moves `expires_at`, so `epoch` keeps growing across owners.
    """
    CREATE TABLE leases (
        name           TEXT    PRIMARY KEY,
        owner          TEXT    NOT NULL,
        epoch          INTEGER NOT NULL,
        expires_at     REAL    NOT NULL,
        updated_at     REAL    NOT NULL
    ) WITHOUT ROWID
    """,
)

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to `SCHEMA_VERSION` inside one write transaction; returns the
    version found. Raises `RuntimeError` for a file written by a newer schema."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database has schema version {found}, newer than this esactors"
                f" understands ({SCHEMA_VERSION}); upgrade esactors to open it"
            )
        for statements in _MIGRATIONS[found:]:
            for statement in statements:
                conn.execute(statement)
        if found < SCHEMA_VERSION:
            # PRAGMA takes no parameters; SCHEMA_VERSION is a module constant int.
            conn.execute(_SET_USER_VERSION[SCHEMA_VERSION])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


_SET_USER_VERSION: Final = {1: "PRAGMA user_version = 1", 2: "PRAGMA user_version = 2"}
