"""Inserting a SQLite batch's rows: its events and command ids, in the fewest statements.

The batch transaction (`store._sqlite_batch._BatchWriter`) decides each append; the
`RowInserter` writes the accepted ones: all their rows at once, flattened into
multi-row `INSERT` statements of a few fixed sizes (`_rows_statements`), or, on the
careful path, each append's events in a savepoint of their own so that a
`UNIQUE(stream_id, version)` refusal undoes that append alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from store._batch import _BatchAppend
from store._records import AppendResult

__all__ = ["RowInserter"]

_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, event_type, schema_version, data,"
    " metadata, command_id, recorded_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PLAIN_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, event_type, schema_version, data,"
    " recorded_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
"""The same row as `_INSERT_EVENT` when metadata and command_id are NULL: binding two
fewer parameters makes executemany about a fifth cheaper."""
_INSERT_COMMAND: Final = (
    "INSERT INTO commands (command_id, stream_id, first_version, last_version,"
    " first_position, last_position, digest, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _rows_statements(insert: str, width: int) -> dict[int, str]:
    """`insert` (an `INSERT ... VALUES (?, ...)` literal of `width` placeholders) as one
    statement per size in `_ROWS_PER_STATEMENT`, taking that many rows at once.

    Only placeholders are repeated: no value ever enters the SQL text. One statement
    for hundreds of rows is cheaper for SQLite than `executemany`, and the writer thread
    gives up the GIL once per statement instead of once per row, which is what keeps a
    commit quick while the event loop is saturated (each time the thread takes the GIL
    back from a busy loop it can wait the interpreter's whole switch interval, 5 ms).
    """
    head, _, row = insert.partition(" VALUES ")
    assert row.count("?") == width, insert
    return {n: f"{head} VALUES {', '.join([row] * n)}" for n in _ROWS_PER_STATEMENT}


_ROWS_PER_STATEMENT: Final = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
"""The statement sizes of a batch insert: at most 10 statements for up to 1,023 rows."""
_INSERT_EVENTS: Final = _rows_statements(_INSERT_EVENT, 10)
_INSERT_PLAIN_EVENTS: Final = _rows_statements(_INSERT_PLAIN_EVENT, 8)
_INSERT_COMMANDS: Final = _rows_statements(_INSERT_COMMAND, 8)
_SELECT_VERSION: Final = "SELECT max(version) FROM events WHERE stream_id = ?"


class RowInserter:
    """Writes the rows of a batch's accepted appends on one write connection (it reads
    the connection's limit on placeholders once)."""

    __slots__ = ("_max_rows_per_statement",)

    def __init__(self) -> None:
        self._max_rows_per_statement = 0  # read from the connection by the first insert

    def insert_append(
        self,
        conn: sqlite3.Connection,
        item: _BatchAppend,
        version: int,
        position: int,
        recorded_at: float,
    ) -> int | None:
        """The careful path's insert of `item`'s rows (versions after `version`,
        positions after `position`) in a savepoint of its own: None if they went in,
        else the stream's version that refused them (the savepoint rolled back)."""
        stream_id = item.stream_id
        metadata_bytes = item.metadata_bytes
        command_id = item.command_id
        rows: list[tuple[Any, ...]] = []
        for tag, schema_version, data, checksum in item.rows:
            position += 1
            version += 1
            rows.append(
                (
                    position,
                    stream_id,
                    version,
                    tag,
                    schema_version,
                    data,
                    metadata_bytes,
                    command_id,
                    recorded_at,
                    checksum,
                )
            )
        conn.execute("SAVEPOINT append")
        try:
            conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO append")
            conn.execute("RELEASE append")
            return int(conn.execute(_SELECT_VERSION, (stream_id,)).fetchone()[0] or 0)
        conn.execute("RELEASE append")
        return None

    def insert_accepted(
        self,
        conn: sqlite3.Connection,
        accepted: Sequence[tuple[_BatchAppend, AppendResult]],
        recorded_at: float,
        *,
        events: bool,
    ) -> None:
        """Insert the command rows of the `accepted` appends and, if `events` (not on
        the careful path, which inserted them already), their events, with the fewest
        statements."""
        plain_rows, event_rows, command_rows = _flat_rows(accepted, recorded_at, events=events)
        if plain_rows:
            self._insert_rows(conn, _INSERT_PLAIN_EVENTS, 8, plain_rows)
        if event_rows:
            self._insert_rows(conn, _INSERT_EVENTS, 10, event_rows)
        if command_rows:
            self._insert_rows(conn, _INSERT_COMMANDS, 8, command_rows)

    def _insert_rows(
        self, conn: sqlite3.Connection, statements: dict[int, str], width: int, flat: list[Any]
    ) -> None:
        """Insert the rows in `flat` (`width` values each) with the fewest statements."""
        rows = len(flat) // width
        most = self._max_rows_per_statement
        if most == 0:  # the connection's limit on placeholders, read once
            variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            most = self._max_rows_per_statement = max(1, variables // 10)
        done = 0
        for size in _ROWS_PER_STATEMENT:
            if size > most:
                continue
            while rows - done >= size:
                conn.execute(statements[size], flat[done * width : (done + size) * width])
                done += size


def _flat_rows(
    accepted: Sequence[tuple[_BatchAppend, AppendResult]], recorded_at: float, *, events: bool
) -> tuple[list[Any], list[Any], list[Any]]:
    """The rows of the `accepted` appends, flat (one value after the other, as
    `RowInserter._insert_rows` takes them): the events with neither metadata nor a
    command id (`_INSERT_PLAIN_EVENT`'s 8 values each), the other events
    (`_INSERT_EVENT`'s 10), and the command rows (`_INSERT_COMMAND`'s 8); no events
    unless `events`."""
    event_rows: list[Any] = []
    command_rows: list[Any] = []
    plain_rows: list[Any] = []
    add_event_row = event_rows.extend
    add_plain_row = plain_rows.extend
    for item, result in accepted:
        stream_id = item.stream_id
        command_id = item.command_id
        if command_id is not None:
            command_rows.extend(
                (
                    command_id,
                    stream_id,
                    result.first_version,
                    result.last_version,
                    result.first_position,
                    result.last_position,
                    item.digest,
                    recorded_at,
                )
            )
        if not events:
            continue
        position = result.first_position - 1
        version = result.first_version - 1
        metadata_bytes = item.metadata_bytes
        if metadata_bytes is None and command_id is None:
            # A plain loop, not a comprehension: most appends carry one event, and a
            # comprehension per append costs more than the rows it builds.
            for tag, schema_version, data, checksum in item.rows:
                position += 1
                version += 1
                add_plain_row(
                    (
                        position,
                        stream_id,
                        version,
                        tag,
                        schema_version,
                        data,
                        recorded_at,
                        checksum,
                    )
                )
        else:
            for tag, schema_version, data, checksum in item.rows:
                position += 1
                version += 1
                add_event_row(
                    (
                        position,
                        stream_id,
                        version,
                        tag,
                        schema_version,
                        data,
                        metadata_bytes,
                        command_id,
                        recorded_at,
                        checksum,
                    )
                )
    return plain_rows, event_rows, command_rows
