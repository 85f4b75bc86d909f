"""The writer process of `open_store(path, writer="process")`.

The parent starts it with `python -m store._writer_process` and talks to it over its
standard input and output in frames: a 4-byte little-endian length, then a `marshal`
payload (plain tuples, lists, str, bytes, int, float and None; both ends are the same
program, so nothing else ever crosses). The first frame is the store's path and
options; the process opens its own write connection, answers `("ready", pid)`, then
runs one batch transaction per frame, in order, with the same `_BatchWriter` the
in-process writer uses, and answers each with its outcomes. End of input is the signal
to stop: it closes its connection and exits. A parent that dies closes that input too,
so the process never outlives it by more than the batch it is running.

Outcomes travel as tuples and are rebuilt by the parent (`SQLiteEventStore`):
`(first_version, last_version, first_position, last_position)` for a committed append,
`("duplicate", ...)` with the same four for an idempotent repeat, `("conflict",
expected, actual)`, `("idempotency", recorded_stream_id)`, `("error", class name,
message)`. A batch that failed as a unit answers `("fail", class name, message)`.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import struct
import sys
from typing import Any, BinaryIO

from store._errors import ConcurrencyError, IdempotencyConflict
from store._records import AppendResult
from store._sqlite import (
    StoreOptions,
    _Append,
    _BatchWriter,
    _configure,
    _state,
    _translate,
    _Write,
)

_HEADER = struct.Struct("<I")
_NO_FUTURE: Any = None  # the futures stay in the parent; the transaction never reads them


def read_frame(stream: BinaryIO) -> Any:
    """The next frame's payload, or None at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return marshal.loads(payload)


def write_frame(stream: BinaryIO, value: tuple[Any, ...]) -> None:
    payload = marshal.dumps(value)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _outcome(outcome: object) -> tuple[Any, ...]:
    if isinstance(outcome, AppendResult):
        numbers = (
            outcome.first_version,
            outcome.last_version,
            outcome.first_position,
            outcome.last_position,
        )
        return ("duplicate", *numbers) if outcome.duplicate else numbers
    if isinstance(outcome, ConcurrencyError):
        return ("conflict", outcome.expected, outcome.actual)
    if isinstance(outcome, IdempotencyConflict):
        return ("idempotency", outcome.recorded_stream_id)
    return ("error", type(outcome).__name__, str(outcome))


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    setup = read_frame(inp)
    if setup is None:
        return
    path, fields = setup
    options = StoreOptions(**fields)
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=options.busy_timeout, check_same_thread=False
    )
    try:
        _configure(conn, options, False)
        data_version, last_position = _state(conn)
        writer = _BatchWriter(path, options, data_version, last_position)
        write_frame(out, ("ready", os.getpid()))
        while (batch := read_frame(inp)) is not None:
            raw_appends, raw_writes = batch
            appends = [
                _Append(stream_id, expected, (), rows, None, meta, command_id, digest, _NO_FUTURE)
                for stream_id, expected, rows, meta, command_id, digest in raw_appends
            ]
            writes = [_Write(sql, params, _NO_FUTURE) for sql, params in raw_writes]
            try:
                result = writer._write_batch(conn, appends, writes)
            except Exception as exc:  # noqa: BLE001 - the batch failed as a unit: say so
                error = _translate(exc, "commit")
                write_frame(out, ("fail", type(error).__name__, str(error)))
                continue
            write_error = result.write_error
            write_frame(
                out,
                (
                    "ok",
                    [_outcome(outcome) for outcome in result.outcomes],
                    result.recorded_at,
                    result.commit_seconds,
                    None if write_error is None else (type(write_error).__name__, str(write_error)),
                    result.last_position,
                ),
            )
    finally:
        conn.close()


def main() -> None:
    # Frames go out on a private copy of stdout; anything else written to fd 1 (a stray
    # print, a library's warning) lands on stderr instead of corrupting a frame.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
