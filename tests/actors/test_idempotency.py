"""Command ids (exactly once), cancellation mid-ask (CAN-1) and graceful shutdown (SHD-1, SHD-2)."""

from __future__ import annotations

from collections import Counter as Tally
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from actors import ActorSystem, AggregateRouter, ShuttingDown, open_system
from store import IdempotencyConflict, open_store
from tests.actors.domain import (
    Account,
    Counter,
    CounterCommand,
    CounterEvent,
    CounterState,
    Deposit,
    Increment,
    Noop,
    OpenAccount,
    Withdraw,
)
from tests.actors.support import CountingStore, GatedStore, WithheldReplyStore


async def test_a_resent_command_id_returns_the_first_result_without_deciding_again(
    store_path: str,
) -> None:
    async with open_system(store_path) as system:
        counters = system.aggregates(Counter)
        first = await counters.ask("i", Increment(by=3), command_id="cmd-1")
        again = await counters.ask("i", Increment(by=3), command_id="cmd-1")
        assert (again.events, again.version, again.position) == (
            first.events,
            first.version,
            first.position,
        )
        assert (first.duplicate, again.duplicate) == (False, True)
        system.passivate_idle(older_than=0)  # forget the actor's memory of it
        from_store = await counters.ask("i", Increment(by=3), command_id="cmd-1")
        assert from_store == again
        assert (await counters.state("i")).value == 3
        assert await system.store.stream_version("counter-i") == 1


async def test_the_same_command_id_twice_in_one_batch_is_applied_once() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)
            results = []

            async def send(command_id: str) -> None:
                results.append(await counters.ask("d", Increment(by=1), command_id=command_id))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "warm")
                await gated.entered.wait()
                for _ in range(3):
                    tg.start_soon(send, "same")
                tg.start_soon(send, "other")
                await anyio.wait_all_tasks_blocked()
                gated.gate.set()
            same = [r for r in results if r.version == 2]
            assert len(same) == 3
            assert sum(not r.duplicate for r in same) == 1
            assert (await counters.state("d")).value == 3
            assert await inner.stream_version("counter-d") == 3


async def test_a_command_id_reused_on_another_aggregate_is_a_conflict() -> None:
    async with open_system(":memory:") as system:
        counters = system.aggregates(Counter)
        await counters.ask("one", Increment(by=1), command_id="shared")
        with pytest.raises(IdempotencyConflict):
            await counters.ask("two", Increment(by=1), command_id="shared")
        assert await system.store.stream_version("counter-two") == 0


async def test_a_command_id_reused_for_another_command_is_a_conflict(store_path: str) -> None:
    async with open_system(store_path) as system:
        counters = system.aggregates(Counter)
        await counters.ask("c", Increment(by=1), command_id="id-1")
        # The actor remembers the command behind each recent command id.
        with pytest.raises(IdempotencyConflict, match="'id-1'"):
            await counters.ask("c", Increment(by=2), command_id="id-1")
        assert (await counters.ask("c", Increment(by=1), command_id="id-1")).duplicate
        # Once it forgot the id, the store knows only the events: a command deciding
        # other events under a known id gets the first result (a resend may decide
        # differently from a changed state, so the store cannot tell the two apart).
        system.passivate_idle(older_than=0)
        late = await counters.ask("c", Increment(by=2), command_id="id-1")
        assert (late.duplicate, late.version) == (True, 1)
        assert (await counters.state("c")).value == 1


async def test_another_command_under_a_command_id_in_the_same_batch_is_a_conflict() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)
            outcomes: list[object] = []

            async def send(command_id: str, by: int) -> None:
                try:
                    outcomes.append(
                        (await counters.ask("d", Increment(by=by), command_id=command_id)).version
                    )
                except IdempotencyConflict as conflict:
                    outcomes.append(conflict)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "warm", 1)
                await gated.entered.wait()
                tg.start_soon(send, "same", 1)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(send, "same", 5)
                await anyio.wait_all_tasks_blocked()
                gated.gate.set()
            assert sorted(o for o in outcomes if isinstance(o, int)) == [1, 2]
            assert sum(isinstance(o, IdempotencyConflict) for o in outcomes) == 1
            assert (await counters.state("d")).value == 2


async def test_a_cancelled_ask_applies_its_command_whole_or_not_at_all(store_path: str) -> None:
    commands = 300
    async with open_system(store_path, synchronous="NORMAL") as system:
        counters = system.aggregates(Counter)
        completed: set[str] = set()

        async def ask(command_id: str, aggregate_id: str, scope: anyio.CancelScope) -> None:
            with scope:
                await counters.ask(
                    aggregate_id, Increment(by=1, tag=command_id), command_id=command_id
                )
                completed.add(command_id)

        async def cancel_after(scope: anyio.CancelScope, checkpoints: int) -> None:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(commands):
                    scope = anyio.CancelScope()
                    tg.start_soon(ask, f"c{i}", f"agg{i % 7}", scope)
                    if i % 4:  # one in four is left alone
                        tg.start_soon(cancel_after, scope, i % 23)
            # some were cut before the actor took them, some after
            applied_before_resend = await _applied(counters)
            assert max(applied_before_resend.values(), default=0) <= 1
            assert completed <= set(applied_before_resend)
            assert {f"c{i}" for i in range(0, commands, 4)} <= completed
            assert len(completed) < commands
            for i in range(commands):
                await counters.ask(f"agg{i % 7}", Increment(by=1, tag=f"c{i}"), command_id=f"c{i}")
        applied = await _applied(counters)
        assert applied == Tally({f"c{i}": 1 for i in range(commands)})
        for i in range(7):
            state = await counters.state(f"agg{i}")
            assert state.count == await system.store.stream_version(f"counter-agg{i}")


async def _applied(
    counters: AggregateRouter[CounterState, CounterCommand, CounterEvent],
) -> Tally[str]:
    tally: Tally[str] = Tally()
    for i in range(7):
        tally.update(e.event.tag for e in await counters.history(f"agg{i}"))
    return tally


async def test_shutdown_answers_or_refuses_every_command_and_loses_no_ack(tmp_path: Path) -> None:
    path = tmp_path / "shutdown.db"
    acked: list[tuple[str, int]] = []
    refused = 0
    enough = anyio.Event()

    async def client(
        counters: AggregateRouter[CounterState, CounterCommand, CounterEvent], c: int
    ) -> None:
        nonlocal refused
        j = 0
        while True:
            tag = f"{c}:{j}"
            try:
                result = await counters.ask(f"s{c % 8}", Increment(by=1, tag=tag))
            except ShuttingDown:
                refused += 1
                return
            acked.append((tag, result.version))
            if len(acked) >= 500:
                enough.set()
            j += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as clients, open_system(path) as system:
            counters = system.aggregates(Counter)
            for c in range(64):
                clients.start_soon(client, counters, c)
            await enough.wait()
            # the system closed while the clients were still sending
    assert refused == 64  # each client ends on a refusal, never on a hang or a loss
    async with open_system(path) as reopened:
        counters = reopened.aggregates(Counter)
        stored = {e.event.tag for i in range(8) for e in await counters.history(f"s{i}")}
    assert {tag for tag, _ in acked} <= stored
    assert len(stored) == len(acked)  # nothing applied that was not acknowledged


async def test_shutdown_that_runs_out_of_grace_refuses_what_is_left() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        outcomes: list[str] = []
        async with open_system(gated.as_store(), grace=0.05) as system:
            counters = system.aggregates(Counter)

            async def send(i: int) -> None:
                try:
                    await counters.ask("stuck", Increment(by=1, tag=str(i)))
                    outcomes.append("ok")
                except ShuttingDown:
                    outcomes.append("refused")

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, 0)
                await gated.entered.wait()
                for i in range(1, 6):
                    tg.start_soon(send, i)
                await anyio.wait_all_tasks_blocked()
                await system.shutdown(grace=0)  # the append is stuck
                with pytest.raises(ShuttingDown):
                    await counters.ask("stuck", Noop())
                gated.gate.set()  # the stuck append completes; the queue drains
            assert system.statistics().queued == 0
        assert len(outcomes) == 6
        assert outcomes.count("ok") == await inner.stream_version("counter-stuck")


async def test_an_actor_cancelled_at_shutdown_mid_append_still_answers_what_committed() -> None:
    """The system's exit cancels the actor task while its append committed but the
    reply is held: the append is shielded, so the caller gets the result, not a
    refusal of a command that was applied."""
    async with open_store(":memory:") as inner:
        withheld = WithheldReplyStore(inner)
        outcomes: list[str] = []
        close = anyio.Event()

        async def run_system(*, task_status: anyio.abc.TaskStatus[ActorSystem]) -> None:
            async with open_system(withheld.as_store(), grace=0) as system:
                task_status.started(system)
                await close.wait()
            # leaving open_system cancels the actor task mid-append

        async def send(counters: AggregateRouter[Any, Any, Any], tag: str) -> None:
            try:
                await counters.ask("s", Increment(by=1, tag=tag))
                outcomes.append("ok")
            except ShuttingDown:
                outcomes.append("refused")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                system = await tg.start(run_system)
                counters = system.aggregates(Counter)
                await counters.ask("s", Increment(by=1))  # loaded and idle
                withheld.hold = True
                tg.start_soon(send, counters, "inline")  # runs on its caller's task, held
                await withheld.committed.wait()
                tg.start_soon(send, counters, "queued")  # waits in the mailbox
                await anyio.wait_all_tasks_blocked()
                first, withheld.gate = withheld.gate, anyio.Event()
                withheld.committed = anyio.Event()
                first.set()  # the actor task now appends the queued one, held
                await withheld.committed.wait()
                close.set()
                while not system.task_group.cancel_scope.cancel_called:
                    await anyio.wait_all_tasks_blocked()
                await anyio.wait_all_tasks_blocked()  # the cancellation delivered
                withheld.gate.set()
        assert outcomes == ["ok", "ok"]
        assert await inner.stream_version("counter-s") == 3


async def test_a_caller_cancelled_after_its_command_committed_leaves_the_actor_consistent() -> None:
    async with open_store(":memory:") as inner:
        withheld = WithheldReplyStore(inner)
        async with open_system(withheld.as_store()) as system:
            counters = system.aggregates(Counter)
            await counters.ask("w", Increment(by=1))  # the actor is loaded and idle
            withheld.hold = True
            async with anyio.create_task_group() as tg:
                # runs on the caller's task (the actor is idle); committed, then cancelled
                tg.start_soon(counters.ask, "w", Increment(by=10))
                await withheld.committed.wait()
                tg.cancel_scope.cancel()
            withheld.hold = False
            # the actor learned nothing of the outcome: it reloads before serving on
            assert await counters.state("w") == CounterState(value=11, count=2)
            assert (await counters.ask("w", Increment(by=1))).version == 3


async def test_shutdown_waits_for_a_command_running_inline_and_drains() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        gated.gate.set()
        async with open_system(gated.as_store(), grace=30) as system:
            counters = system.aggregates(Counter)
            await counters.ask("in", Increment(by=1))  # loaded and idle
            gated.gate = anyio.Event()
            gated.entered = anyio.Event()
            drained: list[bool] = []
            results: list[int] = []

            async def ask() -> None:
                results.append((await counters.ask("in", Increment(by=1))).version)

            async def shutdown() -> None:
                drained.append(await system.shutdown())

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask)  # runs inline on this task, blocked in the store
                    await gated.entered.wait()
                    tg.start_soon(shutdown)
                    await anyio.wait_all_tasks_blocked()
                    assert not drained
                    gated.gate.set()
            assert (drained, results) == ([True], [2])


async def test_a_resend_after_a_restart_is_answered_from_the_store_not_decided_anew(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bank.db"
    async with open_system(path) as system:
        accounts = system.aggregates(Account)
        await accounts.ask("a", OpenAccount(owner="ada"))
        await accounts.ask("a", Deposit(amount=10), command_id="dep-1")
        first = await accounts.ask("a", Withdraw(amount=10), command_id="wd-1")
    async with open_system(path) as system:  # fresh actors: nothing answered from memory
        accounts = system.aggregates(Account)
        # decide would now refuse it (the balance is 0): the first result comes back
        again = await accounts.ask("a", Withdraw(amount=10), command_id="wd-1")
        assert (again.events, again.version, again.position) == (
            first.events,
            first.version,
            first.position,
        )
        assert again.duplicate
        # decide would accept it again: the store answers with the first result
        deposit = await accounts.ask("a", Deposit(amount=10), command_id="dep-1")
        assert deposit.duplicate
        assert deposit.version == 2
        assert (await accounts.state("a")).balance == 0
        assert await system.store.stream_version("account-a") == 3
        # a new id is decided as usual, on a state that counted nothing twice
        assert (await accounts.ask("a", Deposit(amount=4), command_id="dep-2")).version == 4
        assert (await accounts.state("a")).balance == 4


async def test_after_an_unknown_outcome_the_actor_reads_only_the_events_since_its_version() -> None:
    async with open_store(":memory:") as inner:
        withheld = WithheldReplyStore(inner)
        counting = CountingStore(withheld.as_store())
        async with open_system(counting.as_store(), load_page_size=10) as system:
            counters = system.aggregates(Counter)
            for _ in range(50):
                await counters.ask("long", Increment(by=1))  # loaded, idle, at version 50
            counting.reads.clear()
            withheld.hold = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(counters.ask, "long", Increment(by=10))
                await withheld.committed.wait()
                tg.cancel_scope.cancel()  # committed, but the actor never heard it
            withheld.hold = False
            assert await counters.state("long") == CounterState(value=60, count=51)
            # the reload caught up from version 51: it did not replay the 50 events before
            assert counting.reads == [("counter-long", 51)]
            assert (await counters.ask("long", Increment(by=1))).version == 52
