"""Riders against a model, over seeded schedules: waves of concurrent deposits and
withdrawals on a few accounts (so most commands ride on an append in flight), some
callers cancelled at random moments, and another system on the same store depositing
behind the actors' backs (so appends conflict and chains break).

The model is the store's own log replayed by plain Python: every acknowledged command
must be there, at the version it was answered with, with its amount; nothing may be
there that no caller sent; no balance may ever go below zero; a refusal must be
explained by the balance at some moment while it was in flight; and the actors' states
must equal the replay at the end."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors import ActorSystem, CommandResult, open_system
from demo.bank import Account, Deposit, InsufficientFunds, OpenAccount, Withdraw

ACCOUNTS = ("a", "b", "c")
START = 1_000


@dataclass
class Sent:
    account: str
    command: Deposit | Withdraw
    outcome: Any = None  # a CommandResult, an exception, or None: cancelled


async def _wave(
    a: ActorSystem,
    b: ActorSystem,
    rng: random.Random,
    sent: list[Sent],
    foreign: list[Sent],
    *,
    mixed: bool = False,
) -> None:
    """One wave: several commands at once through `a` (`mixed`: through `a` or `b` at
    random), some sent a random number of turns of the loop later (often while the
    batch with the others is being written, so they ride into the next one), a few
    cancelled after a random number of turns, and now and then a deposit through `b`."""
    routers = a.aggregates(Account), b.aggregates(Account)

    async def send(item: Sent, router: Any, cancel_after: int | None, start_after: int = 0) -> None:
        for _ in range(start_after):  # sent while the batch before it is being written
            await anyio.lowlevel.checkpoint()
        with anyio.CancelScope() as scope:
            if cancel_after is not None:

                async def cancel() -> None:
                    for _ in range(cancel_after):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                tg.start_soon(cancel)
            try:
                item.outcome = await router.ask(item.account, item.command)
            except Exception as exc:  # noqa: BLE001 - the model looks at every outcome
                item.outcome = exc

    async with anyio.create_task_group() as tg:
        for _ in range(rng.randint(2, 24)):
            account = rng.choice(ACCOUNTS)
            amount = rng.randint(1, 700)
            command: Deposit | Withdraw = (
                Withdraw(account, amount) if rng.random() < 0.45 else Deposit(account, amount)
            )
            item = Sent(account, command)
            sent.append(item)
            cancel_after = rng.randint(0, 6) if rng.random() < 0.08 else None
            router = routers[1] if mixed and rng.random() < 0.5 else routers[0]
            start_after = rng.randint(1, 40) if rng.random() < 0.3 else 0
            tg.start_soon(send, item, router, cancel_after, start_after)
            if rng.random() < 0.05:
                target = rng.choice(ACCOUNTS)
                other = Sent(target, Deposit(target, rng.randint(1, 50)))
                foreign.append(other)
                tg.start_soon(send, other, routers[1], None)


def _amount(event: Any) -> int:
    name = type(event).__name__
    if name == "Deposited":
        return int(event.amount)
    if name == "Withdrawn":
        return -int(event.amount)
    return 0


@pytest.mark.parametrize("seed", range(6))
async def test_riders_agree_with_a_replay_of_the_store(durable_target: str, seed: int) -> None:
    await _check(durable_target, seed)


@pytest.mark.parametrize("seed", range(3))
async def test_riders_agree_with_a_replay_with_the_writer_process(
    tmp_path: Path, seed: int
) -> None:
    """The writer process keeps two batches in flight: a rider whose append waits for
    its predecessor's batch to be answered is held back, not sent with it."""
    await _check(str(tmp_path / "riders.db"), seed, writer="process")


@pytest.mark.parametrize("decide_in_store", [True, False])
@pytest.mark.parametrize("seed", range(4))
async def test_two_systems_deciding_on_the_same_accounts_agree_with_a_replay(
    durable_target: str, seed: int, decide_in_store: bool
) -> None:
    """Both systems send whole waves: each decides on states the other keeps passing,
    so their appends are decided again in the store (on SQLite in the writer's
    transaction; on PostgreSQL before the batch is sent, when the other's notifications
    came in time, else after the batch refused them; a withdrawal refused there
    conflicts and is refused by its actor); with `decide_in_store` off they conflict
    and are decided again."""
    stats = await _check(
        durable_target,
        seed,
        mixed=True,
        b_options={"decide_in_store": decide_in_store},
        decide_in_store=decide_in_store,
    )
    redecisions, conflicts = stats
    if decide_in_store:
        assert redecisions > 0  # the schedules do exercise it
    else:
        assert (redecisions, conflicts > 0) == (0, True)


async def _check(
    target: str,
    seed: int,
    *,
    mixed: bool = False,
    b_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[int, int]:
    """Run 25 waves and check the store against the model; the systems' redecisions
    and conflicts, summed."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    foreign: list[Sent] = []
    async with (
        open_system(target, follow=seed % 2 == 0, **options) as a,
        open_system(target, follow=False, **(b_options or {})) as b,
    ):
        accounts = a.aggregates(Account)
        for account in ACCOUNTS:
            await accounts.ask(account, OpenAccount(account, "ann"))
            await accounts.ask(account, Deposit(account, START))
        for _ in range(25):
            await _wave(a, b, rng, sent, foreign, mixed=mixed)
        assert a.statistics().rides > 0  # the schedules do exercise riding
        both = a.statistics(), b.statistics()
        counted = sum(s.redecisions for s in both), sum(s.conflicts for s in both)
        logs = {account: await a.store.read_stream(f"account-{account}") for account in ACCOUNTS}
        states = {account: await accounts.state(account) for account in ACCOUNTS}

    for account in ACCOUNTS:
        log = logs[account]
        assert [r.version for r in log] == list(range(1, len(log) + 1))  # contiguous
        balance, balances = 0, []  # the balance after each version
        for recorded in log:
            balance += _amount(recorded.event)
            assert balance >= 0, (account, recorded.version)
            balances.append(balance)
        assert states[account].balance == balance
        mine = [s for s in sent + foreign if s.account == account]
        acked = [s for s in mine if isinstance(s.outcome, CommandResult)]
        # every acknowledged command is stored at its version, with its amount
        for item in acked:
            (event,) = item.outcome.events
            stored = log[item.outcome.version - 1]
            assert stored.position == item.outcome.position
            assert _amount(stored.event) == _amount(event)
            expected = item.command.amount
            assert _amount(event) == (-expected if isinstance(item.command, Withdraw) else expected)
        assert len({item.outcome.version for item in acked}) == len(acked)
        # nothing stored that nobody sent: beyond the setup, the stored events are the
        # acknowledged ones plus at most the cancelled ones (of unknown outcome)
        unknown = [s for s in mine if s.outcome is None]
        stored_after_setup = len(log) - 2
        assert len(acked) <= stored_after_setup <= len(acked) + len(unknown)
        # a refusal was true of some balance the account had
        for item in mine:
            if isinstance(item.outcome, InsufficientFunds):
                assert any(b < item.command.amount for b in balances), item
        # nothing else went wrong
        for item in mine:
            assert item.outcome is None or isinstance(
                item.outcome, CommandResult | InsufficientFunds
            ), item.outcome
    return counted
