"""The bank account: open, deposit, withdraw, close, and the legs of transfers and
order payments.

Money is an int of cents and every amount must be in 1..`MAX_AMOUNT`. Besides its balance an
account remembers the outgoing transfers it was debited for and has not yet seen
settled or refunded (`pending`). `CloseAccount` is refused while the balance is not
zero or a transfer is pending, so a refund always finds the account open: refunds are
never refused and money is never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

import msgspec

from actors import Aggregate, Command, Event, Rejected

__all__ = [
    "MAX_AMOUNT",
    "Account",
    "AccountClosed",
    "AccountCommand",
    "AccountEvent",
    "AccountIsClosed",
    "AccountNotOpen",
    "AccountOpened",
    "AccountState",
    "AlreadyOpen",
    "BalanceNotZero",
    "CloseAccount",
    "CreditForTransfer",
    "Credited",
    "DebitForTransfer",
    "Debited",
    "Deposit",
    "Deposited",
    "InsufficientFunds",
    "InvalidAmount",
    "OpenAccount",
    "OrderCharged",
    "PayForOrder",
    "RefundTransfer",
    "Refunded",
    "SettleTransfer",
    "TransferSettled",
    "TransfersInFlight",
    "Withdraw",
    "Withdrawn",
]

MAX_AMOUNT = 10**12
"""The largest amount one command may move, in cents (ten billion in the currency)."""

# -- commands ----------------------------------------------------------------------------


class OpenAccount(Command, tag="bank.open_account"):
    """Open account `account_id` for `owner` (again with the same owner: no-op)."""

    account_id: str
    owner: str


class Deposit(Command, tag="bank.deposit"):
    """Put `amount` cents into an open account."""

    account_id: str
    amount: int


class Withdraw(Command, tag="bank.withdraw"):
    """Take `amount` cents out of an open account; refused when funds are short."""

    account_id: str
    amount: int


class CloseAccount(Command, tag="bank.close_account"):
    """Close an open account: only with a zero balance and no transfer in flight."""

    account_id: str


class DebitForTransfer(Command, tag="bank.debit_for_transfer"):
    """The first leg of a transfer: take `amount` from this (source) account."""

    account_id: str
    transfer_id: str
    target: str
    amount: int


class CreditForTransfer(Command, tag="bank.credit_for_transfer"):
    """The second leg of a transfer: pay `amount` into this (target) account; refused
    when it is not open (never opened, or closed)."""

    account_id: str
    transfer_id: str
    source: str
    amount: int


class RefundTransfer(Command, tag="bank.refund_transfer"):
    """The compensation of a transfer whose credit was refused: give the debited
    amount back to this (source) account. Always succeeds for a pending transfer; for a
    transfer no longer pending it is a no-op."""

    account_id: str
    transfer_id: str
    reason: str


class SettleTransfer(Command, tag="bank.settle_transfer"):
    """The last leg of a transfer: the target was credited, so the source account no
    longer waits on it (a no-op when it is not pending)."""

    account_id: str
    transfer_id: str


class PayForOrder(Command, tag="bank.pay_for_order"):
    """Charge `amount` for shop order `order_id`; refused when funds are short."""

    account_id: str
    order_id: str
    amount: int


AccountCommand = (
    OpenAccount
    | Deposit
    | Withdraw
    | CloseAccount
    | DebitForTransfer
    | CreditForTransfer
    | RefundTransfer
    | SettleTransfer
    | PayForOrder
)

# -- events ------------------------------------------------------------------------------


class AccountOpened(Event, tag="bank.account_opened"):
    """The account was opened for `owner`."""

    owner: str


class Deposited(Event, tag="bank.deposited"):
    """`amount` cents were paid in."""

    amount: int


class Withdrawn(Event, tag="bank.withdrawn"):
    """`amount` cents were paid out."""

    amount: int


class AccountClosed(Event, tag="bank.account_closed"):
    """The account was closed (its balance was zero)."""


class Debited(Event, tag="bank.debited"):
    """`amount` left this account for transfer `transfer_id` to account `target`."""

    transfer_id: str
    target: str
    amount: int


class Credited(Event, tag="bank.credited"):
    """`amount` arrived in this account by transfer `transfer_id` from `source`."""

    transfer_id: str
    source: str
    amount: int


class Refunded(Event, tag="bank.refunded"):
    """Transfer `transfer_id` failed (`reason`); its `amount` came back here."""

    transfer_id: str
    amount: int
    reason: str


class TransferSettled(Event, tag="bank.transfer_settled"):
    """Transfer `transfer_id` from this account reached its target."""

    transfer_id: str


class OrderCharged(Event, tag="bank.order_charged"):
    """`amount` was paid out of this account for shop order `order_id`."""

    order_id: str
    amount: int


AccountEvent = (
    AccountOpened
    | Deposited
    | Withdrawn
    | AccountClosed
    | Debited
    | Credited
    | Refunded
    | TransferSettled
    | OrderCharged
)

# -- refusals ----------------------------------------------------------------------------


class InvalidAmount(Rejected):
    """An amount was not in 1..`MAX_AMOUNT` cents."""


class AccountNotOpen(Rejected):
    """The account was never opened."""


class AccountIsClosed(Rejected):
    """The account is closed."""


class AlreadyOpen(Rejected):
    """The account is open for another owner."""


class InsufficientFunds(Rejected):
    """The balance does not cover the amount."""


class BalanceNotZero(Rejected):
    """An account with money in it cannot be closed."""


class TransfersInFlight(Rejected):
    """An account with outgoing transfers in flight cannot be closed."""


# -- state and aggregate -----------------------------------------------------------------


class AccountState(msgspec.Struct, frozen=True):
    """An account as its events left it.

    Attributes:
        owner: None until opened.
        balance: cents available.
        closed: closed for good (the id is never reused).
        pending: outgoing transfers debited and neither settled nor refunded, with
            their amounts, oldest first.
    """

    owner: str | None = None
    balance: int = 0
    closed: bool = False
    pending: tuple[tuple[str, int], ...] = ()


def _positive(amount: int, what: str, account_id: str) -> None:
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmount(
            f"{what} of {amount} cents on account {account_id!r}: must be 1..{MAX_AMOUNT}"
        )


def _usable(state: AccountState, account_id: str) -> None:
    if state.closed:
        raise AccountIsClosed(f"account {account_id!r} is closed")
    if state.owner is None:
        raise AccountNotOpen(f"account {account_id!r} is not open")


def _cover(state: AccountState, amount: int, account_id: str) -> None:
    if amount > state.balance:
        raise InsufficientFunds(f"account {account_id!r} holds {state.balance} cents, not {amount}")


def _pending_amount(state: AccountState, transfer_id: str) -> int | None:
    for pending_id, amount in state.pending:
        if pending_id == transfer_id:
            return amount
    return None


def _without(state: AccountState, transfer_id: str) -> tuple[tuple[str, int], ...]:
    return tuple(p for p in state.pending if p[0] != transfer_id)


class Account(Aggregate[AccountState, AccountCommand, AccountEvent]):
    """A bank account (stream `account-<id>`)."""

    initial = AccountState()
    category = "account"

    def decide(self, state: AccountState, command: AccountCommand) -> Sequence[AccountEvent]:
        """The events `command` produces (see each command), or a `Rejected`."""
        match command:
            case OpenAccount(account_id=account_id, owner=owner):
                if state.closed:
                    raise AccountIsClosed(f"account {account_id!r} is closed; ids are not reused")
                if state.owner is None:
                    return [AccountOpened(owner=owner)]
                if state.owner == owner:
                    return []
                raise AlreadyOpen(f"account {account_id!r} is open for another owner")
            case Deposit(account_id=account_id, amount=amount):
                _positive(amount, "deposit", account_id)
                _usable(state, account_id)
                return [Deposited(amount=amount)]
            case Withdraw(account_id=account_id, amount=amount):
                _positive(amount, "withdrawal", account_id)
                _usable(state, account_id)
                _cover(state, amount, account_id)
                return [Withdrawn(amount=amount)]
            case CloseAccount(account_id=account_id):
                _usable(state, account_id)
                if state.balance:
                    raise BalanceNotZero(
                        f"account {account_id!r} holds {state.balance} cents; withdraw them first"
                    )
                if state.pending:
                    raise TransfersInFlight(
                        f"account {account_id!r} has {len(state.pending)} outgoing"
                        " transfer(s) in flight; close it once they settle"
                    )
                return [AccountClosed()]
            case DebitForTransfer(
                account_id=account_id, transfer_id=transfer_id, target=target, amount=amount
            ):
                _positive(amount, "transfer", account_id)
                _usable(state, account_id)
                if _pending_amount(state, transfer_id) is not None:
                    return []  # debited already
                _cover(state, amount, account_id)
                return [Debited(transfer_id=transfer_id, target=target, amount=amount)]
            case CreditForTransfer(
                account_id=account_id, transfer_id=transfer_id, source=source, amount=amount
            ):
                _positive(amount, "transfer", account_id)
                _usable(state, account_id)
                return [Credited(transfer_id=transfer_id, source=source, amount=amount)]
            case RefundTransfer(transfer_id=transfer_id, reason=reason):
                # Never refused: a pending transfer keeps the account open (CloseAccount
                # waits for it), so the money always has somewhere to go back to.
                pending = _pending_amount(state, transfer_id)
                if pending is None:
                    return []
                return [Refunded(transfer_id=transfer_id, amount=pending, reason=reason)]
            case SettleTransfer(transfer_id=transfer_id):
                if _pending_amount(state, transfer_id) is None:
                    return []
                return [TransferSettled(transfer_id=transfer_id)]
            case PayForOrder(account_id=account_id, order_id=order_id, amount=amount):
                _positive(amount, "payment", account_id)
                _usable(state, account_id)
                _cover(state, amount, account_id)
                return [OrderCharged(order_id=order_id, amount=amount)]
            case _:
                assert_never(command)

    def evolve(self, state: AccountState, event: AccountEvent) -> AccountState:
        """The state after `event`."""
        replace = msgspec.structs.replace
        match event:
            case AccountOpened(owner=owner):
                return replace(state, owner=owner)
            case Deposited(amount=amount) | Credited(amount=amount):
                return replace(state, balance=state.balance + amount)
            case Withdrawn(amount=amount) | OrderCharged(amount=amount):
                return replace(state, balance=state.balance - amount)
            case AccountClosed():
                return replace(state, closed=True)
            case Debited(transfer_id=transfer_id, amount=amount):
                return replace(
                    state,
                    balance=state.balance - amount,
                    pending=(*state.pending, (transfer_id, amount)),
                )
            case Refunded(transfer_id=transfer_id, amount=amount):
                return replace(
                    state,
                    balance=state.balance + amount,
                    pending=_without(state, transfer_id),
                )
            case TransferSettled(transfer_id=transfer_id):
                return replace(state, pending=_without(state, transfer_id))
            case _:
                assert_never(event)
