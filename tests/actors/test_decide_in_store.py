"""Two actor systems on one store, as two processes would be: a command whose append
another process passed is decided again inside the store's transaction, on the events
it missed (`decide_in_store`, SQLite's thread writer), rather than refused there and
decided again after a read. On PostgreSQL it conflicts and is decided again as before;
the answers are the same either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from actors import ActorSystem, open_system
from demo.bank import Account, Deposit, Deposited, InsufficientFunds, Withdraw
from tests.actors.test_riders import _together
from tests.actors.test_shared_store import opened_at_100


def _in_store(target: str) -> bool:
    return not target.startswith("postgresql")


@asynccontextmanager
async def _two(target: str, **options: Any) -> AsyncIterator[tuple[ActorSystem, ActorSystem]]:
    """Two systems on `target` (`a` with `options`) that do not follow each other, as
    two processes would be, with account `acc` opened at 100 through `a`."""
    async with (
        open_system(target, follow=False, **options) as a,
        open_system(target, follow=False) as b,
    ):
        await opened_at_100(a)
        yield a, b


def _retried(system: ActorSystem) -> tuple[int, int]:
    stats = system.statistics()
    return stats.redecisions, stats.conflicts


async def test_a_deposit_is_decided_again_on_another_process_deposit(
    durable_target: str,
) -> None:
    async with _two(durable_target) as (a, b):
        before = _retried(a)
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        result = await a.aggregates(Account).ask("acc", Deposit("acc", 5))
        assert (result.version, result.events) == (4, (Deposited(5),))
        assert (await a.aggregates(Account).state("acc")).balance == 1105
        after = _retried(a)
        assert (after[0] - before[0], after[1] - before[1]) == (
            (1, 0) if _in_store(durable_target) else (0, 1)
        )
        stored = [r.event for r in await a.store.read_stream("account-acc")]
        assert stored[-2:] == [Deposited(1000), Deposited(5)]


async def test_a_withdrawal_the_missed_events_refuse_is_refused(durable_target: str) -> None:
    """Decided again in the store, the withdrawal is refused there: it is left to
    conflict, and the actor refuses it on the state it reads."""
    async with _two(durable_target) as (a, b):
        await b.aggregates(Account).ask("acc", Withdraw("acc", 100))
        with pytest.raises(InsufficientFunds):
            await a.aggregates(Account).ask("acc", Withdraw("acc", 50))
        assert _retried(a) == (0, 1)
        assert await a.store.stream_version("account-acc") == 3
        assert (await a.aggregates(Account).state("acc")).balance == 0


async def test_commands_riding_on_an_append_decided_again_are_decided_again(
    durable_target: str,
) -> None:
    """A command run inline and the ones riding on its append, all decided on a state
    another process passed: in the store's batch, the first is decided again on the
    missed deposit and each rider on what the one before it left."""
    async with _two(durable_target) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        outcomes = await _together(a, [Deposit("acc", n) for n in range(1, 5)])
        assert sorted(o.version for o in outcomes) == [4, 5, 6, 7]
        assert (await a.aggregates(Account).state("acc")).balance == 1110
        redecided, conflicts = _retried(a)
        assert a.statistics().rides >= 1
        if _in_store(durable_target):
            assert (redecided, conflicts) == (len(outcomes), 0)
        else:
            assert (redecided, conflicts) == (0, 1)


async def test_a_batch_from_the_mailbox_is_decided_again_as_one_append(tmp_path: str) -> None:
    """Commands told (queued in the mailbox) are decided as one batch on the actor's
    task, one append for all: decided again together, each answered with its own."""
    path = f"{tmp_path}/events.db"
    async with _two(path) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        accounts = a.aggregates(Account)
        for amount in (1, 2, 3):
            accounts.tell("acc", Deposit("acc", amount))
        with anyio.fail_after(10):
            state = await accounts.state("acc")
        assert state.balance == 1106
        assert _retried(a) == (1, 0)
        stored = [r.event for r in await a.store.read_stream("account-acc")]
        assert stored[-3:] == [Deposited(n) for n in (1, 2, 3)]


async def test_off_it_conflicts_and_decides_again_after_a_read(tmp_path: str) -> None:
    path = f"{tmp_path}/events.db"
    async with _two(path, decide_in_store=False) as (a, b):
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        result = await a.aggregates(Account).ask("acc", Deposit("acc", 5))
        assert result.version == 4
        assert _retried(a) == (0, 1)
