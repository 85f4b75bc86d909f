"""Worker processes of a demo command, and the pipe each one talks to its parent on.

The parent starts each worker as `sys.executable -m MODULE ARGS...` with
`anyio.open_process` (the `demo` package on its `PYTHONPATH`) and talks to it in JSON
lines, one message a line each way: the worker's standard input and output. Its
standard error is the parent's. `workers()` is the parent's side: whatever happens
inside it (an error, a cancellation, Ctrl-C), every worker still running is killed
and every one is reaped before it exits. `ParentPipe` is the worker's side: the end
of its standard input (the parent went away) stops it, so no worker outlives its
parent's pipe.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import demo

__all__ = ["MAX_LINE", "ParentGone", "ParentPipe", "Worker", "Workers", "tell", "workers"]

MAX_LINE = 1 << 26
"""The longest line either side may send."""

_ROOT = str(Path(demo.__file__).resolve().parents[1])
"""The directory holding the `demo` package: on the workers' `PYTHONPATH`."""


class Worker:
    """One running worker process: lines to it, lines from it, one kill."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.killed = False
        assert process.stdout is not None
        self._lines = BufferedByteReceiveStream(process.stdout)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def send(self, message: object) -> None:
        """Send `message` as one JSON line. A worker that is gone raises
        `anyio.BrokenResourceError`."""
        assert self.process.stdin is not None
        await self.process.stdin.send(msgspec.json.encode(message) + b"\n")

    async def receive(self) -> bytes | None:
        """The worker's next line, or None once its standard output ended (it exited)."""
        try:
            return await self._lines.receive_until(b"\n", MAX_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            return None

    def kill(self) -> None:
        """SIGKILL the worker, once (a second kill of a dead child would reap it under
        the event loop's watcher, which then reports the wrong status)."""
        if not self.killed and self.process.returncode is None:
            self.killed = True
            self.process.kill()

    async def wait(self) -> int:
        """Wait for the worker to exit; its status (-9 after `kill`)."""
        return await self.process.wait()


class Workers:
    """The workers started inside one `workers()` block."""

    def __init__(self) -> None:
        self.started: list[Worker] = []
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [_ROOT, os.environ.get("PYTHONPATH")])
        )

    async def start(self, module: str, args: Sequence[str]) -> Worker:
        """Start `python -m module args...`."""
        command = [sys.executable, "-m", module, *args]
        process = await anyio.open_process(
            command, stdin=PIPE, stdout=PIPE, stderr=None, env=self._env
        )
        worker = Worker(process)
        self.started.append(worker)
        return worker


@asynccontextmanager
async def workers() -> AsyncIterator[Workers]:
    """A place to start workers; on the way out every one still running is killed, and
    every one is reaped."""
    pool = Workers()
    try:
        yield pool
    finally:
        with anyio.CancelScope(shield=True):
            for worker in pool.started:
                worker.kill()
            for worker in pool.started:
                await worker.process.aclose()


class ParentGone(Exception):
    """The parent process closed the worker's standard input: the worker stops."""


class ParentPipe:
    """The worker's side: the parent's lines on standard input (run `read` in a task:
    at the end of the input it raises `ParentGone`, which stops the worker)."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            await self._send.send(line)
        raise ParentGone("the parent process closed its pipe: stopping")

    async def receive(self) -> bytes:
        """The parent's next line."""
        return await self._receive.receive()


def tell(message: Any) -> None:
    """Write `message` to the parent as one JSON line, flushed at once."""
    sys.stdout.buffer.write(msgspec.json.encode(message) + b"\n")
    sys.stdout.buffer.flush()
