"""Bank read models: balances, per-account statements (the audit trail), bank totals.

Each view is a mutable msgspec struct changed in place by its projection's `apply`
(check first, then mutate) and queried through its own methods between awaits. Views
compare by value, so a rebuilt view can be checked against a live one.
"""

from __future__ import annotations

from collections import deque

import msgspec

from demo._streams import aggregate_id
from demo.bank._account import (
    Account,
    AccountClosed,
    AccountOpened,
    Credited,
    Debited,
    Deposited,
    OrderCharged,
    Refunded,
    TransferSettled,
    Withdrawn,
)
from readmodels import Projection
from store import RecordedEvent

__all__ = [
    "Balances",
    "BalancesView",
    "BankTotals",
    "Statement",
    "StatementLine",
    "Statements",
    "StatementsView",
    "TotalsView",
]

_PREFIX = Account.category + "-"


class BalancesView(msgspec.Struct):
    """Balances and status of every account.

    Attributes:
        balances: account id -> cents.
        owners: account id -> owner.
        closed: ids of closed accounts.
    """

    balances: dict[str, int] = msgspec.field(default_factory=dict)
    owners: dict[str, str] = msgspec.field(default_factory=dict)
    closed: set[str] = msgspec.field(default_factory=set)

    def balance_of(self, account_id: str) -> int:
        """The balance of `account_id` in cents (0 for an unknown account)."""
        return self.balances.get(account_id, 0)

    def is_open(self, account_id: str) -> bool:
        """Whether `account_id` is open (opened and not closed)."""
        return account_id in self.owners and account_id not in self.closed


class Balances(Projection[BalancesView]):
    """Every account's balance, owner and status."""

    name = "bank.balances"
    event_types = (
        AccountOpened,
        Deposited,
        Withdrawn,
        AccountClosed,
        Debited,
        Credited,
        Refunded,
        OrderCharged,
    )
    stream_prefix = _PREFIX

    def initial_view(self) -> BalancesView:
        """No accounts."""
        return BalancesView()

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        """Fold one account event."""
        account = aggregate_id(recorded, Account)
        match recorded.event:
            case AccountOpened(owner=owner):
                view.owners[account] = owner
                view.balances.setdefault(account, 0)
            case AccountClosed():
                view.closed.add(account)
            case Deposited(amount=amount) | Credited(amount=amount) | Refunded(amount=amount):
                view.balances[account] = view.balances.get(account, 0) + amount
            case Withdrawn(amount=amount) | Debited(amount=amount) | OrderCharged(amount=amount):
                view.balances[account] = view.balances.get(account, 0) - amount
            case _:
                pass
        return view


class StatementLine(msgspec.Struct, frozen=True):
    """One line of an account statement.

    Attributes:
        position, version: where the event is in the log and in the account's stream.
        recorded_at: commit time (POSIX seconds).
        kind: what happened ("opened", "deposit", "withdrawal", "transfer out",
            "transfer in", "refund", "order payment", "transfer settled", "closed").
        amount: signed cents (negative: money out).
        balance: the balance after this line.
        reference: the transfer or order id, if any.
        counterparty: the other account of a transfer, if any.
        note: the refund's reason, if any.
    """

    position: int
    version: int
    recorded_at: float
    kind: str
    amount: int
    balance: int
    reference: str = ""
    counterparty: str = ""
    note: str = ""


class Statement(msgspec.Struct):
    """One account's recent lines (at most `max_lines`, newest last) and its totals."""

    lines: deque[StatementLine]
    balance: int = 0
    count: int = 0


class StatementsView(msgspec.Struct):
    """Every account's statement."""

    accounts: dict[str, Statement] = msgspec.field(default_factory=dict)

    def statement(self, account_id: str) -> tuple[StatementLine, ...]:
        """The kept lines of `account_id`, oldest first (empty for an unknown account)."""
        found = self.accounts.get(account_id)
        return () if found is None else tuple(found.lines)

    def line_count(self, account_id: str) -> int:
        """How many lines `account_id` ever had (kept or not)."""
        found = self.accounts.get(account_id)
        return 0 if found is None else found.count


def _line(recorded: RecordedEvent) -> tuple[str, int, str, str, str]:
    """(kind, signed amount, reference, counterparty, note) of an account event."""
    match recorded.event:
        case AccountOpened(owner=owner):
            return "opened", 0, "", "", owner
        case Deposited(amount=amount):
            return "deposit", amount, "", "", ""
        case Withdrawn(amount=amount):
            return "withdrawal", -amount, "", "", ""
        case AccountClosed():
            return "closed", 0, "", "", ""
        case Debited(transfer_id=transfer_id, target=target, amount=amount):
            return "transfer out", -amount, transfer_id, target, ""
        case Credited(transfer_id=transfer_id, source=source, amount=amount):
            return "transfer in", amount, transfer_id, source, ""
        case Refunded(transfer_id=transfer_id, amount=amount, reason=reason):
            return "refund", amount, transfer_id, "", reason
        case TransferSettled(transfer_id=transfer_id):
            return "transfer settled", 0, transfer_id, "", ""
        case OrderCharged(order_id=order_id, amount=amount):
            return "order payment", -amount, order_id, "", ""
        case other:
            raise TypeError(f"not an account event: {type(other).__qualname__}")


class Statements(Projection[StatementsView]):
    """Per-account statements: every account event as a line with the running balance.

    Args:
        max_lines: lines kept per account (the oldest are dropped beyond it; the store
            keeps the full history, `router.history(...)` reads it).
    """

    name = "bank.statements"
    event_types = (
        AccountOpened,
        Deposited,
        Withdrawn,
        AccountClosed,
        Debited,
        Credited,
        Refunded,
        TransferSettled,
        OrderCharged,
    )
    stream_prefix = _PREFIX

    def __init__(self, *, max_lines: int = 1_000) -> None:
        if type(max_lines) is not int or max_lines < 1:
            raise ValueError(f"max_lines must be a positive int, not {max_lines!r}")
        self.max_lines = max_lines

    def initial_view(self) -> StatementsView:
        """No statements."""
        return StatementsView()

    def apply(self, view: StatementsView, recorded: RecordedEvent) -> StatementsView:
        """Append one line to the account's statement."""
        account = aggregate_id(recorded, Account)
        statement = view.accounts.get(account)
        balance = 0 if statement is None else statement.balance
        kind, amount, reference, counterparty, note = _line(recorded)
        line = StatementLine(
            position=recorded.position,
            version=recorded.version,
            recorded_at=recorded.recorded_at,
            kind=kind,
            amount=amount,
            balance=balance + amount,
            reference=reference,
            counterparty=counterparty,
            note=note,
        )
        if statement is None:
            statement = view.accounts[account] = Statement(deque(maxlen=self.max_lines))
        statement.lines.append(line)
        statement.balance = line.balance
        statement.count += 1
        return view


class TotalsView(msgspec.Struct):
    """Bank-wide totals, in cents and counts.

    Money is conserved when `balances == deposits - withdrawals - order_payments -
    in_flight` (see `conserved`).
    """

    deposits: int = 0
    withdrawals: int = 0
    order_payments: int = 0
    in_flight: int = 0
    balances: int = 0
    accounts_open: int = 0
    accounts_closed: int = 0
    transfers_settled: int = 0
    transfers_refunded: int = 0

    def conserved(self) -> bool:
        """Whether every cent paid in is in a balance, in flight, or was paid out."""
        return self.balances + self.in_flight == (
            self.deposits - self.withdrawals - self.order_payments
        )


class BankTotals(Projection[TotalsView]):
    """Bank-wide totals: money in, out, in flight, and accounts by status."""

    name = "bank.totals"
    event_types = (
        AccountOpened,
        Deposited,
        Withdrawn,
        AccountClosed,
        Debited,
        Credited,
        Refunded,
        TransferSettled,
        OrderCharged,
    )
    stream_prefix = _PREFIX

    def initial_view(self) -> TotalsView:
        """All zero."""
        return TotalsView()

    def apply(self, view: TotalsView, recorded: RecordedEvent) -> TotalsView:
        """Fold one account event into the totals."""
        match recorded.event:
            case AccountOpened():
                view.accounts_open += 1
            case AccountClosed():
                view.accounts_open -= 1
                view.accounts_closed += 1
            case Deposited(amount=amount):
                view.deposits += amount
                view.balances += amount
            case Withdrawn(amount=amount):
                view.withdrawals += amount
                view.balances -= amount
            case OrderCharged(amount=amount):
                view.order_payments += amount
                view.balances -= amount
            case Debited(amount=amount):
                view.balances -= amount
                view.in_flight += amount
            case Credited(amount=amount):
                view.balances += amount
                view.in_flight -= amount
            case Refunded(amount=amount):
                view.balances += amount
                view.in_flight -= amount
                view.transfers_refunded += 1
            case TransferSettled():
                view.transfers_settled += 1
            case _:
                pass
        return view
