"""Riders: a command that reaches an actor while callers run it inline with an append in
flight is decided on the state that append leaves and appended chained to it (committed
only if it committed as decided), instead of waiting in the mailbox for it to settle.

The schedules here are deterministic: tasks started together run in order until they
wait, and the store's writer, woken by the first append, runs after all of them."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import ActorSystem, CommandResult, open_system
from demo.bank import Account, Deposit, InsufficientFunds, OpenAccount, Withdraw
from store import EventStore, EventTooLarge
from tests.actors.domain import Counter, Increment


async def _opened(system: ActorSystem, account: str = "acc", cents: int = 100) -> None:
    accounts = system.aggregates(Account)
    await accounts.ask(account, OpenAccount(account, "ann"))
    await accounts.ask(account, Deposit(account, cents))


async def _together(system: ActorSystem, commands: list[Any]) -> list[Any]:
    """Send `commands` to account "acc" from one task each, started in order; each
    one's result or error, in that order."""
    accounts = system.aggregates(Account)
    outcomes: list[Any] = [None] * len(commands)

    async def send(index: int, command: Any) -> None:
        try:
            outcomes[index] = await accounts.ask("acc", command)
        except Exception as exc:  # noqa: BLE001 - the test looks at each outcome
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index, command in enumerate(commands):
            tg.start_soon(send, index, command)
    return outcomes


async def _balances(store: EventStore, stream_id: str = "account-acc") -> list[int]:
    """The amounts of the stream's deposits and withdrawals (withdrawals negative)."""
    amounts = []
    for recorded in await store.read_stream(stream_id):
        event = recorded.event
        name = type(event).__name__
        if name == "Deposited":
            amounts.append(event.amount)
        elif name == "Withdrawn":
            amounts.append(-event.amount)
    return amounts


async def test_commands_to_a_busy_actor_ride_on_its_append_in_flight(
    durable_target: str,
) -> None:
    async with open_system(durable_target) as system:
        await _opened(system)
        before = system.store.statistics().appends
        outcomes = await _together(system, [Deposit("acc", n) for n in range(1, 11)])
        assert all(isinstance(o, CommandResult) for o in outcomes), outcomes
        # the order they were sent in, each right after the one before it
        assert [o.version for o in outcomes] == list(range(3, 13))
        assert [o.position for o in outcomes] == sorted(o.position for o in outcomes)
        stats = system.statistics()
        # the first ran inline; the other nine rode on it, one append each, and the
        # actor never needed a task of its own
        assert stats.rides == 9
        assert system.store.statistics().appends - before == 10
        assert stats.actor_tasks == 0
        assert await _balances(system.store) == [100, *range(1, 11)]
        assert (await system.aggregates(Account).state("acc")).balance == 155


async def test_a_rider_may_withdraw_what_the_append_before_it_deposits(
    durable_target: str,
) -> None:
    """Decided on the state the append in flight leaves: 100 + 500 covers 550."""
    async with open_system(durable_target) as system:
        await _opened(system)
        deposit, withdrawal = await _together(system, [Deposit("acc", 500), Withdraw("acc", 550)])
        assert (deposit.version, withdrawal.version) == (3, 4)
        assert system.statistics().rides == 1
        assert (await system.aggregates(Account).state("acc")).balance == 50


async def test_a_refusal_does_not_ride_and_is_answered_on_committed_state(
    durable_target: str,
) -> None:
    async with open_system(durable_target) as system:
        await _opened(system)
        deposit, withdrawal, after = await _together(
            system, [Deposit("acc", 5), Withdraw("acc", 1_000), Deposit("acc", 7)]
        )
        assert isinstance(withdrawal, InsufficientFunds)
        # the refusal went to the mailbox, so the deposit behind it queued too
        assert (deposit.version, after.version) == (3, 4)
        assert system.statistics().rides == 0
        assert (await system.aggregates(Account).state("acc")).balance == 112


@pytest.mark.parametrize("riders", [1, 3])
async def test_riders_behind_an_append_that_lost_a_race_are_decided_again_in_order(
    durable_target: str, riders: int
) -> None:
    """Another process deposits 1,000 behind A's back: the first append conflicts, the
    riders chained to it are not written (whatever their expected versions), and all are
    decided again on the stream's latest state, in the order they were sent. (With
    `decide_in_store`, SQLite's writer decides them again itself instead:
    tests/actors/test_decide_in_store.py.)"""
    async with (
        open_system(durable_target, follow=False, decide_in_store=False) as a,
        open_system(durable_target, follow=False) as b,
    ):
        await _opened(a)
        await b.aggregates(Account).ask("acc", Deposit("acc", 1_000))
        amounts = list(range(1, riders + 2))
        outcomes = await _together(a, [Deposit("acc", n) for n in amounts])
        assert all(isinstance(o, CommandResult) for o in outcomes), outcomes
        assert [o.version for o in outcomes] == list(range(4, 4 + len(amounts)))
        stats = a.statistics()
        assert (stats.rides, stats.conflicts) == (riders, 1)
        assert await _balances(a.store) == [100, 1_000, *amounts]
        assert (await a.aggregates(Account).state("acc")).balance == 1_100 + sum(amounts)


async def test_a_rider_cancelled_before_the_writer_took_it_withdraws_its_append(
    durable_target: str,
) -> None:
    """B rides on A and C on B; B's caller gives up before the writer ran. A commits, B
    is never written, C (chained to B) is decided again on what committed; the actor
    reloads before serving it, since a cancelled append's outcome is unknown to it."""
    async with open_system(durable_target) as system:
        await _opened(system)
        accounts = system.aggregates(Account)
        results: dict[str, Any] = {}

        async def send(name: str, cents: int) -> None:
            results[name] = await accounts.ask("acc", Deposit("acc", cents))

        b_scope = anyio.CancelScope()

        async def b() -> None:
            with b_scope:
                await send("b", 2)

        async def c() -> None:
            b_scope.cancel()  # B waits for its append's answer, which the writer has not
            await send("c", 4)  # taken yet: the cancellation withdraws it

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "a", 1)
            tg.start_soon(b)
            tg.start_soon(c)
        assert "b" not in results
        assert (results["a"].version, results["c"].version) == (3, 4)
        assert system.statistics().rides == 2
        assert await _balances(system.store) == [100, 1, 4]
        assert (await accounts.state("acc")).balance == 105


async def test_an_append_the_store_refuses_fails_its_command_alone(durable_target: str) -> None:
    """An event too large is refused when queued, for the caller running inline and for
    a rider alike: that caller gets the store's error, nothing of it is written, and the
    commands around it are applied (the rider after it rides on the one before)."""
    big = "x" * 600
    async with open_system(durable_target, max_event_bytes=512) as system:
        counters = system.aggregates(Counter)
        await counters.ask("c", Increment(by=1))
        outcomes: list[Any] = [None] * 4

        async def send(index: int, command: Increment) -> None:
            try:
                outcomes[index] = await counters.ask("c", command)
            except Exception as exc:  # noqa: BLE001 - the test looks at each outcome
                outcomes[index] = exc

        async with anyio.create_task_group() as tg:
            for index, command in enumerate(
                [
                    Increment(by=2, tag=big),
                    Increment(by=3),
                    Increment(by=4, tag=big),
                    Increment(by=5),
                ]
            ):
                tg.start_soon(send, index, command)
        assert isinstance(outcomes[0], EventTooLarge)
        assert isinstance(outcomes[2], EventTooLarge)
        assert (outcomes[1].version, outcomes[3].version) == (2, 3)
        assert system.statistics().rides == 1
        state = await counters.state("c")
        assert state.value == 9
        assert [r.event.by for r in await system.store.read_stream("counter-c")] == [1, 3, 5]
