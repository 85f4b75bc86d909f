"""The bank account as pure functions: every command path, accepted and refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.testing import AggregateSpec
from demo.bank import (
    MAX_AMOUNT,
    Account,
    AccountClosed,
    AccountCommand,
    AccountIsClosed,
    AccountNotOpen,
    AccountOpened,
    AccountState,
    AlreadyOpen,
    BalanceNotZero,
    CloseAccount,
    Credited,
    CreditForTransfer,
    Debited,
    DebitForTransfer,
    Deposit,
    Deposited,
    InsufficientFunds,
    InvalidAmount,
    OpenAccount,
    OrderCharged,
    PayForOrder,
    Refunded,
    RefundTransfer,
    SettleTransfer,
    TransferSettled,
    TransfersInFlight,
    Withdraw,
    Withdrawn,
)

account = AggregateSpec(Account())
OPENED = AccountOpened(owner="ada")


def test_opening_records_the_owner() -> None:
    state = account.given().when(OpenAccount("a1", "ada")).then(OPENED)
    assert state == AccountState(owner="ada")


def test_opening_again_for_the_same_owner_records_nothing() -> None:
    account.given(OPENED).when(OpenAccount("a1", "ada")).then()


def test_opening_for_another_owner_is_refused() -> None:
    account.given(OPENED).when(OpenAccount("a1", "bob")).then_raises(AlreadyOpen)


def test_a_closed_account_is_never_reopened() -> None:
    account.given(OPENED, AccountClosed()).when(OpenAccount("a1", "ada")).then_raises(
        AccountIsClosed
    )


def test_a_deposit_raises_the_balance() -> None:
    state = account.given(OPENED, Deposited(10)).when(Deposit("a1", 5)).then(Deposited(5))
    assert state.balance == 15


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1])
@pytest.mark.parametrize(
    "command",
    [
        lambda n: Deposit("a1", n),
        lambda n: Withdraw("a1", n),
        lambda n: DebitForTransfer("a1", "t1", "b", n),
        lambda n: CreditForTransfer("a1", "t1", "b", n),
        lambda n: PayForOrder("a1", "o1", n),
    ],
)
def test_amounts_must_be_positive(amount: int, command: object) -> None:
    make = command
    assert callable(make)
    error = account.given(OPENED, Deposited(100)).when(make(amount)).then_raises(InvalidAmount)
    assert str(amount) in str(error)


@pytest.mark.parametrize(
    "command",
    [
        Deposit("a1", 5),
        Withdraw("a1", 5),
        CloseAccount("a1"),
        DebitForTransfer("a1", "t1", "b", 5),
        CreditForTransfer("a1", "t1", "b", 5),
        PayForOrder("a1", "o1", 5),
    ],
)
def test_an_unopened_account_refuses_money_commands(command: AccountCommand) -> None:
    error = account.given().when(command).then_raises(AccountNotOpen)
    assert "'a1'" in str(error)


@pytest.mark.parametrize(
    "command",
    [
        Deposit("a1", 5),
        Withdraw("a1", 5),
        CloseAccount("a1"),
        DebitForTransfer("a1", "t1", "b", 5),
        CreditForTransfer("a1", "t1", "b", 5),
        PayForOrder("a1", "o1", 5),
    ],
)
def test_a_closed_account_refuses_money_commands(command: AccountCommand) -> None:
    account.given(OPENED, AccountClosed()).when(command).then_raises(AccountIsClosed)


def test_a_withdrawal_within_the_balance_is_recorded() -> None:
    state = account.given(OPENED, Deposited(10)).when(Withdraw("a1", 10)).then(Withdrawn(10))
    assert state.balance == 0


def test_a_withdrawal_beyond_the_balance_is_refused() -> None:
    error = (
        account.given(OPENED, Deposited(3)).when(Withdraw("a1", 4)).then_raises(InsufficientFunds)
    )
    assert "3 cents, not 4" in str(error)


def test_closing_at_zero_balance_is_recorded() -> None:
    state = (
        account.given(OPENED, Deposited(5), Withdrawn(5))
        .when(CloseAccount("a1"))
        .then(AccountClosed())
    )
    assert state.closed


def test_closing_with_money_in_it_is_refused() -> None:
    account.given(OPENED, Deposited(1)).when(CloseAccount("a1")).then_raises(BalanceNotZero)


def test_closing_with_a_transfer_in_flight_is_refused() -> None:
    account.given(OPENED, Deposited(5), Debited("t1", "b", 5)).when(CloseAccount("a1")).then_raises(
        TransfersInFlight
    )


def test_a_debit_takes_the_money_and_keeps_the_transfer_pending() -> None:
    state = (
        account.given(OPENED, Deposited(10))
        .when(DebitForTransfer("a1", "t1", "b", 7))
        .then(Debited("t1", "b", 7))
    )
    assert (state.balance, state.pending) == (3, (("t1", 7),))


def test_a_debit_beyond_the_balance_is_refused() -> None:
    account.given(OPENED, Deposited(6)).when(DebitForTransfer("a1", "t1", "b", 7)).then_raises(
        InsufficientFunds
    )


def test_debiting_a_pending_transfer_again_records_nothing() -> None:
    account.given(OPENED, Deposited(10), Debited("t1", "b", 7)).when(
        DebitForTransfer("a1", "t1", "b", 7)
    ).then()


def test_a_credit_raises_the_balance() -> None:
    state = (
        account.given(OPENED)
        .when(CreditForTransfer("a1", "t1", "s", 4))
        .then(Credited("t1", "s", 4))
    )
    assert state.balance == 4


def test_a_refund_returns_the_pending_amount() -> None:
    state = (
        account.given(OPENED, Deposited(10), Debited("t1", "b", 7))
        .when(RefundTransfer("a1", "t1", "b is closed"))
        .then(Refunded("t1", 7, "b is closed"))
    )
    assert (state.balance, state.pending) == (10, ())


def test_a_refund_of_a_transfer_not_pending_records_nothing() -> None:
    account.given(OPENED, Deposited(10), Debited("t1", "b", 7), Refunded("t1", 7, "x")).when(
        RefundTransfer("a1", "t1", "again")
    ).then()
    account.given().when(RefundTransfer("a1", "t9", "never debited")).then()


def test_settling_clears_the_pending_transfer_so_the_account_can_close() -> None:
    state = (
        account.given(OPENED, Deposited(7), Debited("t1", "b", 7))
        .when(SettleTransfer("a1", "t1"))
        .then(TransferSettled("t1"))
    )
    assert state.pending == ()
    account.given(OPENED, Deposited(7), Debited("t1", "b", 7), TransferSettled("t1")).when(
        CloseAccount("a1")
    ).then(AccountClosed())


def test_settling_a_transfer_not_pending_records_nothing() -> None:
    account.given(OPENED).when(SettleTransfer("a1", "t1")).then()


def test_paying_for_an_order_takes_the_money() -> None:
    state = (
        account.given(OPENED, Deposited(10))
        .when(PayForOrder("a1", "o1", 9))
        .then(OrderCharged("o1", 9))
    )
    assert state.balance == 1


def test_paying_beyond_the_balance_is_refused() -> None:
    account.given(OPENED, Deposited(8)).when(PayForOrder("a1", "o1", 9)).then_raises(
        InsufficientFunds
    )


money_commands = st.one_of(
    st.builds(Deposit, st.just("a1"), st.integers(-5, 1_000)),
    st.builds(Withdraw, st.just("a1"), st.integers(-5, 1_000)),
    st.builds(PayForOrder, st.just("a1"), st.sampled_from(["o1", "o2"]), st.integers(-5, 1_000)),
    st.builds(
        DebitForTransfer,
        st.just("a1"),
        st.sampled_from(["t1", "t2", "t3"]),
        st.just("b"),
        st.integers(-5, 1_000),
    ),
    st.builds(CreditForTransfer, st.just("a1"), st.just("t9"), st.just("b"), st.integers(1, 99)),
    st.builds(RefundTransfer, st.just("a1"), st.sampled_from(["t1", "t2", "t3"]), st.just("r")),
    st.builds(SettleTransfer, st.just("a1"), st.sampled_from(["t1", "t2", "t3"])),
    st.builds(CloseAccount, st.just("a1")),
)


@settings(deadline=None)
@given(st.lists(money_commands, max_size=40))
def test_no_command_sequence_drives_the_balance_negative_or_loses_money(
    commands: list[AccountCommand],
) -> None:
    """Random commands on an open account are refused only for the documented reasons;
    the balance never goes negative; balance plus pending transfers equals money in
    minus money out (settled transfers are out); every event survives the codec."""
    state = account.given(OPENED).state
    money_in = money_out = 0
    for command in commands:
        try:
            decided = Account().decide(state, command)
        except (InvalidAmount, InsufficientFunds, BalanceNotZero, TransfersInFlight) as error:
            assert not isinstance(command, RefundTransfer | SettleTransfer)
            if isinstance(error, BalanceNotZero | TransfersInFlight):
                assert isinstance(command, CloseAccount)
            continue
        settled = dict(state.pending)
        for event in decided:
            state = Account().evolve(state, account.round_trip(event))
            match event:
                case Deposited(amount=n) | Credited(amount=n):
                    money_in += n
                case Withdrawn(amount=n) | OrderCharged(amount=n):
                    money_out += n
                case TransferSettled(transfer_id=transfer_id):
                    money_out += settled[transfer_id]  # it reached the target
                case _:
                    pass
        if state.closed:
            break
        assert state.balance >= 0
        assert state.balance + sum(n for _, n in state.pending) == money_in - money_out
