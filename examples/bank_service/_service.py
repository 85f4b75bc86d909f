"""The running bank service: its settings, its parts, and the lifespan that owns them.

The lifespan opens the actor system on a SQLite file or a PostgreSQL database (a
`postgresql://` URL, as `open_store` takes it), starts the transfer process manager and
the read models, and closes it all on shutdown: the system stops accepting commands
(new ones get 503), lets every accepted command commit and answer, then closes
the store. `Service` is what every handler shares while it runs: the running parts
(`Bank`), the request body within its limit, and the wait for a position the client
got from a command (read your own writes).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request

from actors import (
    ActorSystem,
    AggregateRouter,
    OpenSystemSettings,
    ProcessManagerHandle,
    ShuttingDown,
    open_system,
)
from demo.bank import (
    Account,
    AccountCommand,
    AccountEvent,
    AccountState,
    Balances,
    BalancesView,
    Statements,
    StatementsView,
    Transfer,
    TransferCommand,
    TransferEvent,
    TransferProcess,
    TransferState,
)
from examples.bank_service._plumbing import ReadYourWrites
from examples.bank_service._requests import after, read_body
from examples.bank_service._telemetry import flush_telemetry
from readmodels import ProjectionHandle
from store import EventStore

__all__ = ["Bank", "Service", "ServiceSettings"]

_log = structlog.get_logger("bank_service")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How the service behaves at its edges; every limit is finite.

    Attributes:
        max_body_bytes: the largest request body accepted (413 beyond it).
        consistency_timeout: seconds a query waits for the read model to reach the
            position a client asked for (`X-Consistent-With`, `?after=`) before 503.
        retry_after: seconds suggested in `Retry-After` on every 503.
        system_options: options for `open_system` (`mailbox_capacity`, `ask_timeout`,
            `max_live_actors`, `synchronous`, `grace`...).
    """

    max_body_bytes: int = 16_384
    consistency_timeout: float = 2.0
    retry_after: int = 1
    system_options: OpenSystemSettings = field(default_factory=lambda: OpenSystemSettings())

    def __post_init__(self) -> None:
        if type(self.max_body_bytes) is not int or self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be a positive int, not {self.max_body_bytes!r}")
        timeout = self.consistency_timeout
        if type(timeout) not in (int, float) or not 0 <= timeout < float("inf"):
            raise ValueError(
                f"consistency_timeout must be finite seconds >= 0, not {self.consistency_timeout!r}"
            )
        if type(self.retry_after) is not int or self.retry_after < 0:
            raise ValueError(f"retry_after must be an int >= 0, not {self.retry_after!r}")


@dataclass(frozen=True, slots=True)
class Bank:
    """The parts of a running bank service (while its lifespan is open): the actor
    system, the routers, the transfer process and the read models."""

    system: ActorSystem
    accounts: AggregateRouter[AccountState, AccountCommand, AccountEvent]
    transfers: AggregateRouter[TransferState, TransferCommand, TransferEvent]
    process: ProcessManagerHandle
    balances: ProjectionHandle[BalancesView]
    statements: ProjectionHandle[StatementsView]


class Service:
    """One bank service app's state: its database and settings, and its running parts
    while its lifespan is open."""

    def __init__(self, database: str | os.PathLike[str] | EventStore, settings: ServiceSettings):
        self.database = database
        self.settings = settings
        self._running: Bank | None = None
        self._reads: ReadYourWrites | None = None

    @property
    def running(self) -> Bank:
        running = self._running
        if running is None:
            raise ShuttingDown("the bank service is not running (outside its lifespan)")
        return running

    @property
    def reads(self) -> ReadYourWrites:
        reads = self._reads
        if reads is None:
            raise ShuttingDown("the bank service is not running (outside its lifespan)")
        return reads

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with open_system(self.database, **self.settings.system_options) as system:
            running = Bank(
                system=system,
                accounts=system.aggregates(Account),
                transfers=system.aggregates(Transfer),
                process=await system.run_process_manager(TransferProcess()),
                balances=await system.project(Balances()),
                statements=await system.project(Statements()),
            )
            app.state.bank = running
            self._reads = ReadYourWrites(system.bus, self.settings.consistency_timeout)
            self._running = running
            _log.info("service.started", position=await system.store.last_position())
            try:
                yield
            finally:
                self._reads.close()
                # open_system's exit stops accepting, drains every mailbox (accepted
                # commands commit and answer), then closes the store.
                _log.info("service.stopping", **msgspec.structs.asdict(system.statistics()))
        self._running = None
        self._reads = None
        app.state.bank = None
        _log.info("service.stopped")
        flush_telemetry()

    async def body(self, request: Request) -> bytes:
        """The request body, refused (413) beyond `max_body_bytes` before it is read whole."""
        return await read_body(request, self.settings.max_body_bytes)

    async def consistent(self, handle: ProjectionHandle[Any], request: Request) -> None:
        """Wait (bounded) until `handle` reflects the position the request names, if any;
        another worker's write included (see `ReadYourWrites`)."""
        position = after(request)
        if position is not None:
            await self.reads.wait(handle, position)
