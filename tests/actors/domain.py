"""Test domains: a bank account and a counter with deliberate faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

import msgspec

from actors import Aggregate, Command, Event, Rejected

# -- account -----------------------------------------------------------------------------


class OpenAccount(Command, tag="test.bank.open"):
    owner: str


class Deposit(Command, tag="test.bank.deposit"):
    amount: int


class Withdraw(Command, tag="test.bank.withdraw"):
    amount: int


class AccountOpened(Event, tag="test.bank.opened"):
    owner: str


class Deposited(Event, tag="test.bank.deposited"):
    amount: int


class Withdrawn(Event, tag="test.bank.withdrawn"):
    amount: int


class AccountNotOpen(Rejected):
    pass


class InsufficientFunds(Rejected):
    pass


class InvalidAmount(Rejected):
    pass


AccountCommand = OpenAccount | Deposit | Withdraw
AccountEvent = AccountOpened | Deposited | Withdrawn


class AccountState(msgspec.Struct, frozen=True):
    owner: str | None = None
    balance: int = 0


class Account(Aggregate[AccountState, AccountCommand, AccountEvent]):
    initial = AccountState()
    category = "account"

    def decide(self, state: AccountState, command: AccountCommand) -> Sequence[AccountEvent]:
        match command:
            case OpenAccount(owner=owner):
                return [] if state.owner is not None else [AccountOpened(owner=owner)]
            case Deposit(amount=amount):
                if state.owner is None:
                    raise AccountNotOpen("the account is not open")
                if amount <= 0:
                    raise InvalidAmount(f"deposit of {amount}")
                return [Deposited(amount=amount)]
            case Withdraw(amount=amount):
                if state.owner is None:
                    raise AccountNotOpen("the account is not open")
                if amount <= 0:
                    raise InvalidAmount(f"withdrawal of {amount}")
                if amount > state.balance:
                    raise InsufficientFunds(f"balance {state.balance} < {amount}")
                return [Withdrawn(amount=amount)]
            case _:
                assert_never(command)

    def evolve(self, state: AccountState, event: AccountEvent) -> AccountState:
        match event:
            case AccountOpened(owner=owner):
                return msgspec.structs.replace(state, owner=owner)
            case Deposited(amount=amount):
                return msgspec.structs.replace(state, balance=state.balance + amount)
            case Withdrawn(amount=amount):
                return msgspec.structs.replace(state, balance=state.balance - amount)
            case _:
                assert_never(event)


# -- counter with faults -----------------------------------------------------------------


class Increment(Command, tag="test.counter.increment"):
    by: int = 1
    tag: str = ""


class Noop(Command, tag="test.counter.noop"):
    pass


class Boom(Command, tag="test.counter.boom"):
    """decide raises an unexpected error (a bug)."""


class Poison(Command, tag="test.counter.poison"):
    """decide emits an event evolve refuses (code and history disagree)."""


class Incremented(Event, tag="test.counter.incremented"):
    by: int
    tag: str = ""


class Poisoned(Event, tag="test.counter.poisoned"):
    pass


CounterCommand = Increment | Noop | Boom | Poison
CounterEvent = Incremented | Poisoned


class CounterState(msgspec.Struct, frozen=True):
    value: int = 0
    count: int = 0
    tags: tuple[str, ...] = ()


class Counter(Aggregate[CounterState, CounterCommand, CounterEvent]):
    initial = CounterState()
    category = "counter"

    def decide(self, state: CounterState, command: CounterCommand) -> Sequence[CounterEvent]:
        match command:
            case Increment(by=by, tag=tag):
                if by == 0:
                    raise InvalidAmount("increment by 0")
                return [Incremented(by=by, tag=tag)]
            case Noop():
                return []
            case Boom():
                raise RuntimeError("boom in decide")
            case Poison():
                return [Poisoned()]
            case _:
                assert_never(command)

    def evolve(self, state: CounterState, event: CounterEvent) -> CounterState:
        match event:
            case Incremented(by=by, tag=tag):
                tags = (*state.tags, tag) if tag else state.tags
                return CounterState(state.value + by, state.count + 1, tags)
            case Poisoned():
                raise ValueError("a poisoned event cannot be applied")
            case _:
                assert_never(event)


class SnapshottedCounter(Counter):
    category = "scounter"
    snapshot_every = 10
