"""Transfers between accounts: a `Transfer` aggregate and the process manager that
moves the money.

The flow (each arrow is one command the process manager sends, with what it reacts to):

```
RequestTransfer ─▶ TransferRequested ─▶ DebitForTransfer(source)
    refused (funds short, source not open) ─▶ FailTransfer
Debited ─▶ CreditForTransfer(target)
    refused (target closed or never opened) ─▶ RefundTransfer(source)
Credited ─▶ CompleteTransfer + SettleTransfer(source)
Refunded ─▶ FailTransfer
```
The process manager keeps no state: every event carries what the next command needs
(the source account is the stream of `Debited` and a field of `Credited`). Money is
conserved at every position: a debited amount is "in flight" until it is credited or
refunded, and the refund can never be refused (see `Account`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, assert_never

import msgspec

from actors import Aggregate, Command, Dispatch, Event, ProcessManager, Rejected
from demo._streams import aggregate_id
from demo.bank._account import (
    MAX_AMOUNT,
    Account,
    Credited,
    CreditForTransfer,
    Debited,
    DebitForTransfer,
    InvalidAmount,
    Refunded,
    RefundTransfer,
    SettleTransfer,
)
from store import RecordedEvent

__all__ = [
    "CompleteTransfer",
    "FailTransfer",
    "RequestTransfer",
    "SameAccount",
    "Transfer",
    "TransferCommand",
    "TransferCompleted",
    "TransferConflict",
    "TransferEvent",
    "TransferFailed",
    "TransferProcess",
    "TransferRequested",
    "TransferState",
]


class RequestTransfer(Command, tag="bank.request_transfer"):
    """Ask to move `amount` cents from account `source` to account `target`.

    Sending it again with the same fields is a no-op (the id names the transfer).
    """

    transfer_id: str
    source: str
    target: str
    amount: int


class CompleteTransfer(Command, tag="bank.complete_transfer"):
    """Record that the target was credited."""

    transfer_id: str


class FailTransfer(Command, tag="bank.fail_transfer"):
    """Record that the transfer could not be made (money back at the source, if taken)."""

    transfer_id: str
    reason: str


TransferCommand = RequestTransfer | CompleteTransfer | FailTransfer


class TransferRequested(Event, tag="bank.transfer_requested"):
    """A transfer was asked for; the process manager takes it from here."""

    source: str
    target: str
    amount: int


class TransferCompleted(Event, tag="bank.transfer_completed"):
    """The money reached the target."""


class TransferFailed(Event, tag="bank.transfer_failed"):
    """The transfer failed; no money moved (or it was refunded)."""

    reason: str


TransferEvent = TransferRequested | TransferCompleted | TransferFailed


class SameAccount(Rejected):
    """A transfer from an account to itself."""


class TransferConflict(Rejected):
    """The transfer id is taken by another request, or the transfer has ended the
    other way already."""


class TransferState(msgspec.Struct, frozen=True):
    """A transfer as its events left it (`status`: "new", "requested", "completed",
    "failed")."""

    status: str = "new"
    source: str = ""
    target: str = ""
    amount: int = 0
    reason: str = ""


class Transfer(Aggregate[TransferState, TransferCommand, TransferEvent]):
    """One transfer's lifecycle (stream `transfer-<id>`)."""

    initial = TransferState()
    category = "transfer"

    def decide(self, state: TransferState, command: TransferCommand) -> Sequence[TransferEvent]:
        """The events `command` produces, or a `Rejected`."""
        match command:
            case RequestTransfer(
                transfer_id=transfer_id, source=source, target=target, amount=amount
            ):
                if not 0 < amount <= MAX_AMOUNT:
                    raise InvalidAmount(
                        f"transfer {transfer_id!r} of {amount} cents: must be 1..{MAX_AMOUNT}"
                    )
                if source == target:
                    raise SameAccount(f"transfer {transfer_id!r} from {source!r} to itself")
                if state.status == "new":
                    return [TransferRequested(source=source, target=target, amount=amount)]
                if (state.source, state.target, state.amount) == (source, target, amount):
                    return []
                raise TransferConflict(f"transfer id {transfer_id!r} is taken by another request")
            case CompleteTransfer(transfer_id=transfer_id):
                if state.status == "requested":
                    return [TransferCompleted()]
                if state.status == "completed":
                    return []
                raise TransferConflict(f"transfer {transfer_id!r} is {state.status}")
            case FailTransfer(transfer_id=transfer_id, reason=reason):
                if state.status == "requested":
                    return [TransferFailed(reason=reason)]
                if state.status == "failed":
                    return []
                raise TransferConflict(f"transfer {transfer_id!r} is {state.status}")
            case _:
                assert_never(command)

    def evolve(self, state: TransferState, event: TransferEvent) -> TransferState:
        """The state after `event`."""
        match event:
            case TransferRequested(source=source, target=target, amount=amount):
                return TransferState("requested", source, target, amount)
            case TransferCompleted():
                return msgspec.structs.replace(state, status="completed")
            case TransferFailed(reason=reason):
                return msgspec.structs.replace(state, status="failed", reason=reason)
            case _:
                assert_never(event)


class TransferProcess(ProcessManager):
    """Moves the money of each requested transfer (see the module docs for the flow)."""

    name: ClassVar[str] = "bank.transfers"
    event_types: ClassVar[tuple[type[Event], ...]] = (
        TransferRequested,
        Debited,
        Credited,
        Refunded,
    )

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """The next leg of the transfer `recorded` is part of."""
        event = recorded.event
        match event:
            case TransferRequested(source=source, target=target, amount=amount):
                transfer_id = aggregate_id(recorded, Transfer)
                return [
                    Dispatch(
                        Account,
                        source,
                        DebitForTransfer(source, transfer_id, target, amount),
                    )
                ]
            case Debited(transfer_id=transfer_id, target=target, amount=amount):
                source = aggregate_id(recorded, Account)
                return [
                    Dispatch(
                        Account, target, CreditForTransfer(target, transfer_id, source, amount)
                    )
                ]
            case Credited(transfer_id=transfer_id, source=source):
                return [
                    Dispatch(Transfer, transfer_id, CompleteTransfer(transfer_id)),
                    Dispatch(Account, source, SettleTransfer(source, transfer_id)),
                ]
            case Refunded(transfer_id=transfer_id, reason=reason):
                return [Dispatch(Transfer, transfer_id, FailTransfer(transfer_id, reason))]
            case _:
                return []

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        """A refused debit fails the transfer; a refused credit refunds the source."""
        command = dispatch.command
        match command:
            case DebitForTransfer(transfer_id=transfer_id):
                reason = f"debit refused: {error}"
                return [Dispatch(Transfer, transfer_id, FailTransfer(transfer_id, reason))]
            case CreditForTransfer(transfer_id=transfer_id, source=source):
                reason = f"credit refused: {error}"
                return [Dispatch(Account, source, RefundTransfer(source, transfer_id, reason))]
            case _:
                return []
