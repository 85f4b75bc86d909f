"""The writer process of `open_store(path, writer="process")`.

The store starts it with `python -m store._writer_process` and talks to it over its
standard input and output in the frames of `store._wire`. The first frame is the
store's path and options; the process opens its own write connection, answers `Ready`,
then runs one batch transaction per frame, in order, with the same `_BatchWriter` the
in-process writer uses, and answers each with its outcomes (`Done`) or its error
(`Failed`). End of input is the signal to stop: it closes its connection and exits. A
store whose process dies closes that input too, so the writer never outlives it by
more than the batches already sent to it (two at most).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import sys
from typing import Any, BinaryIO, cast

from store import _wire
from store._batch import _Outcome, _Write
from store._errors import ChainBroken, ConcurrencyError, IdempotencyConflict, LeaseLost
from store._options import StoreOptions
from store._records import AppendResult
from store._sqlite_batch import _BatchWriter
from store._sqlite_connect import _configure, _state
from store._sqlite_errors import _translate

_NO_FUTURE: Any = None  # the futures stay in the store's process; the batch never reads them
_NOT_COMMITTED: tuple[int, int, int, int] = (0, 0, 0, 0)
_PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's payload, or None at end of input."""
    header = stream.read(_wire.HEADER.size)
    if len(header) < _wire.HEADER.size:
        return None
    (size,) = _wire.HEADER.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def done(
    outcomes: list[_Outcome], others: list[tuple[int, str, str, int, int]]
) -> list[tuple[int, int, int, int]]:
    """`Done.results` for `outcomes`, adding to `others` what a tuple cannot say."""
    results: list[tuple[int, int, int, int]] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, AppendResult):
            results.append(
                (
                    outcome.first_version,
                    outcome.last_version,
                    outcome.first_position,
                    outcome.last_position,
                )
            )
            if outcome.duplicate:
                others.append((index, "duplicate", "", 0, 0))
            continue
        results.append(_NOT_COMMITTED)
        if isinstance(outcome, ConcurrencyError):
            others.append((index, "conflict", "", outcome.expected, outcome.actual))
        elif isinstance(outcome, IdempotencyConflict):
            others.append((index, "idempotency", outcome.recorded_stream_id, 0, 0))
        elif isinstance(outcome, LeaseLost):
            others.append((index, "lease_lost", outcome.holder or "", outcome.holder_epoch or 0, 0))
        elif isinstance(outcome, ChainBroken):
            others.append((index, "chain_broken", "", outcome.expected, 0))
        else:
            others.append((index, type(outcome).__name__, str(outcome), 0, 0))
    return results


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    payload = read_frame(inp)
    if payload is None:
        return
    setup = _wire.to_writer.decode(payload)
    if not isinstance(setup, _wire.Setup):
        raise SystemExit(f"writer process: expected the setup frame, got {type(setup).__name__}")
    path = setup.path
    options = StoreOptions(**cast(dict[str, Any], setup.options))
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=options.busy_timeout, check_same_thread=False
    )
    try:
        _configure(conn, options, False)
        data_version, last_position = _state(conn)
        writer = _BatchWriter(path, options, data_version, last_position)
        out.write(_wire.frame(_wire.Ready(os.getpid())))
        out.flush()
        while (payload := read_frame(inp)) is not None:
            batch = _wire.to_writer.decode(payload)
            if not isinstance(batch, _wire.Batch):
                raise SystemExit(f"writer process: expected a batch, got {type(batch).__name__}")
            writes = [
                _Write(w.sql, tuple(w.params), _NO_FUTURE, w.fence, returning=w.returning)
                for w in batch.writes
            ]
            reply: _wire.Done | _wire.Failed
            try:
                result = writer._write_batch(conn, batch.appends, writes)
            except Exception as exc:  # noqa: BLE001 - the batch failed as a unit: say so
                error = _translate(exc, "commit")
                reply = _wire.Failed(type(error).__name__, str(error))
            else:
                others: list[tuple[int, str, str, int, int]] = []
                write_error = result.write_error
                reply = _wire.Done(
                    done(result.outcomes, others),
                    others,
                    result.recorded_at,
                    result.commit_seconds,
                    None if write_error is None else (type(write_error).__name__, str(write_error)),
                    result.last_position,
                    None
                    if result.write_results is None
                    else [
                        (lost, None if row is None else list(row))
                        for lost, row in result.write_results
                    ],
                )
            out.write(_wire.frame(reply))
            out.flush()
    finally:
        conn.close()


def widen_pipes(*fds: int) -> None:
    """Give the pipes to and from the store room for whole batches (Linux; elsewhere,
    or past the system's limit, they keep their size). With the default 64 KiB, a
    batch of a few thousand rows does not fit: the store's send then waits until this
    process reads, and this process reads it only as fast as the store's busy event
    loop refills the pipe, so the batch in flight stops overlapping the loop's work."""
    resize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if resize is None:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, resize, _PIPE_BYTES)


def main() -> None:
    widen_pipes(0, 1)
    # Frames go out on a private copy of stdout; anything else written to fd 1 (a stray
    # print, a library's warning) lands on stderr instead of corrupting a frame.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
