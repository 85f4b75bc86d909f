"""The bank service's assembly: one Starlette application of its routes, error
handlers, middleware and lifespan (`create_app`), and its running parts (`bank_of`).

The app embeds an esactors system whose lifespan is the app's (`_service`); its routes
are the accounts' (`_accounts`), the transfers' (`_transfers`) and the operational ones
(`_health`), each wrapped by `endpoint` (`_errors`), which answers every failure in the
JSON error shape.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors import ShuttingDown
from examples.bank_service._accounts import AccountRoutes
from examples.bank_service._errors import crashed, endpoint, routing_error
from examples.bank_service._health import HealthRoutes
from examples.bank_service._plumbing import ServedBy
from examples.bank_service._service import Bank, Service, ServiceSettings
from examples.bank_service._transfers import TransferRoutes
from store import EventStore

__all__ = ["DATABASE_ENV", "bank_of", "create_app"]

DATABASE_ENV = "BANK_SERVICE_DB"
"""The environment variable naming the database (a SQLite file or a `postgresql://` URL)
when `create_app` is given none."""


def bank_of(app: Starlette) -> Bank:
    """The running parts of a bank service app `app` (inside its lifespan).

    Raises:
        ShuttingDown: the app's lifespan is not open.
    """
    bank = getattr(app.state, "bank", None)
    if not isinstance(bank, Bank):
        raise ShuttingDown("the bank service is not running (outside its lifespan)")
    return bank


def create_app(
    database: str | os.PathLike[str] | EventStore | None = None,
    settings: ServiceSettings | None = None,
) -> Starlette:
    """The bank service as an ASGI application.

    Args:
        database: the SQLite file or a `postgresql://` URL (opened and closed by the
            app's lifespan), or an open `EventStore` (used, not closed). Default: the
            one named by the `BANK_SERVICE_DB` environment variable, else `bank.db`.
        settings: limits and `open_system` options (default: `ServiceSettings()`).

    The actor system lives exactly as long as the app's lifespan: run the app under a
    server that runs lifespans (uvicorn does).
    """
    if database is None:
        database = os.environ.get(DATABASE_ENV, "bank.db")
    service = Service(database, settings or ServiceSettings())
    accounts, transfers, health = (
        AccountRoutes(service),
        TransferRoutes(service),
        HealthRoutes(service),
    )

    def wrap(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        return endpoint(handler, service.settings.retry_after)

    routes = [
        Route("/accounts/{id}/open", wrap(accounts.open_account), methods=["POST"]),
        Route("/accounts/{id}/deposit", wrap(accounts.deposit), methods=["POST"]),
        Route("/accounts/{id}/withdraw", wrap(accounts.withdraw), methods=["POST"]),
        Route("/accounts/{id}/statement", wrap(accounts.statement), methods=["GET"]),
        Route("/accounts/{id}", wrap(accounts.account), methods=["GET"]),
        Route("/transfers", wrap(transfers.request_transfer), methods=["POST"]),
        Route("/transfers/{id}", wrap(transfers.transfer), methods=["GET"]),
        Route("/health", wrap(health.health), methods=["GET"]),
        Route("/metrics", wrap(health.metrics), methods=["GET"]),
    ]
    handlers = {HTTPException: routing_error, Exception: crashed}
    return Starlette(
        routes=routes,
        middleware=[Middleware(ServedBy)],
        lifespan=service.lifespan,
        exception_handlers=handlers,
    )
