"""The bank service: a Starlette application that embeds an esactors system.

The app's lifespan opens the actor system on a SQLite file or a PostgreSQL database (a
`postgresql://` URL, as `open_store` takes it), starts the transfer process manager and
the read models, and closes it all on shutdown: the system stops accepting commands
(new ones get 503), lets every accepted command commit and answer, then closes
the store. Commands go to the aggregates with `ask` (a durable acknowledgement); queries
read the in-memory read models, optionally after waiting for a position the client got
from a command (read your own writes).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors import (
    ActorSystem,
    AggregateRouter,
    AskTimeout,
    CommandFailed,
    CommandResult,
    EvolveError,
    InvalidCommand,
    MailboxFull,
    Overloaded,
    ProcessManagerHandle,
    RecoveryError,
    Rejected,
    RestartLimitExceeded,
    ShuttingDown,
    TooManyAttempts,
    open_system,
)
from demo.bank import (
    Account,
    AccountCommand,
    AccountEvent,
    AccountState,
    Balances,
    BalancesView,
    Deposit,
    OpenAccount,
    RequestTransfer,
    Statements,
    StatementsView,
    Transfer,
    TransferCommand,
    TransferEvent,
    TransferProcess,
    TransferState,
    Withdraw,
)
from examples.bank_service._api import (
    AccountReply,
    AccountStateReply,
    AmountRequest,
    CommandReply,
    ErrorReply,
    HealthReply,
    OpenRequest,
    PathParams,
    StatementLineReply,
    StatementReply,
    TransferReply,
    TransferRequest,
    TransferStateReply,
)
from examples.bank_service._plumbing import WORKER_HEADER, ReadYourWrites, ServedBy
from examples.bank_service._telemetry import (
    METRICS_CONTENT_TYPE,
    flush_telemetry,
    metrics_text,
    request_span,
)
from readmodels import ConsistencyTimeout, ProjectionHandle, ProjectionStopped
from store import (
    ConcurrencyError,
    EventStore,
    IdempotencyConflict,
    InvalidArgument,
    StoreUnavailable,
)

__all__ = ["DATABASE_ENV", "Bank", "ServiceSettings", "bank_of", "create_app"]

DATABASE_ENV = "BANK_SERVICE_DB"
"""The environment variable naming the database (a SQLite file or a `postgresql://` URL)
when `create_app` is given none."""

_log = structlog.get_logger("bank_service")
# Matched whole (fullmatch): `$` would also match before a trailing newline.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_CORRELATION = re.compile(r"[\x21-\x7e]{1,128}")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only (str.isdigit() also takes superscripts, other scripts)
_MAX_INTEGER = 2**63 - 1
"""The largest version or position there can be (SQLite's largest integer)."""
_MAX_COMMAND_ID = 256
"""The store's limit on a command id's length."""
_BODY_PATH = re.compile(r" - at `(\$[^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:unknown|required) field `([^`]+)`")
T = TypeVar("T")


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
    system_options: Mapping[str, Any] = field(default_factory=dict)

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


# -- errors at the edge -------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, reply: ErrorReply) -> None:
        super().__init__(reply.detail)
        self.status = status
        self.reply = reply


def _invalid(detail: str, field: str) -> _HttpError:
    return _HttpError(422, ErrorReply("invalid_request", detail, field=field))


def _integer(raw: str, field: str, what: str, low: int) -> int:
    """`raw` (a query parameter or header) as an int in `low`..2**63-1, written in ASCII
    decimal digits only: no sign, no spaces, no other script's digits."""
    if _DIGITS.fullmatch(raw) and len(raw) <= len(str(_MAX_INTEGER)):
        value = int(raw)
        if low <= value <= _MAX_INTEGER:
            return value
    raise _invalid(
        f"{field} must be {what}: an int in {low}..{_MAX_INTEGER} in ASCII digits, not {raw!r}",
        field,
    )


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _BODY_PATH.search(message)
        path = found.group(1) if found else "$"
        named = _NAMED_FIELD.search(message)  # an unknown or missing field: name it
        raise _invalid(message, f"{path}.{named.group(1)}" if named else path) from exc
    except msgspec.DecodeError as exc:
        raise _invalid(str(exc), "$") from exc


def _error_response(exc: Exception) -> tuple[int, ErrorReply, bool] | None:
    """(status, body, whether to send Retry-After) for an error a handler raised; None
    for an error that is a bug here (`_crashed` answers it with a 500)."""
    match exc:
        case _HttpError(status=status, reply=reply):
            return status, reply, False
        case Rejected():
            return 409, ErrorReply("rejected", str(exc), type=type(exc).__name__), False
        case InvalidCommand() | InvalidArgument():
            # What the request checks above let through and the runtime refused at its
            # door (a command field, an id the store cannot take): nothing was applied.
            reply = ErrorReply("invalid_request", str(exc), type=type(exc).__name__)
            return 422, reply, False
        case TooManyAttempts() | ConcurrencyError() | IdempotencyConflict():
            return 409, ErrorReply("conflict", str(exc), type=type(exc).__name__), False
        case MailboxFull() | Overloaded():
            return 503, ErrorReply("busy", str(exc), type=type(exc).__name__), True
        case AskTimeout():
            detail = (
                f"no reply within {exc.timeout:g}s; the command may still be applied: retry"
                " with the same Idempotency-Key to learn its outcome"
            )
            return 503, ErrorReply("timeout", detail, type="AskTimeout"), True
        case ShuttingDown() | ProjectionStopped():
            return 503, ErrorReply("shutting_down", str(exc), type=type(exc).__name__), True
        case ConsistencyTimeout():
            return 503, ErrorReply("not_yet_consistent", str(exc), type="ConsistencyTimeout"), True
        case RecoveryError() | RestartLimitExceeded() | StoreUnavailable():
            return 503, ErrorReply("unavailable", str(exc), type=type(exc).__name__), True
        case CommandFailed() | EvolveError():
            return 500, ErrorReply("internal", str(exc), type=type(exc).__name__), False
        case _:
            return None


_encode = msgspec.json.Encoder().encode


def _json(
    body: msgspec.Struct, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


# -- the running service ------------------------------------------------------------------


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


class _Service:
    def __init__(self, database: str | os.PathLike[str] | EventStore, settings: ServiceSettings):
        self.database = database
        self.settings = settings
        self._running: Bank | None = None
        self._reads: ReadYourWrites | None = None
        self._open = msgspec.json.Decoder(OpenRequest)
        self._amount = msgspec.json.Decoder(AmountRequest)
        self._transfer = msgspec.json.Decoder(TransferRequest)

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

    # -- plumbing ---------------------------------------------------------------------------

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap `handler`: open the request's span, bind the request's ids to the log
        context, map errors to statuses, log the outcome, echo `X-Correlation-Id`."""
        retry_after = self.settings.retry_after

        async def wrapped(request: Request) -> Response:
            route = getattr(request.scope.get("route"), "path", request.url.path)
            with request_span(request.method, route, request.headers) as span:
                response = await answer(request)
                span.set_attribute("http.response.status_code", response.status_code)
                return response

        async def answer(request: Request) -> Response:
            correlation_id = _correlation_id(request)
            tokens = structlog.contextvars.bind_contextvars(
                correlation_id=correlation_id,
                command_id=None,
                method=request.method,
                path=request.url.path,
            )
            started = time.perf_counter()
            try:
                try:
                    response = await handler(request)
                except Exception as exc:  # mapped to a status below, or re-raised
                    mapped = _error_response(exc)
                    if mapped is None:
                        _log.error("request.crashed", exc_info=True)
                        raise
                    status, reply, busy = mapped
                    headers = {"Retry-After": str(retry_after)} if busy else {}
                    response = _json(reply, status, headers)
                    (_log.warning if status >= 500 else _log.info)(
                        "request.refused", status=status, error=reply.error, detail=reply.detail
                    )
                response.headers["X-Correlation-Id"] = correlation_id
                _log.info(
                    "request.handled",
                    status=response.status_code,
                    ms=round((time.perf_counter() - started) * 1000, 3),
                )
                return response
            finally:
                structlog.contextvars.reset_contextvars(**tokens)

        return wrapped

    async def body(self, request: Request) -> bytes:
        """The request body, refused (413) beyond `max_body_bytes` before it is read whole."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared):
                raise _invalid(
                    f"Content-Length must be a size in ASCII digits, not {declared[:40]!r}",
                    "Content-Length",
                )
            # (compared as text first: int() refuses strings of over 4300 digits)
            significant = declared.lstrip("0") or "0"
            if len(significant) > len(str(limit)) or int(significant) > limit:
                raise _HttpError(
                    413, ErrorReply("too_large", f"request bodies are limited to {limit} bytes")
                )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _HttpError(
                    413, ErrorReply("too_large", f"request bodies are limited to {limit} bytes")
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def command_id(self, request: Request, route: str, target: str) -> str | None:
        """The command id of an `Idempotency-Key`, namespaced by route and target so the
        same key on two routes or accounts names two commands; None without a key.

        (Without a key the command carries no id, so it batches freely with others; the
        log context then gets a request-local id instead.)
        """
        key = request.headers.get("idempotency-key")
        if key is None:
            structlog.contextvars.bind_contextvars(command_id=f"req-{uuid.uuid4().hex}")
            return None
        if not _KEY.fullmatch(key):
            raise _invalid(
                "Idempotency-Key must be 1-200 printable ASCII characters without spaces",
                "Idempotency-Key",
            )
        command_id = f"http:{route}:{target}:{key}"
        if len(command_id) > _MAX_COMMAND_ID:
            # A long key with a long target: name the key by its digest (a key has no
            # spaces, so this never equals the id of another key).
            digest = hashlib.sha256(key.encode()).hexdigest()
            command_id = f"http:{route}:{target}:sha256 {digest}"
        structlog.contextvars.bind_contextvars(command_id=command_id)
        return command_id

    def after(self, request: Request) -> int | None:
        """The position the client wants reflected (`X-Consistent-With` or `?after=`)."""
        raw = request.headers.get("x-consistent-with")
        field = "X-Consistent-With"
        if raw is None:
            raw, field = request.query_params.get("after"), "after"
        if raw is None:
            return None
        return _integer(raw, field, "a global position", 0)

    async def consistent(self, handle: ProjectionHandle[Any], request: Request) -> None:
        """Wait (bounded) until `handle` reflects the position the request names, if any;
        another worker's write included (see `ReadYourWrites`)."""
        position = self.after(request)
        if position is not None:
            await self.reads.wait(handle, position)

    # -- commands ---------------------------------------------------------------------------

    async def _account_command(
        self, request: Request, route: str, make: Callable[[str, bytes], AccountCommand]
    ) -> Response:
        account_id = _path_id(request)
        body = await self.body(request)
        command = make(account_id, body)
        command_id = self.command_id(request, route, account_id)
        result = await self.running.accounts.ask(account_id, command, command_id=command_id)
        reply = CommandReply(account_id, result.version, result.position, _tags(result))
        _log.debug("command.accepted", command=route, position=result.position)
        return _json(reply, 200, _replayed(result))

    async def open_account(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return OpenAccount(account_id, _decode(self._open, body).owner)

        return await self._account_command(request, "open", make)

    async def deposit(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return Deposit(account_id, _decode(self._amount, body).amount)

        return await self._account_command(request, "deposit", make)

    async def withdraw(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return Withdraw(account_id, _decode(self._amount, body).amount)

        return await self._account_command(request, "withdraw", make)

    async def request_transfer(self, request: Request) -> Response:
        body = _decode(self._transfer, await self.body(request))
        key = request.headers.get("idempotency-key")
        transfer_id = body.transfer_id
        if transfer_id is None:
            # A retry with the same key must name the same transfer.
            transfer_id = (
                "t-" + hashlib.sha256(key.encode()).hexdigest()[:32]
                if key is not None
                else "t-" + uuid.uuid4().hex
            )
        command_id = self.command_id(request, "transfer", transfer_id)
        command = RequestTransfer(transfer_id, body.source, body.target, body.amount)
        result = await self.running.transfers.ask(transfer_id, command, command_id=command_id)
        reply = TransferReply(transfer_id, result.version, result.position, _tags(result))
        _log.debug("command.accepted", command="transfer", position=result.position)
        return _json(reply, 202, _replayed(result))

    # -- queries ----------------------------------------------------------------------------

    async def account(self, request: Request) -> Response:
        account_id = _path_id(request)
        query = request.query_params
        at_raw, version_raw = query.get("at"), query.get("version")
        if at_raw is not None or version_raw is not None:
            return await self._account_as_of(account_id, at_raw, version_raw)
        running = self.running
        await self.consistent(running.balances, request)
        view = running.balances.view
        owner = view.owners.get(account_id)
        if owner is None:
            raise _HttpError(
                404, ErrorReply("not_found", f"account {account_id!r} was never opened")
            )
        reply = AccountReply(
            account_id,
            owner,
            view.balance_of(account_id),
            view.is_open(account_id),
            running.balances.position,
        )
        return _json(reply)

    async def _account_as_of(
        self, account_id: str, at_raw: str | None, version_raw: str | None
    ) -> Response:
        if at_raw is not None and version_raw is not None:
            raise _invalid("give either at or version, not both", "at")
        at: datetime | None = None
        version: int | None = None
        if at_raw is not None:
            try:
                at = datetime.fromisoformat(at_raw)
            except ValueError as exc:
                raise _invalid(f"at must be an ISO-8601 moment, not {at_raw!r}", "at") from exc
            if at.tzinfo is None:
                raise _invalid(f"at must carry a UTC offset (like Z or +02:00): {at_raw!r}", "at")
        if version_raw is not None:
            version = _integer(version_raw, "version", "a stream version", 1)
        state = await self.running.accounts.state_at(account_id, version=version, at=at)
        reply = AccountStateReply(
            account_id,
            state.owner,
            state.balance,
            state.closed,
            len(state.pending),
            at=None if at is None else at.isoformat(),
            version=version,
        )
        return _json(reply)

    async def statement(self, request: Request) -> Response:
        account_id = _path_id(request)
        running = self.running
        await self.consistent(running.statements, request)
        found = running.statements.view.accounts.get(account_id)
        if found is None:
            raise _HttpError(
                404, ErrorReply("not_found", f"account {account_id!r} has no statement")
            )
        lines = tuple(
            StatementLineReply(
                line.position,
                line.version,
                line.recorded_at,
                line.kind,
                line.amount,
                line.balance,
                line.reference,
                line.counterparty,
                line.note,
            )
            for line in found.lines
        )
        reply = StatementReply(
            account_id, found.balance, found.count, lines, running.statements.position
        )
        return _json(reply)

    async def transfer(self, request: Request) -> Response:
        transfer_id = _path_id(request)
        state = await self.running.transfers.state_at(transfer_id)
        if state.status == "new":
            raise _HttpError(404, ErrorReply("not_found", f"no transfer {transfer_id!r}"))
        reply = TransferStateReply(
            transfer_id, state.status, state.source, state.target, state.amount, state.reason
        )
        return _json(reply)

    async def health(self, request: Request) -> Response:
        running = self.running
        system = running.system
        head = system.bus.head
        process = running.process.statistics()
        reply = HealthReply(
            status="ok" if system.accepting else "stopping",
            system=system.statistics(),
            store=system.store.statistics(),
            bus_head=head,
            projections=(running.balances.statistics(), running.statements.statistics()),
            process_managers=(process,),
            process_lag={process.name: max(head - process.position, 0)},
        )
        return _json(reply, 200 if system.accepting else 503)

    async def metrics(self, request: Request) -> Response:
        # (what the process's meter provider reports: see `configure_telemetry`)
        return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)


def _correlation_id(request: Request) -> str:
    """The request's `X-Correlation-Id` if it is a valid one, else a fresh id; the same
    for every call on one request (kept in its state for the error handlers)."""
    known = getattr(request.state, "correlation_id", None)
    if isinstance(known, str):
        return known
    correlation_id = request.headers.get("x-correlation-id") or ""
    if not _CORRELATION.fullmatch(correlation_id):
        correlation_id = uuid.uuid4().hex
    request.state.correlation_id = correlation_id
    return correlation_id


def _refusal(
    request: Request, status: int, reply: ErrorReply, headers: Mapping[str, str]
) -> Response:
    response = _json(reply, status, headers)
    correlation_id = _correlation_id(request)
    response.headers["X-Correlation-Id"] = correlation_id
    log = _log.error if status >= 500 else _log.info
    log(
        "request.refused",
        correlation_id=correlation_id,
        method=request.method,
        path=request.url.path,
        status=status,
        error=reply.error,
        detail=reply.detail,
    )
    return response


def _routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals in the JSON error shape: no route for the path (404), or
    a route without the method (405, with its `Allow` header)."""
    assert isinstance(exc, HTTPException)
    path, headers = request.url.path, dict(exc.headers or {})
    if exc.status_code == 404:
        reply = ErrorReply("not_found", f"no route for {path}")
    elif exc.status_code == 405:
        # (Starlette keeps a route's methods in a set: sorted, the header is stable)
        allowed = ", ".join(sorted(m.strip() for m in headers.get("Allow", "").split(",")))
        headers["Allow"] = allowed
        reply = ErrorReply(
            "method_not_allowed", f"{request.method} is not allowed on {path}; allowed: {allowed}"
        )
    else:
        reply = ErrorReply("http_error", exc.detail)
    return _refusal(request, exc.status_code, reply, headers)


def _crashed(request: Request, exc: Exception) -> Response:
    """A bug here (an exception no handler mapped): 500 in the JSON error shape, without
    the exception's text (the log has it; the server re-raises it after this reply)."""
    detail = "the service failed on this request; its log has the error under the X-Correlation-Id"
    # (answered outside the middleware stack, so `ServedBy` does not see this reply)
    return _refusal(request, 500, ErrorReply("internal", detail), {WORKER_HEADER: str(os.getpid())})


def _path_id(request: Request) -> str:
    raw = request.path_params["id"]
    try:
        return msgspec.convert({"id": raw}, PathParams).id
    except msgspec.ValidationError as exc:
        raise _HttpError(422, ErrorReply("invalid_request", str(exc), field="id")) from exc


def _tags(result: CommandResult[Any]) -> tuple[str, ...]:
    return tuple(str(type(event).__struct_config__.tag) for event in result.events)


def _replayed(result: CommandResult[Any]) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.duplicate else {}


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
    service = _Service(database, settings or ServiceSettings())
    wrap = service.endpoint
    routes = [
        Route("/accounts/{id}/open", wrap(service.open_account), methods=["POST"]),
        Route("/accounts/{id}/deposit", wrap(service.deposit), methods=["POST"]),
        Route("/accounts/{id}/withdraw", wrap(service.withdraw), methods=["POST"]),
        Route("/accounts/{id}/statement", wrap(service.statement), methods=["GET"]),
        Route("/accounts/{id}", wrap(service.account), methods=["GET"]),
        Route("/transfers", wrap(service.request_transfer), methods=["POST"]),
        Route("/transfers/{id}", wrap(service.transfer), methods=["GET"]),
        Route("/health", wrap(service.health), methods=["GET"]),
        Route("/metrics", wrap(service.metrics), methods=["GET"]),
    ]
    handlers = {HTTPException: _routing_error, Exception: _crashed}
    return Starlette(
        routes=routes,
        middleware=[Middleware(ServedBy)],
        lifespan=service.lifespan,
        exception_handlers=handlers,
    )
