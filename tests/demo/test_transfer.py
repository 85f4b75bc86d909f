"""Transfers: the Transfer aggregate, the process manager as pure functions, and whole
flows driven by an in-memory stand-in for the runtime."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Dispatch, open_system
from actors.testing import AggregateSpec
from demo.bank import (
    MAX_AMOUNT,
    Account,
    AccountIsClosed,
    AccountNotOpen,
    AccountState,
    BalanceNotZero,
    CloseAccount,
    CompleteTransfer,
    Credited,
    CreditForTransfer,
    Debited,
    DebitForTransfer,
    Deposit,
    FailTransfer,
    InsufficientFunds,
    InvalidAmount,
    OpenAccount,
    Refunded,
    RefundTransfer,
    RequestTransfer,
    SameAccount,
    SettleTransfer,
    Transfer,
    TransferCompleted,
    TransferConflict,
    TransferFailed,
    TransferProcess,
    TransferRequested,
    TransfersInFlight,
    TransferState,
    Withdraw,
)
from store import RecordedEvent
from tests.demo._driver import World

transfer = AggregateSpec(Transfer())
REQUESTED = TransferRequested(source="a", target="b", amount=5)


def recorded(stream_id: str, event: object, position: int = 7) -> RecordedEvent:
    tag = type(event).__struct_config__.tag  # type: ignore[attr-defined]
    return RecordedEvent(stream_id, 1, position, tag, 1, event, {}, 0.0)


# -- the aggregate -----------------------------------------------------------------------


def test_requesting_a_transfer_records_it() -> None:
    state = transfer.given().when(RequestTransfer("t1", "a", "b", 5)).then(REQUESTED)
    assert state == TransferState("requested", "a", "b", 5)


def test_requesting_the_same_transfer_again_records_nothing() -> None:
    transfer.given(REQUESTED).when(RequestTransfer("t1", "a", "b", 5)).then()


def test_a_transfer_id_reused_for_another_request_is_refused() -> None:
    transfer.given(REQUESTED).when(RequestTransfer("t1", "a", "b", 6)).then_raises(TransferConflict)


def test_a_transfer_of_nothing_or_to_the_same_account_is_refused() -> None:
    transfer.given().when(RequestTransfer("t1", "a", "b", 0)).then_raises(InvalidAmount)
    transfer.given().when(RequestTransfer("t1", "a", "b", MAX_AMOUNT + 1)).then_raises(
        InvalidAmount
    )
    transfer.given().when(RequestTransfer("t1", "a", "a", 5)).then_raises(SameAccount)


def test_completing_and_failing_follow_the_request_once() -> None:
    transfer.given(REQUESTED).when(CompleteTransfer("t1")).then(TransferCompleted())
    transfer.given(REQUESTED, TransferCompleted()).when(CompleteTransfer("t1")).then()
    transfer.given(REQUESTED).when(FailTransfer("t1", "why")).then(TransferFailed("why"))
    transfer.given(REQUESTED, TransferFailed("why")).when(FailTransfer("t1", "why")).then()


def test_a_transfer_cannot_end_both_ways_or_before_it_was_requested() -> None:
    transfer.given(REQUESTED, TransferCompleted()).when(FailTransfer("t1", "x")).then_raises(
        TransferConflict
    )
    transfer.given(REQUESTED, TransferFailed("x")).when(CompleteTransfer("t1")).then_raises(
        TransferConflict
    )
    transfer.given().when(CompleteTransfer("t1")).then_raises(TransferConflict)


# -- the process manager, as pure functions ----------------------------------------------

pm = TransferProcess()


def test_a_requested_transfer_debits_the_source() -> None:
    assert pm.react(recorded("transfer-t1", REQUESTED)) == [
        Dispatch(Account, "a", DebitForTransfer("a", "t1", "b", 5))
    ]


def test_a_debit_credits_the_target_naming_the_source_from_its_stream() -> None:
    assert pm.react(recorded("account-a", Debited("t1", "b", 5))) == [
        Dispatch(Account, "b", CreditForTransfer("b", "t1", "a", 5))
    ]


def test_a_credit_completes_the_transfer_and_settles_the_source() -> None:
    assert pm.react(recorded("account-b", Credited("t1", "a", 5))) == [
        Dispatch(Transfer, "t1", CompleteTransfer("t1")),
        Dispatch(Account, "a", SettleTransfer("a", "t1")),
    ]


def test_a_refund_fails_the_transfer() -> None:
    assert pm.react(recorded("account-a", Refunded("t1", 5, "closed"))) == [
        Dispatch(Transfer, "t1", FailTransfer("t1", "closed"))
    ]


def test_a_refused_debit_fails_the_transfer_with_the_reason() -> None:
    event = recorded("transfer-t1", REQUESTED)
    (dispatch,) = pm.react(event)
    out = pm.compensate(event, dispatch, InsufficientFunds("a holds 1 cents, not 5"))
    assert out == [
        Dispatch(Transfer, "t1", FailTransfer("t1", "debit refused: a holds 1 cents, not 5"))
    ]


def test_a_refused_credit_refunds_the_source() -> None:
    event = recorded("account-a", Debited("t1", "b", 5))
    (dispatch,) = pm.react(event)
    out = pm.compensate(event, dispatch, AccountIsClosed("account 'b' is closed"))
    assert out == [
        Dispatch(Account, "a", RefundTransfer("a", "t1", "credit refused: account 'b' is closed"))
    ]


def test_other_refusals_have_no_compensation() -> None:
    event = recorded("account-b", Credited("t1", "a", 5))
    for dispatch in pm.react(event):
        assert pm.compensate(event, dispatch, TransferConflict("x")) == []


def test_the_process_manager_ignores_events_it_does_not_handle() -> None:
    assert pm.react(recorded("account-a", CloseAccount("a"))) == []


# -- whole flows -------------------------------------------------------------------------


def bank(*owners: str, money: int = 100) -> World:
    world = World(TransferProcess())
    for owner in owners:
        world.send(Account, owner, OpenAccount(owner, owner))
        world.send(Account, owner, Deposit(owner, money))
    return world


def test_a_transfer_moves_the_money_and_completes() -> None:
    world = bank("a", "b")
    world.send(Transfer, "t1", RequestTransfer("t1", "a", "b", 30))
    world.settle()
    assert world.state(Account, "a") == AccountState("a", 70)
    assert world.state(Account, "b") == AccountState("b", 130)
    assert world.state(Transfer, "t1").status == "completed"


def test_a_transfer_to_a_closed_account_is_refunded_and_fails() -> None:
    world = bank("a")
    world.send(Account, "b", OpenAccount("b", "b"))
    world.send(Account, "b", CloseAccount("b"))
    world.send(Transfer, "t1", RequestTransfer("t1", "a", "b", 30))
    world.settle()
    assert world.state(Account, "a") == AccountState("a", 100)
    final = world.state(Transfer, "t1")
    assert (final.status, final.reason) == ("failed", "credit refused: account 'b' is closed")
    assert [type(e) for _, e in world.refusals] == [AccountIsClosed]


def test_a_transfer_beyond_the_balance_fails_without_moving_money() -> None:
    world = bank("a", "b")
    world.send(Transfer, "t1", RequestTransfer("t1", "a", "b", 101))
    world.settle()
    assert world.state(Account, "a").balance == 100
    assert world.state(Transfer, "t1").status == "failed"
    assert [type(e) for _, e in world.refusals] == [InsufficientFunds]


def test_a_transfer_to_an_account_never_opened_is_refunded() -> None:
    world = bank("a")
    world.send(Transfer, "t1", RequestTransfer("t1", "a", "nobody", 10))
    world.settle()
    assert world.state(Account, "a") == AccountState("a", 100)
    assert [type(e) for _, e in world.refusals] == [AccountNotOpen]


ACCOUNTS = ["a", "b", "c", "d"]
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("transfer"),
            st.sampled_from(ACCOUNTS),
            st.sampled_from(ACCOUNTS),
            st.integers(1, 80),
        ),
        st.tuples(st.just("close"), st.sampled_from(ACCOUNTS), st.just(""), st.just(0)),
        st.tuples(st.just("withdraw"), st.sampled_from(ACCOUNTS), st.just(""), st.integers(1, 80)),
        st.tuples(st.just("step"), st.just(""), st.just(""), st.integers(0, 20)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(0, 2**32))
def test_random_transfers_and_closures_conserve_money_and_every_transfer_ends(
    ops: list[tuple[str, str, str, int]], seed: int
) -> None:
    """Transfers, withdrawals and closures interleaved with partial progress of the
    process manager: money is conserved at every step (balances + in flight = money in
    - money out), no balance goes negative, no compensation is ever refused, and once
    the process manager settles every transfer is completed or failed with its money
    at the target or back at the source."""
    world = bank(*ACCOUNTS)
    rng = random.Random(seed)
    total = 100 * len(ACCOUNTS)
    withdrawn = 0
    requested: list[tuple[str, str, str, int]] = []

    def check() -> None:
        balances = [world.state(Account, a).balance for a in ACCOUNTS]
        # in flight: debited and neither credited nor refunded yet (a credited transfer
        # stays pending at its source until settled, but its money is at the target)
        debited: dict[str, int] = {}
        for entry in world.log:
            match entry.event:
                case Debited(transfer_id=transfer_id, amount=amount):
                    debited[transfer_id] = amount
                case Credited(transfer_id=transfer_id) | Refunded(transfer_id=transfer_id):
                    del debited[transfer_id]
                case _:
                    pass
        in_flight = sum(debited.values())
        assert min(balances) >= 0
        assert sum(balances) + in_flight + withdrawn == total

    for kind, first, second, amount in ops:
        if kind == "transfer" and first != second:
            transfer_id = f"t{len(requested)}"
            world.send(Transfer, transfer_id, RequestTransfer(transfer_id, first, second, amount))
            requested.append((transfer_id, first, second, amount))
        elif kind in ("close", "withdraw"):
            command = CloseAccount(first) if kind == "close" else Withdraw(first, amount)
            try:
                world.send(Account, first, command)
            except (InsufficientFunds, AccountIsClosed):
                pass
            except (BalanceNotZero, TransfersInFlight):
                assert kind == "close"
            else:
                withdrawn += amount if kind == "withdraw" else 0
        elif kind == "step":
            for _ in range(amount):
                world.step(rng.randrange(len(world.managers)), rng)
        check()
    world.settle(rng)
    check()
    assert world.unexpected == []
    for account in ACCOUNTS:
        assert world.state(Account, account).pending == ()
    for transfer_id, *_ in requested:
        assert world.state(Transfer, transfer_id).status in ("completed", "failed")


async def test_a_resent_transfer_request_after_a_restart_returns_its_first_result(
    tmp_path: Path,
) -> None:
    """Decide answers a resent RequestTransfer with no events; with the same command id
    the resend still gets the first result (duplicate), also when the actor that saw it
    first is gone (a restart)."""
    db = str(tmp_path / "t.db")
    request = RequestTransfer("t1", "a", "b", 5)
    async with open_system(db) as system:
        first = await system.aggregates(Transfer).ask("t1", request, command_id="req-1")
    async with open_system(db) as system:
        again = await system.aggregates(Transfer).ask("t1", request, command_id="req-1")
    assert again.duplicate
    assert (again.events, again.version, again.position) == (
        first.events,
        first.version,
        first.position,
    )
