"""Writing a reply of the bank service: a msgspec struct as a JSON response, and what
a command's reply carries besides its body (its events' tags, `Idempotent-Replayed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from actors import CommandResult

__all__ = ["json_response", "replayed", "tags"]

_encode = msgspec.json.Encoder().encode


def json_response(
    body: msgspec.Struct, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`body` as an `application/json` response."""
    return Response(_encode(body), status, headers, media_type="application/json")


def tags(result: CommandResult[Any]) -> tuple[str, ...]:
    """The tags of the events a command recorded, in order."""
    return tuple(str(type(event).__struct_config__.tag) for event in result.events)


def replayed(result: CommandResult[Any]) -> dict[str, str]:
    """The `Idempotent-Replayed` header when the command was a duplicate."""
    return {"Idempotent-Replayed": "true"} if result.duplicate else {}
