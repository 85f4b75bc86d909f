"""The wire format of the bank service: typed, validated requests and the replies.

Requests are decoded straight into these structs by msgspec: unknown fields are refused,
amounts must be positive and bounded, strings are bounded and ids use a safe alphabet.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from actors import ProcessManagerStatistics, SystemStatistics
from readmodels import ProjectionStatistics
from store import StoreStatistics

__all__ = [
    "AccountId",
    "AccountReply",
    "AccountStateReply",
    "Amount",
    "AmountRequest",
    "CommandReply",
    "ErrorReply",
    "HealthReply",
    "MAX_AMOUNT",
    "OpenRequest",
    "PathParams",
    "StatementLineReply",
    "StatementReply",
    "TransferReply",
    "TransferRequest",
    "TransferStateReply",
]

MAX_AMOUNT = 10**12
"""The largest amount one request may move, in cents."""

# `\Z`, not `$`: msgspec matches the pattern with Python's `re`, whose `$` also matches
# before a trailing newline ("a1\n" would pass here, then fail as a stream id in the store).
AccountId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
]
"""An account or transfer id: 1-64 characters of ASCII letters, digits, `_`, `.`, `-`,
starting with a letter or digit."""

Amount = Annotated[int, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
"""An amount of money in cents: positive, at most `MAX_AMOUNT`."""

Owner = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class OpenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `POST /accounts/{id}/open`."""

    owner: Owner


class AmountRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `POST /accounts/{id}/deposit` and `POST /accounts/{id}/withdraw`."""

    amount: Amount


class TransferRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `POST /transfers`; without `transfer_id` the server derives one from the
    `Idempotency-Key` (or makes a fresh one)."""

    source: AccountId
    target: AccountId
    amount: Amount
    transfer_id: AccountId | None = None


class PathParams(msgspec.Struct, frozen=True):
    """The path parameter of the account and transfer routes, validated like a body."""

    id: AccountId


class CommandReply(msgspec.Struct, frozen=True):
    """The durable result of an account command (the same again for a retried key).

    Attributes:
        account_id: the account.
        version: the account's stream version after the command.
        position: the global position to pass as `X-Consistent-With` to read it back.
        events: the type tags of the events the command recorded (may be empty).
    """

    account_id: str
    version: int
    position: int
    events: tuple[str, ...]


class TransferReply(msgspec.Struct, frozen=True):
    """The durable result of `POST /transfers`: the request is recorded; the transfer
    process moves the money after it (follow it with `GET /transfers/{id}`)."""

    transfer_id: str
    version: int
    position: int
    events: tuple[str, ...]


class AccountReply(msgspec.Struct, frozen=True):
    """An account as the balances read model has it, as of `position`."""

    account_id: str
    owner: str
    balance: int
    open: bool
    position: int


class AccountStateReply(msgspec.Struct, frozen=True):
    """An account as it stood at a past moment or stream version (time travel)."""

    account_id: str
    owner: str | None
    balance: int
    closed: bool
    transfers_in_flight: int
    at: str | None = None
    version: int | None = None


class StatementLineReply(msgspec.Struct, frozen=True):
    """One line of a statement (see `demo.bank.StatementLine`)."""

    position: int
    version: int
    recorded_at: float
    kind: str
    amount: int
    balance: int
    reference: str
    counterparty: str
    note: str


class StatementReply(msgspec.Struct, frozen=True):
    """An account's audit trail (newest lines kept by the read model), as of `position`."""

    account_id: str
    balance: int
    count: int
    lines: tuple[StatementLineReply, ...]
    position: int


class TransferStateReply(msgspec.Struct, frozen=True):
    """A transfer's status: "requested", "completed" or "failed"."""

    transfer_id: str
    status: str
    source: str
    target: str
    amount: int
    reason: str


class ErrorReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error body: a stable `error` code, a human `detail`, and where it applies
    the `field` that was wrong (msgspec's path, like `$.amount`) or the refusal `type`."""

    error: str
    detail: str
    field: str | None = None
    type: str | None = None


class HealthReply(msgspec.Struct, frozen=True):
    """`GET /health`: the system's, projections' and process managers' statistics."""

    status: str
    system: SystemStatistics
    store: StoreStatistics
    bus_head: int
    projections: tuple[ProjectionStatistics, ...]
    process_managers: tuple[ProcessManagerStatistics, ...]
    process_lag: dict[str, int]
