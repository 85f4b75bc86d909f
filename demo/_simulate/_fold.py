"""The store folded once: money, orders and transfers, as the invariants need them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from actors import ActorSystem
from demo._streams import aggregate_id
from demo.bank import (
    Account,
    Credited,
    Debited,
    Deposited,
    OrderCharged,
    Refunded,
    Transfer,
    TransferCompleted,
    TransferFailed,
    TransferRequested,
    Withdrawn,
)
from demo.shop import (
    Order,
    OrderCancelled,
    OrderDelivered,
    OrderPaid,
    OrderRejected,
    OrderRequested,
    OrderShipped,
    OrderValidated,
)
from store import RecordedEvent

__all__ = ["READ_PAGE"]

READ_PAGE = 10_000
_ORDER_STATUS: dict[type[object], str] = {
    OrderRequested: "requested",
    OrderValidated: "validated",
    OrderRejected: "rejected",
    OrderPaid: "paid",
    OrderCancelled: "cancelled",
    OrderShipped: "shipped",
    OrderDelivered: "delivered",
}


@dataclass
class _Fold:
    """What the store says, folded once: money, orders, transfers."""

    deposits: int = 0
    withdrawals: int = 0
    charges: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    # account -> (its lowest balance below 0, the version that reached it)
    negative: dict[str, tuple[int, int]] = field(default_factory=dict)
    debits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    credits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    refunds: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    charged: dict[str, int] = field(default_factory=dict)
    paid: dict[str, int] = field(default_factory=dict)
    order_status: dict[str, str] = field(default_factory=dict)
    transfer_status: dict[str, str] = field(default_factory=dict)
    by_type: Counter[str] = field(default_factory=Counter)
    events: int = 0

    def account(self, recorded: RecordedEvent) -> None:
        account = aggregate_id(recorded, Account)
        balance = self.balances.setdefault(account, 0)
        match recorded.event:
            case Deposited(amount=amount):
                self.deposits += amount
                balance += amount
            case Withdrawn(amount=amount):
                self.withdrawals += amount
                balance -= amount
            case OrderCharged(order_id=order_id, amount=amount):
                self.charges += amount
                self.charged[order_id] = self.charged.get(order_id, 0) + amount
                balance -= amount
            case Debited(transfer_id=transfer_id, amount=amount):
                self.debits.setdefault(transfer_id, []).append((account, amount))
                balance -= amount
            case Credited(transfer_id=transfer_id, amount=amount):
                self.credits.setdefault(transfer_id, []).append((account, amount))
                balance += amount
            case Refunded(transfer_id=transfer_id, amount=amount):
                self.refunds.setdefault(transfer_id, []).append((account, amount))
                balance += amount
            case _:
                pass
        self.balances[account] = balance
        if balance < self.negative.get(account, (0, 0))[0]:
            self.negative[account] = (balance, recorded.version)

    def order(self, recorded: RecordedEvent) -> None:
        order_id = aggregate_id(recorded, Order)
        event = recorded.event
        status = _ORDER_STATUS.get(type(event))
        if status is not None:
            self.order_status[order_id] = status
        if isinstance(event, OrderPaid):
            self.paid[order_id] = self.paid.get(order_id, 0) + event.amount

    def transfer(self, recorded: RecordedEvent) -> None:
        transfer_id = aggregate_id(recorded, Transfer)
        match recorded.event:
            case TransferRequested():
                self.transfer_status[transfer_id] = "requested"
            case TransferCompleted():
                self.transfer_status[transfer_id] = "completed"
            case TransferFailed():
                self.transfer_status[transfer_id] = "failed"
            case _:
                pass


async def _fold(system: ActorSystem, head: int, since: int) -> _Fold:
    fold = _Fold()
    position = 0
    prefixes = (
        (Account.category + "-", fold.account),
        (Order.category + "-", fold.order),
        (Transfer.category + "-", fold.transfer),
    )
    while position < head:
        page = await system.store.read_all(
            from_position=position + 1, to_position=head, limit=READ_PAGE
        )
        if not page:
            break
        for recorded in page:
            fold.events += 1
            if recorded.position > since:
                fold.by_type[recorded.event_type] += 1
            for prefix, handler in prefixes:
                if recorded.stream_id.startswith(prefix):
                    handler(recorded)
                    break
        position = page[-1].position
    return fold
