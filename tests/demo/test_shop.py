"""The shop: orders and inventory as pure functions, the process managers, whole flows."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Dispatch
from actors.testing import AggregateSpec
from demo.bank import (
    Account,
    AccountIsClosed,
    CloseAccount,
    Deposit,
    InsufficientFunds,
    OpenAccount,
    OrderCharged,
    PayForOrder,
    Withdraw,
)
from demo.shop import (
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    CancelOrder,
    DeliverOrder,
    InvalidLines,
    InvalidOrderState,
    Inventory,
    MalformedOrder,
    Order,
    OrderAlreadyPlaced,
    OrderCancelled,
    OrderDelivered,
    OrderFulfilment,
    OrderLine,
    OrderPaid,
    OrderRejected,
    OrderRequested,
    OrderShipped,
    OrderValidated,
    OutOfStock,
    PlaceOrder,
    RecordPayment,
    RejectOrder,
    ReleaseStock,
    ReserveStock,
    Restock,
    Restocked,
    ShipOrder,
    Shipping,
    StockReleased,
    StockReserved,
    ValidateOrder,
    order_problem,
    tracking_number,
)
from store import RecordedEvent
from tests.demo._driver import World

order = AggregateSpec(Order())
inventory = AggregateSpec(Inventory())
LINES = (OrderLine("pen", 2, 150), OrderLine("ink", 1, 400))
REQUESTED = OrderRequested("c1", "acc-c1", "main", LINES, 700)
VALIDATED = OrderValidated("acc-c1", "main", LINES, 700)
PLACE = PlaceOrder("o1", "c1", "acc-c1", LINES)


def recorded(stream_id: str, event: object) -> RecordedEvent:
    tag = type(event).__struct_config__.tag  # type: ignore[attr-defined]
    return RecordedEvent(stream_id, 1, 9, tag, 1, event, {}, 0.0)


# -- order -------------------------------------------------------------------------------


def test_placing_an_order_records_the_request_with_its_total_before_any_validation() -> None:
    state = order.given().when(PLACE).then(REQUESTED)
    assert (state.status, state.total) == ("requested", 700)


def test_an_unusable_order_is_still_recorded_as_requested() -> None:
    bad = PlaceOrder("o1", "c1", "acc-c1", (OrderLine("pen", 0, 150),))
    order.given().when(bad).then(OrderRequested("c1", "acc-c1", "main", bad.lines, 0))


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (tuple(OrderLine(f"s{i}", 1, 1) for i in range(101)), "101 lines; at most 100"),
        ((OrderLine("pen", MAX_QUANTITY + 1, 1),), "quantity 1000001 of 'pen' is beyond"),
        ((OrderLine("pen", 1, -MAX_UNIT_PRICE - 1),), "unit price -10000000001 of 'pen'"),
    ],
)
def test_only_a_request_that_cannot_be_stored_is_refused(
    lines: tuple[OrderLine, ...], problem: str
) -> None:
    error = order.given().when(PlaceOrder("o1", "c1", "a", lines)).then_raises(MalformedOrder)
    assert problem in str(error)


def test_placing_the_same_order_again_records_nothing_and_another_is_refused() -> None:
    order.given(REQUESTED).when(PLACE).then()
    order.given(REQUESTED).when(PlaceOrder("o1", "c2", "acc-c1", LINES)).then_raises(
        OrderAlreadyPlaced
    )


def test_the_happy_path_is_a_sequence_of_new_events() -> None:
    order.given(REQUESTED).when(ValidateOrder("o1")).then(VALIDATED)
    order.given(REQUESTED, VALIDATED).when(RecordPayment("o1", 700)).then(OrderPaid(700))
    order.given(REQUESTED, VALIDATED, OrderPaid(700)).when(ShipOrder("o1", "TRK-1")).then(
        OrderShipped("TRK-1")
    )
    state = (
        order.given(REQUESTED, VALIDATED, OrderPaid(700), OrderShipped("TRK-1"))
        .when(DeliverOrder("o1"))
        .then(OrderDelivered())
    )
    assert (state.status, state.tracking, state.lines) == ("delivered", "TRK-1", LINES)


def test_a_requested_order_can_be_rejected_and_a_validated_one_cancelled() -> None:
    state = order.given(REQUESTED).when(RejectOrder("o1", "no ink")).then(OrderRejected("no ink"))
    assert (state.status, state.reason) == ("rejected", "no ink")
    order.given(REQUESTED, VALIDATED).when(CancelOrder("o1", "broke")).then(OrderCancelled("broke"))


@pytest.mark.parametrize(
    ("given_events", "command"),
    [
        ((), ValidateOrder("o1")),
        ((REQUESTED,), RecordPayment("o1", 700)),
        ((REQUESTED,), ShipOrder("o1", "TRK-1")),
        ((REQUESTED, VALIDATED), RejectOrder("o1", "late")),
        ((REQUESTED, OrderRejected("x")), ValidateOrder("o1")),
        ((REQUESTED, OrderRejected("x")), CancelOrder("o1", "x")),
        ((REQUESTED, VALIDATED, OrderPaid(700)), CancelOrder("o1", "x")),
        ((REQUESTED, VALIDATED), DeliverOrder("o1")),
        ((REQUESTED, VALIDATED, OrderPaid(700), OrderShipped("T")), ShipOrder("o1", "U")),
    ],
)
def test_commands_out_of_order_are_refused_naming_the_status(
    given_events: tuple[object, ...], command: object
) -> None:
    error = order.given(*given_events).when(command).then_raises(InvalidOrderState)  # type: ignore[arg-type]
    assert "order 'o1' is" in str(error)


def test_a_payment_of_the_wrong_amount_is_refused() -> None:
    order.given(REQUESTED, VALIDATED).when(RecordPayment("o1", 699)).then_raises(InvalidOrderState)


@pytest.mark.parametrize(
    ("given_events", "command"),
    [
        ((REQUESTED, VALIDATED), ValidateOrder("o1")),
        ((REQUESTED, OrderRejected("x")), RejectOrder("o1", "y")),
        ((REQUESTED, VALIDATED, OrderPaid(700)), RecordPayment("o1", 700)),
        ((REQUESTED, VALIDATED, OrderCancelled("x")), CancelOrder("o1", "x")),
        ((REQUESTED, VALIDATED, OrderPaid(700), OrderShipped("T")), ShipOrder("o1", "T")),
        (
            (REQUESTED, VALIDATED, OrderPaid(700), OrderShipped("T"), OrderDelivered()),
            DeliverOrder("o1"),
        ),
    ],
)
def test_repeating_the_command_of_the_current_status_records_nothing(
    given_events: tuple[object, ...], command: object
) -> None:
    order.given(*given_events).when(command).then()  # type: ignore[arg-type]


def test_order_problems_name_the_line() -> None:
    assert order_problem(LINES) is None
    assert order_problem(()) == "the order has no lines"
    assert "quantity -1 of 'pen'" in str(order_problem((OrderLine("pen", -1, 5),)))
    assert "unit price 0 of 'pen'" in str(order_problem((OrderLine("pen", 1, 0),)))
    assert "listed twice" in str(order_problem((OrderLine("pen", 1, 5), OrderLine("pen", 2, 5))))
    assert "at most 100" in str(order_problem(tuple(OrderLine(f"s{i}", 1, 1) for i in range(101))))


def test_tracking_numbers_are_derived_from_the_order_id() -> None:
    assert tracking_number("o1") == tracking_number("o1")
    assert tracking_number("o1") != tracking_number("o2")
    assert tracking_number("o1").startswith("TRK-")


# -- inventory ---------------------------------------------------------------------------

STOCKED = (Restocked("pen", 5), Restocked("ink", 1))


def test_restocking_adds_units_and_nothing_is_refused() -> None:
    state = (
        inventory.given(Restocked("pen", 2))
        .when(Restock("main", "pen", 3))
        .then(Restocked("pen", 3))
    )
    assert state.stock == {"pen": 5}
    inventory.given().when(Restock("main", "pen", 0)).then_raises(InvalidLines)
    inventory.given().when(Restock("main", "pen", MAX_QUANTITY + 1)).then_raises(InvalidLines)


def test_reserving_takes_every_line_at_once() -> None:
    state = (
        inventory.given(*STOCKED)
        .when(ReserveStock("main", "o1", LINES))
        .then(StockReserved("o1", LINES))
    )
    assert state.stock == {"pen": 3, "ink": 0}


def test_one_short_line_refuses_the_whole_reservation() -> None:
    lines = (OrderLine("pen", 2, 150), OrderLine("ink", 2, 400))
    error = (
        inventory.given(*STOCKED).when(ReserveStock("main", "o1", lines)).then_raises(OutOfStock)
    )
    assert "wants 2 of 'ink'; 1 available at 'main'" in str(error)


def test_reserving_unusable_lines_is_refused() -> None:
    inventory.given(*STOCKED).when(ReserveStock("main", "o1", ())).then_raises(InvalidLines)


def test_releasing_gives_the_stock_back() -> None:
    state = (
        inventory.given(*STOCKED, StockReserved("o1", LINES))
        .when(ReleaseStock("main", "o1", LINES))
        .then(StockReleased("o1", LINES))
    )
    assert state.stock == {"pen": 5, "ink": 1}


# -- process managers as pure functions --------------------------------------------------

fulfilment = OrderFulfilment()


def test_a_requested_order_reserves_its_stock_at_its_warehouse() -> None:
    assert fulfilment.react(recorded("order-o1", REQUESTED)) == [
        Dispatch(Inventory, "main", ReserveStock("main", "o1", LINES))
    ]


def test_an_unusable_request_is_rejected_without_touching_the_inventory() -> None:
    bad = OrderRequested("c1", "acc-c1", "main", (), 0)
    assert fulfilment.react(recorded("order-o1", bad)) == [
        Dispatch(Order, "o1", RejectOrder("o1", "the order has no lines"))
    ]


def test_reserved_stock_validates_and_validation_charges_the_account() -> None:
    assert fulfilment.react(recorded("inventory-main", StockReserved("o1", LINES))) == [
        Dispatch(Order, "o1", ValidateOrder("o1"))
    ]
    assert fulfilment.react(recorded("order-o1", VALIDATED)) == [
        Dispatch(Account, "acc-c1", PayForOrder("acc-c1", "o1", 700))
    ]
    assert fulfilment.react(recorded("account-acc-c1", OrderCharged("o1", 700))) == [
        Dispatch(Order, "o1", RecordPayment("o1", 700))
    ]


def test_out_of_stock_rejects_the_order() -> None:
    event = recorded("order-o1", REQUESTED)
    (dispatch,) = fulfilment.react(event)
    assert fulfilment.compensate(event, dispatch, OutOfStock("no ink")) == [
        Dispatch(Order, "o1", RejectOrder("o1", "no ink"))
    ]


def test_a_refused_payment_releases_the_stock_and_cancels_the_order() -> None:
    event = recorded("order-o1", VALIDATED)
    (dispatch,) = fulfilment.react(event)
    assert fulfilment.compensate(event, dispatch, InsufficientFunds("short")) == [
        Dispatch(Inventory, "main", ReleaseStock("main", "o1", LINES)),
        Dispatch(Order, "o1", CancelOrder("o1", "payment refused: short")),
    ]


def test_stock_reserved_for_an_order_that_cannot_be_validated_goes_back() -> None:
    event = recorded("inventory-main", StockReserved("o1", LINES))
    (dispatch,) = fulfilment.react(event)
    assert fulfilment.compensate(event, dispatch, InvalidOrderState("rejected")) == [
        Dispatch(Inventory, "main", ReleaseStock("main", "o1", LINES))
    ]


def test_a_refused_payment_record_has_no_compensation() -> None:
    event = recorded("account-acc-c1", OrderCharged("o1", 700))
    (dispatch,) = fulfilment.react(event)
    assert fulfilment.compensate(event, dispatch, InvalidOrderState("x")) == []


def test_shipping_ships_a_paid_order_with_its_derived_tracking_number() -> None:
    assert Shipping().react(recorded("order-o1", OrderPaid(700))) == [
        Dispatch(Order, "o1", ShipOrder("o1", tracking_number("o1")))
    ]
    assert Shipping().react(recorded("order-o1", VALIDATED)) == []


# -- whole flows -------------------------------------------------------------------------


def shop(money: int = 1_000) -> World:
    world = World(OrderFulfilment(), Shipping())
    world.send(Account, "acc-c1", OpenAccount("acc-c1", "c1"))
    world.send(Account, "acc-c1", Deposit("acc-c1", money))
    world.send(Inventory, "main", Restock("main", "pen", 5))
    world.send(Inventory, "main", Restock("main", "ink", 1))
    return world


def test_an_order_is_validated_paid_and_shipped() -> None:
    world = shop()
    world.send(Order, "o1", PLACE)
    world.settle()
    final = world.state(Order, "o1")
    assert (final.status, final.tracking) == ("shipped", tracking_number("o1"))
    assert world.state(Account, "acc-c1").balance == 300
    assert world.state(Inventory, "main").stock == {"pen": 3, "ink": 0}
    kinds = [type(r.event).__name__ for r in world.log if r.stream_id == "order-o1"]
    assert kinds == ["OrderRequested", "OrderValidated", "OrderPaid", "OrderShipped"]


def test_an_order_out_of_stock_is_rejected_and_nothing_is_charged() -> None:
    world = shop()
    world.send(Order, "o1", PlaceOrder("o1", "c1", "acc-c1", (OrderLine("ink", 2, 400),)))
    world.settle()
    assert world.state(Order, "o1").status == "rejected"
    assert world.state(Account, "acc-c1").balance == 1_000
    assert world.state(Inventory, "main").stock == {"pen": 5, "ink": 1}


def test_an_order_the_customer_cannot_pay_is_cancelled_and_its_stock_released() -> None:
    world = shop(money=699)
    world.send(Order, "o1", PLACE)
    world.settle()
    final = world.state(Order, "o1")
    assert final.status == "cancelled"
    assert "payment refused" in final.reason
    assert world.state(Inventory, "main").stock == {"pen": 5, "ink": 1}
    assert world.state(Account, "acc-c1").balance == 699


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["pen", "ink", "cap"]), st.integers(0, 3), st.integers(1, 300)),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 2_000),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_random_orders_end_paid_or_refused_and_stock_and_money_add_up(
    orders: list[tuple[str, int, int]], money: int, close_account: bool, seed: int
) -> None:
    """Every order ends shipped, rejected or cancelled; stock never goes negative;
    units left + units shipped = units restocked; money charged = money paid to orders
    = the customer's loss; no compensation is refused."""
    world = World(OrderFulfilment(), Shipping())
    world.send(Account, "acc", OpenAccount("acc", "c"))
    if money:
        world.send(Account, "acc", Deposit("acc", money))
    for sku in ("pen", "ink", "cap"):
        world.send(Inventory, "main", Restock("main", sku, 4))
    if close_account:
        if money:
            world.send(Account, "acc", Withdraw("acc", money))
        world.send(Account, "acc", CloseAccount("acc"))
    rng = random.Random(seed)
    for n, (sku, quantity, price) in enumerate(orders):
        world.send(
            Order, f"o{n}", PlaceOrder(f"o{n}", "c", "acc", (OrderLine(sku, quantity, price),))
        )
        world.step(rng.randrange(2), rng)
    world.settle(rng)
    assert world.unexpected == []
    shipped_units = {"pen": 0, "ink": 0, "cap": 0}
    paid = 0
    for n, (sku, quantity, price) in enumerate(orders):
        final = world.state(Order, f"o{n}")
        assert final.status in ("shipped", "rejected", "cancelled")
        if final.status == "shipped":
            shipped_units[sku] += quantity
            paid += quantity * price
    stock = world.state(Inventory, "main").stock
    assert all(units >= 0 for units in stock.values())
    assert {sku: stock[sku] + shipped_units[sku] for sku in shipped_units} == dict.fromkeys(
        shipped_units, 4
    )
    balance = world.state(Account, "acc").balance
    assert balance == (0 if close_account else money) - paid
    if close_account:
        assert all(
            isinstance(error, AccountIsClosed | OutOfStock | InvalidLines)
            for _, error in world.refusals
        )
