"""The transfer routes of the bank service: requesting a transfer (`POST /transfers`,
202: the transfer process manager carries it out) and reading one's state.
"""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from demo.bank import RequestTransfer
from examples.bank_service._api import (
    ErrorReply,
    TransferReply,
    TransferRequest,
    TransferStateReply,
)
from examples.bank_service._replies import json_response, replayed, tags
from examples.bank_service._requests import HttpError, command_id, decode, path_id
from examples.bank_service._service import Service

__all__ = ["TransferRoutes"]

_log = structlog.get_logger("bank_service")


class TransferRoutes:
    """The handlers of `/transfers` and `/transfers/{id}` over one `Service`."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._transfer = msgspec.json.Decoder(TransferRequest)

    async def request_transfer(self, request: Request) -> Response:
        body = decode(self._transfer, await self._service.body(request))
        key = request.headers.get("idempotency-key")
        transfer_id = body.transfer_id
        if transfer_id is None:
            # A retry with the same key must name the same transfer.
            transfer_id = (
                "t-" + hashlib.sha256(key.encode()).hexdigest()[:32]
                if key is not None
                else "t-" + uuid.uuid4().hex
            )
        command_key = command_id(request, "transfer", transfer_id)
        command = RequestTransfer(transfer_id, body.source, body.target, body.amount)
        result = await self._service.running.transfers.ask(
            transfer_id, command, command_id=command_key
        )
        reply = TransferReply(transfer_id, result.version, result.position, tags(result))
        _log.debug("command.accepted", command="transfer", position=result.position)
        return json_response(reply, 202, replayed(result))

    async def transfer(self, request: Request) -> Response:
        transfer_id = path_id(request)
        state = await self._service.running.transfers.state_at(transfer_id)
        if state.status == "new":
            raise HttpError(404, ErrorReply("not_found", f"no transfer {transfer_id!r}"))
        reply = TransferStateReply(
            transfer_id, state.status, state.source, state.target, state.amount, state.reason
        )
        return json_response(reply)
