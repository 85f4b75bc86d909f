"""The account routes of the bank service: its commands (open, deposit, withdraw) and
its queries (the balance now or as of a moment or version, the statement).

Commands go to the account aggregates with `ask` (a durable acknowledgement), their
reply carrying the committed version and position; queries read the in-memory read
models, after waiting for a position the client names, or replay a past state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from demo.bank import AccountCommand, Deposit, OpenAccount, Withdraw
from examples.bank_service._api import (
    AccountReply,
    AccountStateReply,
    AmountRequest,
    CommandReply,
    ErrorReply,
    OpenRequest,
    StatementLineReply,
    StatementReply,
)
from examples.bank_service._replies import json_response, replayed, tags
from examples.bank_service._requests import (
    HttpError,
    command_id,
    decode,
    integer,
    invalid,
    path_id,
)
from examples.bank_service._service import Service

__all__ = ["AccountRoutes"]

_log = structlog.get_logger("bank_service")


class AccountRoutes:
    """The handlers of `/accounts/{id}/...` over one `Service`."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._open = msgspec.json.Decoder(OpenRequest)
        self._amount = msgspec.json.Decoder(AmountRequest)

    # -- commands ---------------------------------------------------------------------------

    async def _account_command(
        self, request: Request, route: str, make: Callable[[str, bytes], AccountCommand]
    ) -> Response:
        account_id = path_id(request)
        body = await self._service.body(request)
        command = make(account_id, body)
        command_key = command_id(request, route, account_id)
        result = await self._service.running.accounts.ask(
            account_id, command, command_id=command_key
        )
        reply = CommandReply(account_id, result.version, result.position, tags(result))
        _log.debug("command.accepted", command=route, position=result.position)
        return json_response(reply, 200, replayed(result))

    async def open_account(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return OpenAccount(account_id, decode(self._open, body).owner)

        return await self._account_command(request, "open", make)

    async def deposit(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return Deposit(account_id, decode(self._amount, body).amount)

        return await self._account_command(request, "deposit", make)

    async def withdraw(self, request: Request) -> Response:
        def make(account_id: str, body: bytes) -> AccountCommand:
            return Withdraw(account_id, decode(self._amount, body).amount)

        return await self._account_command(request, "withdraw", make)

    # -- queries ----------------------------------------------------------------------------

    async def account(self, request: Request) -> Response:
        account_id = path_id(request)
        query = request.query_params
        at_raw, version_raw = query.get("at"), query.get("version")
        if at_raw is not None or version_raw is not None:
            return await self._account_as_of(account_id, at_raw, version_raw)
        running = self._service.running
        await self._service.consistent(running.balances, request)
        view = running.balances.view
        owner = view.owners.get(account_id)
        if owner is None:
            raise HttpError(
                404, ErrorReply("not_found", f"account {account_id!r} was never opened")
            )
        reply = AccountReply(
            account_id,
            owner,
            view.balance_of(account_id),
            view.is_open(account_id),
            running.balances.position,
        )
        return json_response(reply)

    async def _account_as_of(
        self, account_id: str, at_raw: str | None, version_raw: str | None
    ) -> Response:
        if at_raw is not None and version_raw is not None:
            raise invalid("give either at or version, not both", "at")
        at: datetime | None = None
        version: int | None = None
        if at_raw is not None:
            try:
                at = datetime.fromisoformat(at_raw)
            except ValueError as exc:
                raise invalid(f"at must be an ISO-8601 moment, not {at_raw!r}", "at") from exc
            if at.tzinfo is None:
                raise invalid(f"at must carry a UTC offset (like Z or +02:00): {at_raw!r}", "at")
        if version_raw is not None:
            version = integer(version_raw, "version", "a stream version", 1)
        state = await self._service.running.accounts.state_at(account_id, version=version, at=at)
        reply = AccountStateReply(
            account_id,
            state.owner,
            state.balance,
            state.closed,
            len(state.pending),
            at=None if at is None else at.isoformat(),
            version=version,
        )
        return json_response(reply)

    async def statement(self, request: Request) -> Response:
        account_id = path_id(request)
        running = self._service.running
        await self._service.consistent(running.statements, request)
        found = running.statements.view.accounts.get(account_id)
        if found is None:
            raise HttpError(
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
        return json_response(reply)
