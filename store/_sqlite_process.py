"""The store's side of the SQLite writer process: batches out, answers back, start, stop.

With `writer="process"` the batch transactions run in a process of their own
(`store._writer_process`); up to two batches are in flight, answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
from collections import deque
from typing import Final, cast

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from store import _wire, faults, telemetry
from store._batch import _Append, _BatchResult, _fail_batch, _Outcome, _Write
from store._codec import EventRegistry
from store._errors import (
    ChainBroken,
    ConcurrencyError,
    IdempotencyConflict,
    LeaseLost,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from store._groupcommit import GroupCommitStore
from store._options import StoreOptions
from store._records import AppendResult

_MAX_IN_FLIGHT: Final = 2
"""Batches the writer process may hold at once: one committing, one queued behind it."""
_MIN_SPLIT: Final = 8
"""With nothing in flight, a queue of at least twice this many appends goes to the
writer process in two halves, so one half is answered while the other commits."""


class _ProcessWriter(GroupCommitStore):
    """A store whose batches may commit in a writer process (`_run_process_writer`)
    instead of on the writer task (`_run_writer`): this is the event loop's side."""

    _chains = True  # the batch transaction refuses an append whose chained one did not commit

    def __init__(
        self,
        path: str,
        registry: EventRegistry,
        options: StoreOptions,
        last_position: int,
        process: anyio.abc.Process | None,
    ) -> None:
        super().__init__(path, registry, options, last_position)
        # the writer process (writer="process"): batches sent and not yet answered
        self._process = process
        self._in_flight: deque[tuple[list[_Append], list[_Write]]] = deque()
        self._slot = asyncio.Event()
        # kept here, not in the reader: a reader cancelled mid-frame resumes it
        self._frames = None
        if process is not None:
            assert process.stdout is not None  # opened with stdout=PIPE
            self._frames = _Frames(process.stdout)

    async def _run_process_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Send batches to the writer process (at most `_MAX_IN_FLIGHT` unanswered) while
        `_receive_replies` answers them, in order, as the process commits them."""
        process = self._process
        assert process is not None
        assert process.stdin is not None
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._receive_replies)
                await self._send_batches(process.stdin)
                with anyio.CancelScope(shield=True):
                    while self._in_flight and self._failure is None:
                        self._slot.clear()
                        await self._slot.wait()
                    # End of input: the process finishes and exits; the reader sees EOF.
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await process.stdin.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                self._closing = True
                if self._in_flight and self._failure is None:
                    # Cancelled with batches in flight: the process commits or fails
                    # each as a unit, as the writer thread's shielded commit does; read
                    # its answers before stopping it, so no outcome goes unreported.
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await process.stdin.aclose()
                    options = self.options
                    with anyio.move_on_after(options.busy_timeout * (options.busy_retries + 1)):
                        await self._receive_replies()
                await _stop_process(process, self.options.busy_timeout)
            error = self._failure or StoreClosed(
                f"the store {self.path!r} closed before the write was answered"
            )
            while self._in_flight:
                _fail_batch(*self._in_flight.popleft(), error)
            self._fail_pending(error)
            self._writer_done.set()

    async def _send_batches(self, stdin: anyio.abc.ByteSendStream) -> None:
        pending = self._pending
        in_flight = self._in_flight
        while self._failure is None:
            if not pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(in_flight) >= _MAX_IN_FLIGHT:
                self._slot.clear()
                await self._slot.wait()
                continue
            most = len(pending)
            free = _MAX_IN_FLIGHT - len(in_flight)
            if free > 1 and most >= 2 * _MIN_SPLIT:
                most = -(-most // free)  # share the queue out over the free slots
            appends, writes = self._take(most)
            if not appends and not writes:
                # What is left waits for its chain's batch in flight to be answered.
                if pending and in_flight:
                    self._slot.clear()
                    await self._slot.wait()
                elif pending:  # answered, its callers not yet: let that finish
                    await anyio.lowlevel.checkpoint()
                continue
            wire = _wire.AppendWire
            batch = _wire.Batch(
                [
                    wire(
                        item.stream_id,
                        item.expected,
                        item.rows,
                        item.metadata_bytes,
                        item.command_id,
                        item.digest,
                        item.fence,
                        item.chained,
                    )
                    for item in appends
                ],
                [
                    _wire.WriteWire(write.sql, list(write.params), write.fence, write.returning)
                    for write in writes
                ],
            )
            in_flight.append((appends, writes))
            try:
                with anyio.CancelScope(shield=True):
                    await stdin.send(_wire.frame(batch))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the process is gone: the reader reports it and fails the batches

    async def _receive_replies(self) -> None:
        process, frames = self._process, self._frames
        assert process is not None
        assert frames is not None
        try:
            while (payload := await frames.next()) is not None:
                try:
                    reply = _wire.from_writer.decode(payload)
                except msgspec.DecodeError:
                    reply = None
                if not isinstance(reply, _wire.Done | _wire.Failed):
                    # Not what it must answer: stop trusting it (its batches are unknown).
                    self._log.error("store.writer_process_garbled", answer=repr(reply)[:200])
                    process.kill()
                    break
                appends, writes = self._in_flight.popleft()
                self._slot.set()
                if isinstance(reply, _wire.Done):
                    if not (
                        reply.others
                        or writes
                        or self._listeners
                        or faults.enabled
                        or telemetry.active
                    ):
                        self._answer_plainly(appends, reply)
                        continue
                    with anyio.CancelScope(shield=True):
                        write_error = reply.write_error
                        result = _BatchResult(
                            _outcomes(appends, reply),
                            reply.recorded_at,
                            reply.seconds,
                            None if write_error is None else _store_error(*write_error),
                            reply.last_position,
                            None
                            if reply.write_results is None
                            else [
                                (lost, None if row is None else tuple(row))
                                for lost, row in reply.write_results
                            ],
                        )
                        await self._answer(appends, writes, result)
                else:
                    _fail_batch(appends, writes, _store_error(reply.error, reply.message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        if self._in_flight or not self._closing:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.options.busy_timeout):
                await process.wait()  # its exit code, for the report
            code = process.returncode
            exited = (
                f"the writer process of the store {self.path!r} exited"
                f"{'' if code is None else f' (code {code})'}"
            )
            sent = sum(len(appends) + len(writes) for appends, writes in self._in_flight)
            self._failure = StoreUnavailable(f"{exited}; the store takes no more writes: reopen it")
            self._closing = True
            self._log.error("store.writer_process_failed", returncode=code, in_flight=sent)
            unknown = StoreUnavailable(
                f"{exited} while it held this write: its outcome is unknown (one of {sent}"
                " sent to it); reopen the store and retry with the same command id"
            )
            while self._in_flight:
                _fail_batch(*self._in_flight.popleft(), unknown)
            self._fail_pending(self._failure)
            self._slot.set()
            self._wake.set()

    def _answer_plainly(self, appends: list[_Append], done: _wire.Done) -> None:
        """`_answer` for the writer process's common batch (every append committed, no
        keyed write, no commit listener, no fault rule, no telemetry): built and answered in
        one pass."""
        self._last_position = done.last_position
        for item, (first_version, last_version, first_position, last_position) in zip(
            appends, done.results, strict=True
        ):
            future = item.future
            if not future.done():
                future.set_result(
                    AppendResult(
                        item.stream_id, first_version, last_version, first_position, last_position
                    )
                )
        # Every append committed, so their positions are one contiguous run.
        events = done.results[-1][3] - done.results[0][2] + 1 if appends else 0
        self._counters.count(len(appends), events, 0, [], done.seconds)


def _outcomes(appends: list[_Append], done: _wire.Done) -> list[_Outcome]:
    """The writer process's outcomes (see `store._wire.Done`) as the thread's."""
    outcomes: list[_Outcome] = [
        AppendResult(item.stream_id, *numbers)
        for item, numbers in zip(appends, done.results, strict=True)
    ]
    for index, kind, text, a, b in done.others:
        item = appends[index]
        if kind == "duplicate":
            outcomes[index] = AppendResult(item.stream_id, *done.results[index], duplicate=True)
        elif kind == "conflict":
            outcomes[index] = ConcurrencyError(item.stream_id, a, b)
        elif kind == "idempotency":
            outcomes[index] = IdempotencyConflict(cast(str, item.command_id), item.stream_id, text)
        elif kind == "chain_broken":
            outcomes[index] = ChainBroken(item.stream_id, a)
        elif kind == "lease_lost" and item.fence is not None:
            name, owner, epoch = item.fence
            outcomes[index] = LeaseLost(name, owner, epoch, text or None, a if text else None)
        else:
            outcomes[index] = _store_error(kind, text)
    return outcomes


_ERRORS_BY_NAME: Final[dict[str, type[StoreError]]] = {
    cls.__name__: cls for cls in (StoreError, StoreFull, StoreCorrupted, StoreUnavailable)
}


def _store_error(name: str, message: str) -> StoreError:
    """An error the writer process reported (its class by name, its message)."""
    return _ERRORS_BY_NAME.get(name, StoreError)(message)


class _Frames:
    """The frames (`store._wire`) of the writer process's output, as payloads."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next frame's payload, or None at end of output."""
        buffer = self._buffer
        header = _wire.HEADER.size
        while True:
            if len(buffer) >= header:
                (size,) = _wire.HEADER.unpack_from(buffer)
                end = header + size
                if len(buffer) >= end:
                    payload = bytes(buffer[header:end])
                    del buffer[:end]
                    return payload
            try:
                buffer += await self._stream.receive()
            except anyio.EndOfStream:
                return None


async def _start_process(path: str, options: StoreOptions) -> anyio.abc.Process:
    """Start the writer process and wait until its connection is open."""
    env = dict(os.environ)
    # The child imports this package the way this process did.
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
    # The fault rules this process runs with now (not those it was started with, which
    # it may have replaced) apply to the writer's points too; "" means none.
    spec, seed = faults.current()
    env[faults.ENV], env[faults.SEED_ENV] = spec, str(seed)
    process = await anyio.open_process(
        [sys.executable, "-m", "store._writer_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        env=env,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        await process.stdin.send(_wire.frame(_wire.Setup(path, dataclasses.asdict(options))))
        payload = await _Frames(process.stdout).next()
        ready = None if payload is None else _wire.from_writer.decode(payload)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _stop_process(process, 0)
        raise
    if not isinstance(ready, _wire.Ready):
        with anyio.CancelScope(shield=True):
            code = await _stop_process(process, options.busy_timeout)
        raise StoreUnavailable(
            f"the writer process for the store {path!r} did not start (exit code {code});"
            " its error is on standard error"
        )
    return process


async def _stop_process(process: anyio.abc.Process, grace: float) -> int | None:
    """Close the process's input, wait for it to exit (killing it after `grace`
    seconds) and close its output; returns its exit code."""
    if process.stdin is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
    return process.returncode
