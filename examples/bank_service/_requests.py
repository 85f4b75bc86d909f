"""Reading a request of the bank service, and refusing a bad one.

Every part a handler takes from a request is checked here before it reaches the actor
system: the body (bounded by `max_body_bytes`, refused with 413 before it is read whole)
decoded into its `_api` struct, the path's id, integers in ASCII digits, the
`Idempotency-Key` as a namespaced command id, and the position a query waits for
(`X-Consistent-With`, `?after=`). A bad one raises `HttpError`, a 4xx in the JSON
`ErrorReply` shape.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import TypeVar

import msgspec
import structlog
from starlette.requests import Request

from examples.bank_service._api import ErrorReply, PathParams

__all__ = [
    "HttpError",
    "after",
    "command_id",
    "decode",
    "integer",
    "invalid",
    "path_id",
    "read_body",
]

# Matched whole (fullmatch): `$` would also match before a trailing newline.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_DIGITS = re.compile(r"[0-9]+")  # ASCII only (str.isdigit() also takes superscripts, other scripts)
_MAX_INTEGER = 2**63 - 1
"""The largest version or position there can be (SQLite's largest integer)."""
_MAX_COMMAND_ID = 256
"""The store's limit on a command id's length."""
_BODY_PATH = re.compile(r" - at `(\$[^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:unknown|required) field `([^`]+)`")
T = TypeVar("T")


class HttpError(Exception):
    """A refusal a handler raises: its status and its JSON body."""

    def __init__(self, status: int, reply: ErrorReply) -> None:
        super().__init__(reply.detail)
        self.status = status
        self.reply = reply


def invalid(detail: str, field: str) -> HttpError:
    """A 422 naming the request's `field` that is wrong."""
    return HttpError(422, ErrorReply("invalid_request", detail, field=field))


def integer(raw: str, field: str, what: str, low: int) -> int:
    """`raw` (a query parameter or header) as an int in `low`..2**63-1, written in ASCII
    decimal digits only: no sign, no spaces, no other script's digits."""
    if _DIGITS.fullmatch(raw) and len(raw) <= len(str(_MAX_INTEGER)):
        value = int(raw)
        if low <= value <= _MAX_INTEGER:
            return value
    raise invalid(
        f"{field} must be {what}: an int in {low}..{_MAX_INTEGER} in ASCII digits, not {raw!r}",
        field,
    )


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """`body` decoded by `decoder`; a 422 naming the field it fails on."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _BODY_PATH.search(message)
        path = found.group(1) if found else "$"
        named = _NAMED_FIELD.search(message)  # an unknown or missing field: name it
        raise invalid(message, f"{path}.{named.group(1)}" if named else path) from exc
    except msgspec.DecodeError as exc:
        raise invalid(str(exc), "$") from exc


def path_id(request: Request) -> str:
    """The `{id}` of the request's path, checked as `PathParams` checks it."""
    raw = request.path_params["id"]
    try:
        return msgspec.convert({"id": raw}, PathParams).id
    except msgspec.ValidationError as exc:
        raise HttpError(422, ErrorReply("invalid_request", str(exc), field="id")) from exc


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) beyond `limit` bytes before it is read whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise invalid(
                f"Content-Length must be a size in ASCII digits, not {declared[:40]!r}",
                "Content-Length",
            )
        # (compared as text first: int() refuses strings of over 4300 digits)
        significant = declared.lstrip("0") or "0"
        if len(significant) > len(str(limit)) or int(significant) > limit:
            raise HttpError(
                413, ErrorReply("too_large", f"request bodies are limited to {limit} bytes")
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(
                413, ErrorReply("too_large", f"request bodies are limited to {limit} bytes")
            )
        chunks.append(chunk)
    return b"".join(chunks)


def command_id(request: Request, route: str, target: str) -> str | None:
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
        raise invalid(
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


def after(request: Request) -> int | None:
    """The position the client wants reflected (`X-Consistent-With` or `?after=`)."""
    raw = request.headers.get("x-consistent-with")
    field = "X-Consistent-With"
    if raw is None:
        raw, field = request.query_params.get("after"), "after"
    if raw is None:
        return None
    return integer(raw, field, "a global position", 0)
