"""Deliberately broken writers for the checkers' self-tests, applied in child processes:
each rewrites the statements the store's writer runs on its connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from store._sqlite_batch import _BatchWriter

# (statement, connection) -> the statement to run instead, or None to skip it.
Rewrite = Callable[[str, sqlite3.Connection], str | None]


class _Rewriting:
    def __init__(self, conn: sqlite3.Connection, rewrite: Rewrite) -> None:
        self._conn, self._rewrite = conn, rewrite

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        statement = self._rewrite(sql, self._conn)
        return None if statement is None else self._conn.execute(statement, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def rewrite_writer_sql(rewrite: Rewrite) -> None:
    """Make every store in this process run its write batches through `rewrite`."""
    original = _BatchWriter._write_batch

    def write_batch(self: _BatchWriter, conn: sqlite3.Connection, *args: Any) -> Any:
        return original(self, _Rewriting(conn, rewrite), *args)  # type: ignore[arg-type]

    _BatchWriter._write_batch = write_batch  # type: ignore[method-assign,assignment]


def acks_before_commit(every: int = 8) -> None:
    """The writer answers its callers but commits only every `every`th batch."""
    batches = 0

    def rewrite(sql: str, conn: sqlite3.Connection) -> str | None:
        nonlocal batches
        if sql == "BEGIN IMMEDIATE" and conn.in_transaction:
            return None
        if sql == "COMMIT":
            batches += 1
            if batches % every:
                return None
        return sql

    rewrite_writer_sql(rewrite)


def deferred_begin() -> None:
    """Write transactions open with a deferred BEGIN and upgrade at the first insert."""
    rewrite_writer_sql(lambda sql, _conn: "BEGIN" if sql == "BEGIN IMMEDIATE" else sql)
