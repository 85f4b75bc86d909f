"""The actor runtime against a plain-Python model of the bank account (PBT-4).

Seeded random schedules drive a real system on a SQLite file. Each round sends a burst
of asks at once (so an actor takes several of them as one batch), to a few accounts:
opens (a second open by the same owner is a no-op, by another owner a refusal),
deposits, withdrawals and closes, whose answers depend on the account's history; with no
command id, a fresh one, a resend of an earlier one (same account, same command), or an
id already used on another account. Some asks are cancelled mid-flight and their
command id sent again in a later round. Between rounds the schedule passivates actors,
restarts the whole system on the same file, or carries on; runs differ in snapshots
(off, every event, every third event) and in how many actors may be live (two forces
passivation in the middle of a round).

The model decides each command on the account's committed state, in the order the
asks reached the account, and knows which ids are stored. After every round: every
answer (events, version, duplicate flag, the refusal's type), the live `state`,
`state_at` now and at a random earlier version, and every stored row of every stream
equal the model; each answer's position is the position of its stream's event at its
version. A cancelled ask's outcome is read from the store (`find_command`): the model
applies it exactly when the store holds its command id at the version the model
expects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors import ActorSystem, CommandResult, open_system
from demo.bank import (
    MAX_AMOUNT,
    Account,
    AccountClosed,
    AccountOpened,
    AccountState,
    CloseAccount,
    Deposit,
    Deposited,
    OpenAccount,
    Withdraw,
    Withdrawn,
)
from store import EventStore, IdempotencyConflict
from tests.reliability._report import Report, size, time_limit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(600))]

ACCOUNTS = ("a", "b", "c")
OWNERS = ("ada", "bob")


# -- the model ----------------------------------------------------------------------------


@dataclass
class ModelAccount:
    owner: str | None = None
    balance: int = 0
    closed: bool = False
    events: list[tuple[Any, ...]] = field(default_factory=list)
    states: list[tuple[str | None, int, bool]] = field(default_factory=lambda: [(None, 0, False)])

    def decide(self, command: Any) -> list[tuple[Any, ...]] | str:
        """The events of `command` on this account, or the name of the refusal."""
        if isinstance(command, OpenAccount):
            if self.closed:
                return "AccountIsClosed"
            if self.owner is None:
                return [("opened", command.owner)]
            return [] if self.owner == command.owner else "AlreadyOpen"
        amount = getattr(command, "amount", 1)
        if not 0 < amount <= MAX_AMOUNT:
            return "InvalidAmount"
        if self.closed:
            return "AccountIsClosed"
        if self.owner is None:
            return "AccountNotOpen"
        if isinstance(command, Deposit):
            return [("deposited", amount)]
        if isinstance(command, Withdraw):
            return "InsufficientFunds" if amount > self.balance else [("withdrawn", amount)]
        assert isinstance(command, CloseAccount)
        return "BalanceNotZero" if self.balance else [("closed",)]

    def apply(self, events: list[tuple[Any, ...]]) -> None:
        for event in events:
            match event:
                case ("opened", owner):
                    self.owner = owner
                case ("deposited", amount):
                    self.balance += amount
                case ("withdrawn", amount):
                    self.balance -= amount
                case ("closed",):
                    self.closed = True
            self.events.append(event)
            self.states.append((self.owner, self.balance, self.closed))

    @property
    def version(self) -> int:
        return len(self.events)


@dataclass
class Stored:
    """A command id the store holds: where, and the answer every resend gets."""

    account: str
    events: list[tuple[Any, ...]]
    version: int


@dataclass
class Send:
    account: str
    command: Any
    command_id: str | None
    cancel_after: int | None  # checkpoints before the ask is cancelled; None: never
    outcome: Any = None  # CommandResult or the exception; None: unknown (cancelled)
    known: bool = False


def _as_tuple(event: Any) -> tuple[Any, ...]:
    match event:
        case AccountOpened(owner=owner):
            return ("opened", owner)
        case Deposited(amount=amount):
            return ("deposited", amount)
        case Withdrawn(amount=amount):
            return ("withdrawn", amount)
        case AccountClosed():
            return ("closed",)
    raise AssertionError(f"unexpected event {event!r}")


def _state(account: ModelAccount | tuple[str | None, int, bool]) -> AccountState:
    if isinstance(account, ModelAccount):
        owner, balance, closed = account.owner, account.balance, account.closed
    else:
        owner, balance, closed = account
    return AccountState(owner=owner, balance=balance, closed=closed)


# -- the schedule -------------------------------------------------------------------------


class Schedule:
    """One seeded run: rounds of asks against a real system and the model."""

    def __init__(self, seed: int, path: Path) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.path = path
        self.snapshot_every = self.rng.choice([None, 1, 3])
        self.max_live_actors = self.rng.choice([2, 100])
        self.model = {account: ModelAccount() for account in ACCOUNTS}
        self.stored: dict[str, Stored] = {}
        # Each id keeps one command per account it is sent to: a resend is the same
        # command; an id sent to another account is a reuse across streams.
        self.sent: dict[tuple[str, str], Any] = {}
        self.unknown: list[tuple[str, str]] = []  # (id, account) of cancelled asks
        self.next_id = 0
        self.figures = {"asks": 0, "cancelled": 0, "duplicates": 0, "refused": 0, "conflicts": 0}

    def _command(self, account: str) -> Any:
        rng = self.rng
        kind = rng.choices(["open", "deposit", "withdraw", "close"], [2, 4, 4, 1])[0]
        if kind == "open":
            return OpenAccount(account_id=account, owner=rng.choice(OWNERS))
        if kind == "close":
            return CloseAccount(account_id=account)
        amount = rng.choice([0, 1, 5, 10, 50, 100, 500])
        if kind == "deposit":
            return Deposit(account_id=account, amount=amount)
        return Withdraw(account_id=account, amount=amount)

    def _sends(self) -> list[Send]:
        rng = self.rng
        sends: list[Send] = []
        in_round: dict[str, str] = {}  # id -> its account: one account per id in a round
        cancellable: set[str] = set()  # ids of this round's cancellable asks: sent once
        for _ in range(rng.randint(1, 8)):
            account = rng.choice(ACCOUNTS)
            command = self._command(account)
            how = rng.choices(["none", "fresh", "resend", "unknown", "reuse"], [3, 3, 2, 2, 1])[0]
            command_id: str | None = None
            if how == "unknown" and self.unknown:
                command_id, account = self.unknown.pop(rng.randrange(len(self.unknown)))
            elif how in ("resend", "unknown", "reuse") and self.sent:
                command_id, account = rng.choice(list(self.sent))
                if how == "reuse":
                    used = {a for (i, a) in self.sent if i == command_id}
                    others = [a for a in ACCOUNTS if a not in used]
                    if others:
                        account = rng.choice(others)
                        command = self._command(account)
            elif how != "none":
                self.next_id += 1
                command_id = f"id-{self.next_id}"
            cancel: int | None = None
            if command_id is not None:
                command = self.sent.setdefault((command_id, account), command)
                if in_round.setdefault(command_id, account) != account:
                    continue
                if command_id in cancellable:
                    continue
                if rng.random() < 0.15 and not any(s.command_id == command_id for s in sends):
                    cancel = rng.choice([0, 1, 2, 4, 8])
                    cancellable.add(command_id)
            sends.append(Send(account, command, command_id, cancel))
        return sends

    async def _ask(self, system: ActorSystem, send: Send) -> None:
        accounts = system.aggregates(Account)
        with anyio.CancelScope() as scope:
            if send.cancel_after is not None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_after, scope, send.cancel_after)
                    await self._ask_into(accounts, send)
                    tg.cancel_scope.cancel()
            else:
                await self._ask_into(accounts, send)
        if not send.known:
            self.figures["cancelled"] += 1

    async def _ask_into(self, accounts: Any, send: Send) -> None:
        try:
            send.outcome = await accounts.ask(
                send.account, send.command, command_id=send.command_id
            )
        except Exception as exc:  # noqa: BLE001 - every outcome is compared with the model
            send.outcome = exc
        send.known = True

    async def round(self, system: ActorSystem) -> None:
        sends = self._sends()
        self.figures["asks"] += len(sends)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for send in sends:
                    tg.start_soon(self._ask, system, send)
        # A cancelled ask drops its reply, not its command: read each account's state
        # through its mailbox (answered after everything sent before it is settled)
        # before the store is asked what became of the cancelled ones.
        accounts = system.aggregates(Account)
        for account in {send.account for send in sends if not send.known}:
            await accounts.state(account, timeout=3)
        for send in sends:
            await self._check(system.store, send)
            if not send.known and send.command_id is not None:
                self.unknown.append((send.command_id, send.account))

    async def _check(self, store: EventStore, send: Send) -> None:
        """Decide `send` in the model (in the order sent) and compare the answer."""
        account = self.model[send.account]
        command_id = send.command_id
        stored = self.stored.get(command_id) if command_id is not None else None
        where = f"seed {self.seed}: {send!r}"
        if stored is not None:
            if stored.account != send.account:
                expected: Any = IdempotencyConflict
            else:
                expected = ("duplicate", stored.events, stored.version)
        else:
            decided = account.decide(send.command)
            if isinstance(decided, str) or not decided:
                expected = decided if isinstance(decided, str) else ("ok", [], account.version)
            else:
                applied = send.known
                if not send.known:
                    assert command_id is not None
                    found = await store.find_command(command_id)
                    applied = (
                        found is not None
                        and found.stream_id == f"account-{send.account}"
                        and found.first_version == account.version + 1
                    )
                if applied:
                    account.apply(decided)
                    if command_id is not None:
                        self.stored[command_id] = Stored(send.account, decided, account.version)
                expected = ("ok", decided, account.version)
        if not send.known:
            return
        outcome = send.outcome
        if isinstance(expected, str):
            assert type(outcome).__name__ == expected, f"{where}: {outcome!r}"
            self.figures["refused"] += 1
        elif expected is IdempotencyConflict:
            assert isinstance(outcome, IdempotencyConflict), f"{where}: {outcome!r}"
            self.figures["conflicts"] += 1
        else:
            kind, events, version = expected
            assert isinstance(outcome, CommandResult), f"{where}: {outcome!r}"
            got = [_as_tuple(event) for event in outcome.events]
            assert (outcome.duplicate, got, outcome.version) == (
                kind == "duplicate",
                events,
                version,
            ), where
            self.figures["duplicates"] += outcome.duplicate
            rows = await store.read_stream(
                f"account-{send.account}", from_version=version, to_version=version
            )
            assert outcome.position == (rows[0].position if rows else 0), where

    async def check_all(self, system: ActorSystem) -> None:
        accounts = system.aggregates(Account)
        store = system.store
        positions: list[int] = []
        for name, account in self.model.items():
            where = f"seed {self.seed}: account {name}"
            assert await accounts.state(name, timeout=3) == _state(account), where
            assert await accounts.state_at(name) == _state(account), where
            earlier = self.rng.randint(0, account.version)
            assert await accounts.state_at(name, version=earlier) == _state(
                account.states[earlier]
            ), where
            rows = await store.read_stream(f"account-{name}")
            assert [r.version for r in rows] == list(range(1, account.version + 1)), where
            assert [_as_tuple(r.event) for r in rows] == account.events, where
            positions += [r.position for r in rows]
        assert sorted(positions) == list(range(1, len(positions) + 1))
        assert await store.last_position() == len(positions)
        for command_id, stored in self.stored.items():
            found = await store.find_command(command_id)
            assert found is not None, command_id
            assert (found.stream_id, found.last_version) == (
                f"account-{stored.account}",
                stored.version,
            )

    async def run(self, rounds: int) -> None:
        rng = self.rng
        while rounds > 0:
            async with open_system(
                str(self.path),
                synchronous="NORMAL",
                max_live_actors=self.max_live_actors,
                idle_timeout=None,
            ) as system:
                system.aggregates(Account, snapshot_every=self.snapshot_every)
                while rounds > 0:
                    rounds -= 1
                    await self.round(system)
                    await self.check_all(system)
                    after = rng.choices(["go on", "passivate", "restart"], [5, 2, 1])[0]
                    if after == "passivate":
                        system.passivate_idle(older_than=0)
                    elif after == "restart":
                        break


async def _cancel_after(scope: anyio.CancelScope, checkpoints: int) -> None:
    for _ in range(checkpoints):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


async def test_pbt4_batches_answer_like_the_model(tmp_path: Path, report: Report) -> None:
    seeds = size(40, 1000)
    rounds = size(30, 60)
    totals: dict[str, int] = {}
    for seed in range(seeds):
        schedule = Schedule(seed, tmp_path / f"model-{seed}.db")
        await schedule.run(rounds)
        for key, value in schedule.figures.items():
            totals[key] = totals.get(key, 0) + value
    report.record("PBT-4", seeds=seeds, rounds=rounds, **totals)
    # The schedules reach what they are for: duplicates, refusals and cancellations.
    assert totals["duplicates"] > 0
    assert totals["refused"] > 0
    assert totals["cancelled"] > 0
    assert totals["conflicts"] > 0
