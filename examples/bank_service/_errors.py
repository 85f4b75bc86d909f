"""Error responses of the bank service: every failure answered in the JSON `ErrorReply`.

`endpoint` wraps each handler: it opens the request's span, binds the request's ids to
the log context, maps what the handler raised to a status (`error_response`: 4xx for a
bad request or a rejected command, 503 with `Retry-After` when the service is busy,
shutting down or cannot be consistent in time), logs the outcome and echoes
`X-Correlation-Id`. `routing_error` and `crashed` are the application's exception
handlers: Starlette's own 404 and 405, and a bug (500, without the exception's text).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from actors import (
    AskTimeout,
    CommandFailed,
    EvolveError,
    InvalidCommand,
    MailboxFull,
    Overloaded,
    RecoveryError,
    Rejected,
    RestartLimitExceeded,
    ShuttingDown,
    TooManyAttempts,
)
from examples.bank_service._api import ErrorReply
from examples.bank_service._plumbing import WORKER_HEADER
from examples.bank_service._replies import json_response
from examples.bank_service._requests import HttpError
from examples.bank_service._telemetry import request_span
from readmodels import ConsistencyTimeout, ProjectionStopped
from store import (
    ConcurrencyError,
    IdempotencyConflict,
    InvalidArgument,
    StoreUnavailable,
)

__all__ = ["crashed", "endpoint", "error_response", "routing_error"]

_log = structlog.get_logger("bank_service")
# Matched whole (fullmatch): `$` would also match before a trailing newline.
_CORRELATION = re.compile(r"[\x21-\x7e]{1,128}")


def error_response(exc: Exception) -> tuple[int, ErrorReply, bool] | None:
    """(status, body, whether to send Retry-After) for an error a handler raised; None
    for an error that is a bug here (`crashed` answers it with a 500)."""
    match exc:
        case HttpError(status=status, reply=reply):
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


def endpoint(
    handler: Callable[[Request], Awaitable[Response]], retry_after: int
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap `handler`: open the request's span, bind the request's ids to the log
    context, map errors to statuses, log the outcome, echo `X-Correlation-Id`."""

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
                mapped = error_response(exc)
                if mapped is None:
                    _log.error("request.crashed", exc_info=True)
                    raise
                status, reply, busy = mapped
                headers = {"Retry-After": str(retry_after)} if busy else {}
                response = json_response(reply, status, headers)
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
    response = json_response(reply, status, headers)
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


def routing_error(request: Request, exc: Exception) -> Response:
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


def crashed(request: Request, exc: Exception) -> Response:
    """A bug here (an exception no handler mapped): 500 in the JSON error shape, without
    the exception's text (the log has it; the server re-raises it after this reply)."""
    detail = "the service failed on this request; its log has the error under the X-Correlation-Id"
    # (answered outside the middleware stack, so `ServedBy` does not see this reply)
    return _refusal(request, 500, ErrorReply("internal", detail), {WORKER_HEADER: str(os.getpid())})
