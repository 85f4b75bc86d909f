"""Per-request plumbing of the bank service that is not about the bank.

- `ReadYourWrites`: a query's wait for the position the client got from a command,
  bounded by the service's consistency timeout. With several workers on one store, that
  position may have been written by another worker: this worker's bus learns of it from
  its follower (the store's commit hint), and the wait rides on that instead of making
  the read model read the store on its own for every such request.
- `ServedBy`: an ASGI middleware that names the worker process on every response
  (`X-Worker-Pid`), errors and unknown routes included.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus import EventBus
from readmodels import ConsistencyTimeout, ProjectionHandle
from store import RecordedEvent

__all__ = ["WORKER_HEADER", "ReadYourWrites", "ServedBy"]

WORKER_HEADER = "X-Worker-Pid"
"""The response header naming the process (the uvicorn worker) that answered."""


class ReadYourWrites:
    """Waits until a read model reflects a position, whoever committed it.

    A position this worker committed is on its bus before the command was answered. One
    another worker committed reaches the bus through the follower: `wait` first waits
    for the bus to fan it out (woken by the follower, never by a timer), then for the
    read model to apply it. Since the bus has it by then, the read model's own wait
    finds it published and never asks the store itself: the cost of reading another
    worker's write is the follower's delay (the store's commit hint), not a store read
    per request.

    Create it inside the actor system's lifetime; `close` before the system closes.
    """

    def __init__(self, bus: EventBus, timeout: float) -> None:
        self._bus = bus
        self._timeout = timeout
        self._moved = anyio.Event()
        self._remove = bus.add_external_listener(self._followed)

    def _followed(self, events: Sequence[RecordedEvent]) -> None:
        # The follower fanned out positions it read from the store (the bus's head moved).
        moved, self._moved = self._moved, anyio.Event()
        moved.set()

    async def wait(self, handle: ProjectionHandle[Any], position: int) -> None:
        """Return once `handle`'s view reflects `position`.

        Raises:
            ConsistencyTimeout: not reflected within the timeout (the position is not
                committed, or this worker has not seen it in time).
            ProjectionStopped: the read model stopped first (the service is stopping).
        """
        if handle.position >= position:
            return
        timeout = self._timeout
        deadline = anyio.current_time() + timeout
        if handle.running:
            with anyio.move_on_after(timeout):
                while self._bus.head < position:
                    await self._moved.wait()
            if self._bus.head < position:
                # Never fanned out here in time: maybe never committed at all.
                raise ConsistencyTimeout(
                    "projection", handle.name, position, handle.position, timeout
                )
        remaining = max(deadline - anyio.current_time(), 0.0)
        try:
            await handle.wait_for(position, timeout=remaining)
        except ConsistencyTimeout as exc:
            raise ConsistencyTimeout(exc.kind, exc.name, position, exc.reached, timeout) from None

    def close(self) -> None:
        """Stop listening to the bus's follower."""
        self._remove()


class ServedBy:
    """ASGI middleware: every HTTP response carries `X-Worker-Pid`, this process's id
    (which of several uvicorn workers answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # (read per request, not once: an app built before a fork answers in the child)
        header = (b"x-worker-pid", str(os.getpid()).encode())

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_header)
