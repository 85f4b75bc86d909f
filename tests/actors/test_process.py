"""Process managers: events in, commands out, resumable, exactly-once in effect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from actors import (
    ActorSystem,
    Dispatch,
    InvalidOption,
    ProcessManager,
    ProcessManagerOptions,
    Rejected,
    ShuttingDown,
    open_system,
)
from bus import ConsistencyTimeout
from store import RecordedEvent
from tests.actors.domain import Account, AccountNotOpen, Deposit, Deposited, OpenAccount, Withdraw


class Mirror(ProcessManager):
    """Copies every deposit into `src-<n>` to account `mirror-<n>`; refunds the source
    (a withdrawal) when the mirror refuses; chokes on deposits of 13."""

    name = "mirror"
    event_types = (Deposited,)
    stream_prefix = "account-src-"

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        event = recorded.event
        assert isinstance(event, Deposited)
        if event.amount == 13:
            raise ValueError("13 is unlucky")
        target = "mirror-" + recorded.stream_id.removeprefix("account-src-")
        return [Dispatch(Account, target, Deposit(amount=event.amount))]

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        source = recorded.stream_id.removeprefix("account-")
        assert isinstance(dispatch.command, Deposit)
        return [Dispatch(Account, source, Withdraw(amount=dispatch.command.amount))]


async def _balance(system: ActorSystem, aggregate_id: str) -> int:
    return (await system.aggregates(Account).state(aggregate_id)).balance


async def _open(system: ActorSystem, *ids: str) -> None:
    accounts = system.aggregates(Account)
    for aggregate_id in ids:
        await accounts.ask(aggregate_id, OpenAccount(owner=aggregate_id))


async def _deposit(system: ActorSystem, aggregate_id: str, *amounts: int) -> int:
    accounts = system.aggregates(Account)
    position = 0
    for amount in amounts:
        position = (await accounts.ask(aggregate_id, Deposit(amount=amount))).position
    return position


async def test_events_become_commands_for_other_aggregates() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            await _open(system, "src-1", "mirror-1")
            manager = await system.run_process_manager(Mirror())
            last = await _deposit(system, "src-1", 5, 7)
            await manager.wait_for(last)
            assert await _balance(system, "mirror-1") == 12
            stats = manager.statistics()
            assert (stats.handled, stats.sent, stats.parked) == (2, 2, 0)
            assert stats.position >= last


async def test_a_restart_resumes_after_the_checkpoint_and_resent_commands_apply_once(
    durable_target: str,
) -> None:
    path = durable_target
    with anyio.fail_after(30):
        async with open_system(path) as system:
            await _open(system, "src-1", "mirror-1")
            manager = await system.run_process_manager(Mirror())
            await manager.wait_for(await _deposit(system, "src-1", 1, 2, 3))
        async with open_system(path) as system:
            # Deposits made while no manager runs are picked up from the checkpoint.
            last = await _deposit(system, "src-1", 10, 20)
            manager = await system.run_process_manager(Mirror())
            await manager.wait_for(last)
            assert await _balance(system, "mirror-1") == 36
            assert manager.statistics().handled == 2
        async with open_system(path) as system:
            # A lost checkpoint makes every event be handled again: each command it sends
            # carries the id it had the first time, so none is applied twice.
            await system.store.save_checkpoint("process:mirror", 0)
            manager = await system.run_process_manager(Mirror())
            await manager.wait_for(await system.store.last_position())
            assert manager.statistics().handled == 5
            assert await _balance(system, "mirror-1") == 36
            history = await system.aggregates(Account).history("mirror-1")
            assert [r.event for r in history[1:]] == [
                Deposited(amount=a) for a in (1, 2, 3, 10, 20)
            ]


async def test_a_refused_step_is_compensated() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            await _open(system, "src-2")  # mirror-2 is never opened: deposits to it fail
            manager = await system.run_process_manager(Mirror())
            last = await _deposit(system, "src-2", 40)
            await manager.wait_for(last)
            assert await _balance(system, "src-2") == 0
            stats = manager.statistics()
            assert (stats.rejected, stats.compensations, stats.parked) == (1, 1, 0)
            with pytest.raises(AccountNotOpen):
                await system.aggregates(Account).ask("mirror-2", Deposit(amount=1))


async def test_an_event_react_cannot_handle_is_parked_and_the_rest_go_on() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            await _open(system, "src-3", "mirror-3")
            manager = await system.run_process_manager(Mirror())
            poisoned = await _deposit(system, "src-3", 13)
            last = await _deposit(system, "src-3", 2)
            await manager.wait_for(last)
            assert await _balance(system, "mirror-3") == 2
            (parked,) = manager.dead_letters()
            assert (parked.position, parked.stream_id, parked.command_id) == (
                poisoned,
                "account-src-3",
                None,
            )
            assert "13 is unlucky" in parked.error


class DoubleMirror(Mirror):
    """Two commands per event: the amount, then a thousand times it."""

    name = "double-mirror"

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        (first,) = super().react(recorded)
        assert isinstance(first.command, Deposit)
        return [first, Dispatch(Account, first.aggregate_id, Deposit(first.command.amount * 1000))]


async def test_events_of_one_stream_are_handled_in_their_order() -> None:
    amounts = [a for a in range(1, 41) if a != 13]  # 13 is parked by Mirror
    with anyio.fail_after(30):
        async with open_system(":memory:") as system:
            await _open(system, *(f"src-{n}" for n in range(4)), *(f"mirror-{n}" for n in range(4)))
            # Stored before the manager starts: it catches up with many events of each
            # stream in flight at once, each sending two commands.
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(_deposit, system, f"src-{n}", *amounts)
            manager = await system.run_process_manager(
                DoubleMirror(), options=ProcessManagerOptions(concurrency=16)
            )
            await manager.wait_for(await system.store.last_position())
            expected = [Deposited(amount=x) for a in amounts for x in (a, a * 1000)]
            for n in range(4):
                history = await system.aggregates(Account).history(f"mirror-{n}")
                assert [r.event for r in history[1:]] == expected


class Funnel(Mirror):
    """Copies the deposits of every source stream into one account, all with one
    sequence key: handled one after another, in the log's order."""

    name = "funnel"

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        (step,) = super().react(recorded)
        return [Dispatch(Account, "mirror-all", step.command)]

    def sequence_key(self, recorded: RecordedEvent) -> str:
        return "all"


async def test_events_with_one_sequence_key_are_handled_in_their_order() -> None:
    amounts = [a for a in range(1, 41) if a != 13]
    with anyio.fail_after(30):
        async with open_system(":memory:") as system:
            await _open(system, *(f"src-{n}" for n in range(4)), "mirror-all")
            # Stored before the manager starts, the four streams interleaved: with the
            # stream as the key they would be handled four at once.
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(_deposit, system, f"src-{n}", *amounts)
            manager = await system.run_process_manager(
                Funnel(), options=ProcessManagerOptions(concurrency=16)
            )
            head = await system.store.last_position()
            await manager.wait_for(head)
            deposits = [
                r.event
                for r in await system.store.read_all(to_position=head, limit=None)
                if r.stream_id.startswith("account-src-") and isinstance(r.event, Deposited)
            ]
            history = await system.aggregates(Account).history("mirror-all")
            assert [r.event for r in history[1:]] == deposits


async def test_closing_mid_flight_loses_and_duplicates_nothing(durable_target: str) -> None:
    path = durable_target
    amounts = [a for a in range(1, 101) if a != 13]
    with anyio.fail_after(30):
        async with open_system(path) as system:
            await _open(system, "src-4", "mirror-4")
            await system.run_process_manager(Mirror())
            await _deposit(system, "src-4", *amounts)
            # leave at once: the manager is typically still sending
        async with open_system(path) as system:
            manager = await system.run_process_manager(Mirror())
            await manager.wait_for(await system.store.last_position())
            assert await _balance(system, "mirror-4") == sum(amounts)
            assert await _balance(system, "src-4") == sum(amounts)


def test_a_manager_needs_a_name() -> None:
    class Nameless(ProcessManager):
        event_types = (Deposited,)

    async def run() -> None:
        async with open_system(":memory:") as system:
            with pytest.raises(ValueError, match="name"):
                await system.run_process_manager(Nameless())

    anyio.run(run)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ProcessManagerOptions(concurrency=0)
    with pytest.raises(ValueError, match="retry_delay"):
        ProcessManagerOptions(retry_delay=float("nan"))


async def test_wait_for_times_out_with_consistency_timeout_naming_the_positions() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            await _open(system, "src-4", "mirror-4")
            manager = await system.run_process_manager(Mirror())
            last = await _deposit(system, "src-4", 5)
            await manager.wait_for(last)
            await manager.wait_for(last, timeout=0)  # already there: no waiting at all
            with pytest.raises(ConsistencyTimeout) as caught:
                await manager.wait_for(last + 50, timeout=0.01)
            error = caught.value
            assert (error.kind, error.name, error.target, error.reached) == (
                "process manager",
                "mirror",
                last + 50,
                manager.position,
            )
            assert str(error).startswith(
                f"process manager 'mirror' reached position {manager.position},"
                f" not {last + 50}, within 0.01s"
            )
            assert isinstance(error, TimeoutError)
            assert manager._waiters == []  # the timed-out wait left nothing behind
            assert manager.running  # only the wait gave up
            later = await _deposit(system, "src-4", 6)
            await manager.wait_for(later)
            assert await _balance(system, "mirror-4") == 11


@pytest.mark.parametrize(
    ("position", "wait", "name"),
    [
        (-1, 1.0, "position"),
        (True, 1.0, "position"),
        (1.5, 1.0, "position"),
        ("3", 1.0, "position"),
        (1, -1.0, "timeout"),
        (1, float("nan"), "timeout"),
        (1, "1", "timeout"),
        (1, False, "timeout"),
    ],
)
async def test_wait_for_refuses_a_bad_position_or_timeout_first(
    position: Any, wait: Any, name: str
) -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            manager = await system.run_process_manager(Mirror())
            for _ in range(2):  # running, then stopped: the arguments are checked first
                with pytest.raises(
                    InvalidOption, match=rf"^process manager 'mirror': wait_for's {name} must be"
                ) as caught:
                    await manager.wait_for(position, timeout=wait)
                given = wait if name == "timeout" else position
                assert (caught.value.name, caught.value.value) == (name, given)
                assert isinstance(caught.value, ValueError)
                await manager.stop()


async def test_wait_for_on_a_stopped_manager_returns_if_reached_and_raises_if_not() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            await _open(system, "src-5", "mirror-5")
            manager = await system.run_process_manager(Mirror())
            last = await _deposit(system, "src-5", 5)
            await manager.wait_for(last)
            await manager.stop()
            assert not manager.running
            reached = manager.position
            await manager.wait_for(reached)  # reached before it stopped
            with pytest.raises(
                ShuttingDown,
                match=rf"^process manager 'mirror' stopped at position {reached};"
                rf" it will not reach position {reached + 1}$",
            ):
                await manager.wait_for(reached + 1)


async def test_stopping_a_manager_ends_pending_waits_with_shutting_down() -> None:
    with anyio.fail_after(20):
        async with open_system(":memory:") as system:
            manager = await system.run_process_manager(Mirror())
            errors: list[ShuttingDown] = []

            async def waiter() -> None:
                try:
                    await manager.wait_for(100, timeout=30)
                except ShuttingDown as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as waiting:
                waiting.start_soon(waiter)
                await wait_all_tasks_blocked()
                assert len(manager._waiters) == 1
                await manager.stop()
            (error,) = errors
            assert "will not reach position 100" in str(error)
            assert manager._waiters == []
