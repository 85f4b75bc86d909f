"""Drive an ASGI app's lifespan the way a server does, and talk to it over httpx.

httpx's ASGITransport sends requests only; a server also runs the lifespan protocol
(startup before the first request, shutdown after the last). `Lifespan` does that part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Unpack

import anyio
import anyio.abc
import httpx
import msgspec
from starlette.applications import Starlette

from actors import OpenSystemSettings
from examples.bank_service import Bank, ServiceSettings, bank_of, create_app
from store import AppendResult, EventStore
from tests.actors.support import _Wrapper

Message = MutableMapping[str, Any]


class Lifespan:
    """The server side of the ASGI lifespan protocol for one app."""

    def __init__(self, app: Starlette, task_group: anyio.abc.TaskGroup) -> None:
        self.app = app
        self._tg = task_group
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Message](2)
        self._app_outbox, self._from_app = anyio.create_memory_object_stream[Message](2)
        self.stopped = anyio.Event()

    async def startup(self) -> None:
        """Start the app's lifespan task and wait for its startup to complete."""
        self._tg.start_soon(self._run)
        await self._to_app.send({"type": "lifespan.startup"})
        reply = await self._from_app.receive()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"lifespan startup failed: {reply.get('message')}")

    async def begin_shutdown(self) -> None:
        """Tell the app to shut down (returns before it has)."""
        await self._to_app.send({"type": "lifespan.shutdown"})

    async def wait_stopped(self) -> None:
        """Wait for the app to report its shutdown complete."""
        reply = await self._from_app.receive()
        if reply["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"lifespan shutdown failed: {reply.get('message')}")
        await self.stopped.wait()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        async with self._app_inbox, self._app_outbox:
            await self.app(scope, self._app_inbox.receive, self._app_outbox.send)
        self.stopped.set()

    async def aclose(self) -> None:
        await self._to_app.aclose()
        await self._from_app.aclose()


@dataclass(frozen=True, slots=True)
class Running:
    """A bank service app with its lifespan open and an HTTP client on it."""

    app: Starlette
    http: httpx.AsyncClient
    bank: Bank
    lifespan: Lifespan


@asynccontextmanager
async def serve(
    database: str | EventStore | None,
    *,
    settings: ServiceSettings | None = None,
    **system_options: Unpack[OpenSystemSettings],
) -> AsyncIterator[Running]:
    """Start the bank service on `database`, yield it with a client, then shut it down
    (unless the body already did, through `running.lifespan`)."""
    if system_options:
        settings = ServiceSettings(system_options=system_options)
    app = create_app(database, settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        anyio.create_task_group() as tg,
        httpx.AsyncClient(transport=transport, base_url="http://bank.test") as http,
    ):
        lifespan = Lifespan(app, tg)
        try:
            with anyio.fail_after(10):
                await lifespan.startup()
            yield Running(app, http, bank_of(app), lifespan)
            if not lifespan.stopped.is_set():
                with anyio.fail_after(15):
                    await lifespan.begin_shutdown()
                    await lifespan.wait_stopped()
        finally:
            await lifespan.aclose()


async def settle(bank: Bank) -> int:
    """Wait until the transfer process has handled every event and the read models
    reflect them all; returns that position. Waits on positions, never on time."""
    store = bank.system.store
    with anyio.fail_after(30):
        while True:
            head = await store.last_position()
            await bank.process.wait_for(head)
            await bank.balances.wait_for(head)
            await bank.statements.wait_for(head)
            if await store.last_position() == head:
                return head


def json_of(response: httpx.Response) -> Mapping[str, Any]:
    """The response's JSON object body."""
    body = response.json()
    assert isinstance(body, dict), body
    return body


class HoldingStore(_Wrapper):
    """A real store whose appends can be held: while `hold()` is on, every append waits
    (after setting `entered`) until `release()`."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self._gate = anyio.Event()
        self._gate.set()
        self.entered = anyio.Event()

    def hold(self) -> None:
        """Make every append from now on wait for `release()`."""
        self._gate = anyio.Event()
        self.entered = anyio.Event()

    def release(self) -> None:
        """Let the held appends (and every later one) through."""
        self._gate.set()

    async def append(
        self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any
    ) -> AppendResult:
        gate = self._gate
        if not gate.is_set():
            self.entered.set()
            await gate.wait()
        return await self.inner.append(stream_id, events, **kw)
