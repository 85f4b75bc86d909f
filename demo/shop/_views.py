"""Shop read models: order history per customer, order details, analytics.

Views are mutable msgspec structs changed in place by their projection (check first,
then mutate) and queried through their own methods; they compare by value.
"""

from __future__ import annotations

import msgspec

from demo._streams import aggregate_id
from demo.shop._order import (
    Order,
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderPaid,
    OrderRejected,
    OrderRequested,
    OrderShipped,
    OrderValidated,
)
from readmodels import Projection
from store import RecordedEvent

__all__ = [
    "AnalyticsView",
    "OrderDetail",
    "OrderDetails",
    "OrderDetailsView",
    "OrderHistory",
    "OrderHistoryView",
    "OrderSummary",
    "ProductSales",
    "ShopAnalytics",
    "StatusChange",
]

_ORDER_EVENTS = (
    OrderRequested,
    OrderValidated,
    OrderRejected,
    OrderPaid,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
)
_PREFIX = Order.category + "-"


def _status(event: object) -> str:
    match event:
        case OrderRequested():
            return "requested"
        case OrderValidated():
            return "validated"
        case OrderRejected():
            return "rejected"
        case OrderPaid():
            return "paid"
        case OrderCancelled():
            return "cancelled"
        case OrderShipped():
            return "shipped"
        case OrderDelivered():
            return "delivered"
        case _:
            raise TypeError(f"not an order event: {type(event).__qualname__}")


class OrderSummary(msgspec.Struct):
    """One line of a customer's order history (`GetOrders(customer_id)`)."""

    order_id: str
    status: str
    total: int
    items: int
    placed_at: float


class OrderHistoryView(msgspec.Struct):
    """Every customer's orders, oldest first."""

    by_customer: dict[str, list[OrderSummary]] = msgspec.field(default_factory=dict)
    by_order: dict[str, OrderSummary] = msgspec.field(default_factory=dict)

    def orders_of(self, customer_id: str) -> tuple[OrderSummary, ...]:
        """The orders of `customer_id`, oldest first (empty for an unknown customer)."""
        return tuple(self.by_customer.get(customer_id, ()))


class OrderHistory(Projection[OrderHistoryView]):
    """Order history per customer: the query side of `GetOrders(customer_id)`."""

    name = "shop.order_history"
    event_types = _ORDER_EVENTS
    stream_prefix = _PREFIX

    def initial_view(self) -> OrderHistoryView:
        """No orders."""
        return OrderHistoryView()

    def apply(self, view: OrderHistoryView, recorded: RecordedEvent) -> OrderHistoryView:
        """Add a requested order, or move a known one to its new status."""
        order_id = aggregate_id(recorded, Order)
        event = recorded.event
        status = _status(event)
        if isinstance(event, OrderRequested):
            if order_id in view.by_order:
                return view
            summary = OrderSummary(
                order_id=order_id,
                status=status,
                total=event.total,
                items=sum(line.quantity for line in event.lines),
                placed_at=recorded.recorded_at,
            )
            view.by_order[order_id] = summary
            view.by_customer.setdefault(event.customer_id, []).append(summary)
            return view
        known = view.by_order.get(order_id)
        if known is None:
            raise LookupError(f"{recorded.event_type} for order {order_id!r} before its request")
        known.status = status
        return view


class StatusChange(msgspec.Struct, frozen=True):
    """When an order reached a status (`position` in the log, commit time) and why."""

    status: str
    position: int
    recorded_at: float
    note: str = ""


class OrderDetail(msgspec.Struct):
    """Everything known about one order (`GetOrderDetails(order_id)`)."""

    order_id: str
    customer_id: str
    payment_account: str
    warehouse_id: str
    lines: tuple[OrderLine, ...]
    total: int
    status: str
    tracking: str = ""
    paid: int = 0
    timeline: list[StatusChange] = msgspec.field(default_factory=list)


class OrderDetailsView(msgspec.Struct):
    """Every order's details."""

    orders: dict[str, OrderDetail] = msgspec.field(default_factory=dict)

    def order(self, order_id: str) -> OrderDetail | None:
        """The details of `order_id` (None when unknown)."""
        return self.orders.get(order_id)


class OrderDetails(Projection[OrderDetailsView]):
    """Order details with their status timeline."""

    name = "shop.order_details"
    event_types = _ORDER_EVENTS
    stream_prefix = _PREFIX

    def initial_view(self) -> OrderDetailsView:
        """No orders."""
        return OrderDetailsView()

    def apply(self, view: OrderDetailsView, recorded: RecordedEvent) -> OrderDetailsView:
        """Record the order's request or its next status."""
        order_id = aggregate_id(recorded, Order)
        event = recorded.event
        status = _status(event)
        note = ""
        if isinstance(event, OrderRequested):
            if order_id in view.orders:
                return view
            detail = OrderDetail(
                order_id,
                event.customer_id,
                event.payment_account,
                event.warehouse_id,
                event.lines,
                event.total,
                status,
            )
            view.orders[order_id] = detail
        else:
            found = view.orders.get(order_id)
            if found is None:
                raise LookupError(
                    f"{recorded.event_type} for order {order_id!r} before its request"
                )
            detail = found
            detail.status = status
            match event:
                case OrderRejected(reason=reason) | OrderCancelled(reason=reason):
                    note = reason
                case OrderPaid(amount=amount):
                    detail.paid = amount
                case OrderShipped(tracking=tracking):
                    detail.tracking = tracking
                    note = tracking
                case _:
                    pass
        detail.timeline.append(StatusChange(status, recorded.position, recorded.recorded_at, note))
        return view


class ProductSales(msgspec.Struct):
    """Paid sales of one product."""

    units: int = 0
    revenue: int = 0


class AnalyticsView(msgspec.Struct):
    """Shop-wide figures.

    Attributes:
        products: sku -> paid units and revenue (cents).
        statuses: status -> orders in it now.
        revenue: cents paid in all.
        unpaid: order id -> lines, for orders requested and not yet paid, rejected or
            cancelled (what a payment will count).
        status_of: order id -> its status now.
    """

    products: dict[str, ProductSales] = msgspec.field(default_factory=dict)
    statuses: dict[str, int] = msgspec.field(default_factory=dict)
    revenue: int = 0
    unpaid: dict[str, tuple[OrderLine, ...]] = msgspec.field(default_factory=dict)
    status_of: dict[str, str] = msgspec.field(default_factory=dict)

    def orders_in(self, status: str) -> int:
        """How many orders are in `status` now."""
        return self.statuses.get(status, 0)

    def top_products(self, n: int = 10) -> list[tuple[str, ProductSales]]:
        """The `n` products with the most revenue, best first (ties by sku)."""
        ranked = sorted(self.products.items(), key=lambda item: (-item[1].revenue, item[0]))
        return ranked[:n]


class ShopAnalytics(Projection[AnalyticsView]):
    """Revenue and units per product (counted when paid) and orders per status."""

    name = "shop.analytics"
    event_types = _ORDER_EVENTS
    stream_prefix = _PREFIX

    def initial_view(self) -> AnalyticsView:
        """No orders."""
        return AnalyticsView()

    def apply(self, view: AnalyticsView, recorded: RecordedEvent) -> AnalyticsView:
        """Move the order to its new status; count a payment's lines."""
        order_id = aggregate_id(recorded, Order)
        event = recorded.event
        status = _status(event)
        previous = view.status_of.get(order_id)
        if isinstance(event, OrderRequested):
            if previous is not None:
                return view
            view.unpaid[order_id] = event.lines
        elif previous is None:
            raise LookupError(f"{recorded.event_type} for order {order_id!r} before its request")
        else:
            view.statuses[previous] -= 1
            if isinstance(event, OrderPaid):
                for line in view.unpaid.pop(order_id, ()):
                    sales = view.products.setdefault(line.sku, ProductSales())
                    sales.units += line.quantity
                    sales.revenue += line.amount
                view.revenue += event.amount
            elif isinstance(event, OrderRejected | OrderCancelled):
                view.unpaid.pop(order_id, None)
        view.status_of[order_id] = status
        view.statuses[status] = view.statuses.get(status, 0) + 1
        return view
