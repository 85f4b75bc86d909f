"""Bank and shop read models as pure folds (`ProjectionSpec`), and against the flows
the process managers produce."""

from __future__ import annotations

import pytest

from demo.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    Balances,
    BalancesView,
    BankTotals,
    Credited,
    Debited,
    Deposit,
    Deposited,
    OpenAccount,
    OrderCharged,
    Refunded,
    RequestTransfer,
    Statements,
    Transfer,
    TransferProcess,
    TransferSettled,
    Withdrawn,
)
from demo.shop import (
    Inventory,
    Order,
    OrderDetails,
    OrderFulfilment,
    OrderHistory,
    OrderLine,
    OrderPaid,
    OrderRejected,
    OrderRequested,
    OrderShipped,
    OrderValidated,
    PlaceOrder,
    Restock,
    Shipping,
    ShopAnalytics,
    tracking_number,
)
from readmodels.testing import ProjectionSpec
from tests.demo._driver import World

# -- bank --------------------------------------------------------------------------------


def test_balances_follow_every_kind_of_money_movement() -> None:
    view = (
        ProjectionSpec(Balances())
        .given(AccountOpened("ada"), Deposited(100), Withdrawn(30), stream_id="account-a")
        .given(Debited("t1", "b", 20), OrderCharged("o1", 5), stream_id="account-a")
        .given(AccountOpened("bob"), Credited("t1", "a", 20), stream_id="account-b")
        .given(Debited("t2", "c", 7), Refunded("t2", 7, "closed"), stream_id="account-b")
        .then(lambda v: v.balance_of("a") == 45 and v.balance_of("b") == 20)
    )
    assert view.owners == {"a": "ada", "b": "bob"}
    assert view.is_open("a")
    assert not view.is_open("zed")
    assert view.balance_of("zed") == 0


def test_a_closed_account_shows_as_closed() -> None:
    ProjectionSpec(Balances()).given(
        AccountOpened("ada"), AccountClosed(), stream_id="account-a"
    ).then(BalancesView({"a": 0}, {"a": "ada"}, {"a"}))


def test_balances_ignore_streams_that_are_not_accounts() -> None:
    ProjectionSpec(Balances()).given(Deposited(5), stream_id="other-a").then(BalancesView())


def test_a_statement_lists_each_event_with_the_running_balance() -> None:
    view = (
        ProjectionSpec(Statements())
        .given(AccountOpened("ada"), Deposited(100), Debited("t1", "b", 30), stream_id="account-a")
        .given(Refunded("t1", 30, "b closed"), TransferSettled("t9"), stream_id="account-a")
        .view()
    )
    lines = view.statement("a")
    assert [(line.kind, line.amount, line.balance) for line in lines] == [
        ("opened", 0, 0),
        ("deposit", 100, 100),
        ("transfer out", -30, 70),
        ("refund", 30, 100),
        ("transfer settled", 0, 100),
    ]
    assert (lines[2].reference, lines[2].counterparty) == ("t1", "b")
    assert lines[3].note == "b closed"
    assert [line.version for line in lines] == [1, 2, 3, 4, 5]
    assert view.statement("nobody") == ()


def test_a_statement_keeps_the_newest_lines_and_counts_all() -> None:
    view = (
        ProjectionSpec(Statements(max_lines=2))
        .given(
            AccountOpened("ada"), Deposited(1), Deposited(2), Deposited(3), stream_id="account-a"
        )
        .view()
    )
    assert [line.amount for line in view.statement("a")] == [2, 3]
    assert view.statement("a")[-1].balance == 6
    assert view.line_count("a") == 4


def test_statements_refuse_a_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_lines must be a positive int, not 0"):
        Statements(max_lines=0)


def test_totals_count_money_in_out_and_in_flight() -> None:
    view = (
        ProjectionSpec(BankTotals())
        .given(AccountOpened("ada"), Deposited(100), Withdrawn(10), stream_id="account-a")
        .given(Debited("t1", "b", 30), OrderCharged("o1", 5), stream_id="account-a")
        .given(AccountOpened("bob"), AccountClosed(), stream_id="account-b")
        .view()
    )
    assert (view.deposits, view.withdrawals, view.order_payments) == (100, 10, 5)
    assert (view.balances, view.in_flight) == (55, 30)
    assert (view.accounts_open, view.accounts_closed) == (1, 1)
    assert view.conserved()


def test_totals_and_balances_agree_with_a_whole_transfer_run() -> None:
    world = World(TransferProcess())
    for name in ("a", "b", "c"):
        world.send(Account, name, OpenAccount(name, name))
        world.send(Account, name, Deposit(name, 100))
    world.send(Account, "c", Deposit("c", 1))
    world.send(Transfer, "t1", RequestTransfer("t1", "a", "b", 40))
    world.send(Transfer, "t2", RequestTransfer("t2", "b", "x", 10))  # x never opened
    world.send(Transfer, "t3", RequestTransfer("t3", "c", "a", 500))  # short of funds
    world.settle()
    totals = ProjectionSpec(BankTotals()).given(*world.log).view()
    balances = ProjectionSpec(Balances()).given(*world.log).view()
    assert totals.conserved()
    assert (totals.in_flight, totals.transfers_settled, totals.transfers_refunded) == (0, 1, 1)
    assert balances.balances == {"a": 60, "b": 140, "c": 101}
    assert totals.balances == sum(balances.balances.values())


# -- shop --------------------------------------------------------------------------------

LINES = (OrderLine("pen", 2, 150), OrderLine("ink", 1, 400))


def requested(customer: str, lines: tuple[OrderLine, ...] = LINES) -> OrderRequested:
    return OrderRequested(customer, "acc", "main", lines, sum(x.amount for x in lines))


def test_order_history_answers_get_orders_per_customer() -> None:
    view = (
        ProjectionSpec(OrderHistory())
        .given(requested("c1"), stream_id="order-o1")
        .given(requested("c2"), stream_id="order-o2")
        .given(requested("c1", (OrderLine("cap", 5, 10),)), stream_id="order-o3")
        .given(OrderValidated("acc", "main", LINES, 700), OrderPaid(700), stream_id="order-o1")
        .given(OrderRejected("no caps"), stream_id="order-o3")
        .view()
    )
    assert [(o.order_id, o.status, o.total, o.items) for o in view.orders_of("c1")] == [
        ("o1", "paid", 700, 3),
        ("o3", "rejected", 50, 5),
    ]
    assert [o.order_id for o in view.orders_of("c2")] == ["o2"]
    assert view.orders_of("nobody") == ()


def test_an_order_event_before_its_request_is_poison() -> None:
    with pytest.raises(LookupError, match="order 'o1' before its request"):
        ProjectionSpec(OrderHistory()).given(OrderPaid(5), stream_id="order-o1").view()


def test_order_details_keep_the_timeline_tracking_and_reasons() -> None:
    view = (
        ProjectionSpec(OrderDetails())
        .given(requested("c1"), OrderValidated("acc", "main", LINES, 700), stream_id="order-o1")
        .given(OrderPaid(700), OrderShipped("TRK-1"), stream_id="order-o1")
        .given(requested("c2"), OrderRejected("out of ink"), stream_id="order-o2")
        .view()
    )
    first = view.order("o1")
    assert first is not None
    assert (first.status, first.tracking, first.paid, first.lines) == (
        "shipped",
        "TRK-1",
        700,
        LINES,
    )
    assert [(c.status, c.position) for c in first.timeline] == [
        ("requested", 1),
        ("validated", 2),
        ("paid", 3),
        ("shipped", 4),
    ]
    second = view.order("o2")
    assert second is not None
    assert second.timeline[-1].note == "out of ink"
    assert view.order("o3") is None


def test_analytics_count_paid_units_and_revenue_per_product_and_orders_per_status() -> None:
    view = (
        ProjectionSpec(ShopAnalytics())
        .given(requested("c1"), stream_id="order-o1")
        .given(requested("c2", (OrderLine("pen", 1, 150),)), stream_id="order-o2")
        .given(requested("c3"), stream_id="order-o3")
        .given(OrderValidated("acc", "main", LINES, 700), OrderPaid(700), stream_id="order-o1")
        .given(OrderValidated("acc", "main", LINES, 150), OrderPaid(150), stream_id="order-o2")
        .given(OrderRejected("no"), stream_id="order-o3")
        .view()
    )
    assert view.revenue == 850
    assert [(sku, s.units, s.revenue) for sku, s in view.top_products()] == [
        ("pen", 3, 450),
        ("ink", 1, 400),
    ]
    assert (view.orders_in("paid"), view.orders_in("rejected"), view.orders_in("requested")) == (
        2,
        1,
        0,
    )
    assert view.unpaid == {}


def test_shop_views_agree_with_a_whole_run_of_the_process_managers() -> None:
    world = World(OrderFulfilment(), Shipping())
    world.send(Account, "acc", OpenAccount("acc", "c1"))
    world.send(Account, "acc", Deposit("acc", 1_000))
    world.send(Inventory, "main", Restock("main", "pen", 3))
    world.send(Order, "o1", PlaceOrder("o1", "c1", "acc", (OrderLine("pen", 2, 300),)))
    world.send(Order, "o2", PlaceOrder("o2", "c1", "acc", (OrderLine("pen", 2, 300),)))
    world.send(Order, "o3", PlaceOrder("o3", "c1", "acc", (OrderLine("pen", 1, 500),)))
    world.settle()
    history = ProjectionSpec(OrderHistory()).given(*world.log).view()
    assert [(o.order_id, o.status) for o in history.orders_of("c1")] == [
        ("o1", "shipped"),
        ("o2", "rejected"),  # out of stock
        ("o3", "cancelled"),  # 400 cents left, 500 due
    ]
    details = ProjectionSpec(OrderDetails()).given(*world.log).view()
    shipped = details.order("o1")
    assert shipped is not None
    assert shipped.tracking == tracking_number("o1")
    analytics = ProjectionSpec(ShopAnalytics()).given(*world.log).view()
    assert (analytics.revenue, analytics.products["pen"].units) == (600, 2)
    assert analytics.statuses == {
        "requested": 0,
        "validated": 0,
        "paid": 0,
        "shipped": 1,
        "rejected": 1,
        "cancelled": 1,
    }
    totals = ProjectionSpec(BankTotals()).given(*world.log).view()
    assert (totals.order_payments, totals.balances) == (600, 400)
    assert totals.conserved()
