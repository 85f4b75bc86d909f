"""Checks of a load test's ack log against the SQLite file it wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def read_acks(path: Path) -> list[tuple[str, int, int]]:
    """The complete lines of an ack log as (stream_id, version, position)."""
    acks = []
    for line in path.read_bytes().decode().splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # a line cut by a kill: never acknowledged in full
        stream_id, version, position = line.rstrip("\n").split("\t")
        acks.append((stream_id, int(version), int(position)))
    return acks


def stored_rows(db: Path) -> set[tuple[str, int, int]]:
    """Every (stream_id, version, position) in the events table."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT stream_id, version, position FROM events").fetchall()
    conn.close()
    return {(str(s), int(v), int(p)) for s, v, p in rows}


def missing_acks(acks: list[tuple[str, int, int]], db: Path) -> list[tuple[str, int, int]]:
    """Acknowledged (stream, version, position) triples that are not in the file."""
    rows = stored_rows(db)
    return [ack for ack in acks if ack not in rows]


def version_gaps(db: Path) -> list[str]:
    """Streams whose versions are not exactly 1..n."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT stream_id, count(*), min(version), max(version) FROM events GROUP BY stream_id"
        ).fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    assert integrity == "ok"
    return [str(s) for s, n, low, high in rows if (low, high) != (1, n)]
