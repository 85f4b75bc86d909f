from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import Aggregate, Event
from actors.testing import AggregateSpec
from tests.actors.domain import (
    Account,
    AccountNotOpen,
    AccountOpened,
    AccountState,
    Counter,
    Deposit,
    Deposited,
    Incremented,
    InsufficientFunds,
    InvalidAmount,
    Noop,
    OpenAccount,
    Withdraw,
    Withdrawn,
)

account = AggregateSpec(Account())
counter = AggregateSpec(Counter())


def test_opening_an_account_records_its_owner() -> None:
    state = account.given().when(OpenAccount(owner="ada")).then(AccountOpened(owner="ada"))
    assert state == AccountState(owner="ada", balance=0)


def test_opening_an_open_account_again_records_nothing() -> None:
    account.given(AccountOpened(owner="ada")).when(OpenAccount(owner="bob")).then()


def test_deposit_on_an_open_account_is_recorded() -> None:
    state = (
        account.given(AccountOpened(owner="ada"), Deposited(amount=10))
        .when(Deposit(amount=5))
        .then(Deposited(amount=5))
    )
    assert state.balance == 15


def test_deposit_on_an_unopened_account_is_rejected() -> None:
    error = account.given().when(Deposit(amount=5)).then_raises(AccountNotOpen)
    assert "not open" in str(error)


def test_withdrawing_more_than_the_balance_is_rejected() -> None:
    account.given(AccountOpened(owner="ada"), Deposited(amount=3)).when(
        Withdraw(amount=4)
    ).then_raises(InsufficientFunds)


def test_withdrawing_within_the_balance_is_recorded() -> None:
    state = (
        account.given(AccountOpened(owner="ada"), Deposited(amount=3))
        .when(Withdraw(amount=3))
        .then(Withdrawn(amount=3))
    )
    assert state.balance == 0


def test_then_fails_when_decide_emits_other_events() -> None:
    with pytest.raises(AssertionError, match="expected"):
        account.given(AccountOpened(owner="ada")).when(Deposit(amount=5)).then(Deposited(amount=6))


def test_then_raises_fails_when_nothing_is_raised() -> None:
    with pytest.raises(AssertionError, match="InvalidAmount"):
        counter.given().when(Noop()).then_raises(InvalidAmount)


def test_then_fails_for_an_event_the_aggregate_does_not_declare() -> None:
    class Stray(Event, tag="test.stray"):
        pass

    with pytest.raises(AssertionError, match="event_types"):
        counter.round_trip(Stray())  # type: ignore[arg-type]  # deliberately foreign


def test_event_types_are_derived_from_the_type_arguments() -> None:
    assert set(Account.event_types) == {AccountOpened, Deposited, Withdrawn}
    assert Account.stream_id("a1") == "account-a1"


def test_a_category_with_a_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="category"):

        class Bad(Aggregate[AccountState, OpenAccount, AccountOpened]):
            category = "Bad Name"


commands = st.one_of(
    st.builds(OpenAccount, owner=st.text(min_size=1, max_size=5)),
    st.builds(Deposit, amount=st.integers(-3, 50)),
    st.builds(Withdraw, amount=st.integers(-3, 50)),
)


@given(st.lists(commands, max_size=30))
def test_evolve_accepts_whatever_decide_emits_and_balances_never_go_negative(
    sequence: list[OpenAccount | Deposit | Withdraw],
) -> None:
    aggregate = Account()
    state = aggregate.initial
    for command in sequence:
        try:
            events = aggregate.decide(state, command)
        except (AccountNotOpen, InsufficientFunds, InvalidAmount):
            continue
        for event in events:
            state = aggregate.evolve(state, account.round_trip(event))
        assert state.balance >= 0


@given(st.integers(-(2**40), 2**40), st.text(max_size=20))
def test_counter_events_survive_the_codec(by: int, tag: str) -> None:
    event = Incremented(by=by, tag=tag)
    assert counter.round_trip(event) == event
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=Incremented) == event
