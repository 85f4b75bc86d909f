"""Process managers shared by several processes (here: several systems on one store,
and a child process killed with SIGKILL): one holder per partition under a lease,
fenced writes, failover, a fair share of the partitions."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc
import pytest

from actors import (
    ActorSystem,
    Dispatch,
    ProcessManagerHandle,
    ProcessManagerOptions,
    Rejected,
    StepRefused,
    open_system,
)
from store import LeaseLost, RecordedEvent
from tests.actors.domain import Account, Deposit
from tests.actors.test_process import Mirror, _balance, _deposit, _open

REPO_ROOT = Path(__file__).resolve().parents[2]


def held(handle: ProcessManagerHandle) -> tuple[int, ...]:
    """The partitions `handle` runs now (read afresh: it changes under the test)."""
    return handle.held


async def _mirrored(system: ActorSystem, n: int) -> int:
    """Deposit 1..n into src-1 (opening src-1 and mirror-1); the last position."""
    await _open(system, "src-1", "mirror-1")
    return await _deposit(system, "src-1", *(a for a in range(1, n + 1) if a != 13))


async def test_two_processes_starting_one_manager_run_it_once(durable_target: str) -> None:
    options = ProcessManagerOptions(lease_ttl=1)
    async with open_system(durable_target) as a, open_system(durable_target) as b:
        first = await a.run_process_manager(Mirror(), options=options)
        second = await b.run_process_manager(Mirror(), options=options)
        assert (first.held, second.held) == ((0,), ())
        last = await _mirrored(a, 20)
        await first.wait_for(last)
        # the standby knows how far the holder got from its checkpoint
        await second.wait_for(last, timeout=30)
        expected = sum(a for a in range(1, 21) if a != 13)
        assert await _balance(b, "mirror-1") == expected
        assert second.statistics().handled == 0
        assert first.statistics().sent == 19


async def test_stopping_the_holder_hands_the_manager_over_at_once(durable_target: str) -> None:
    options = ProcessManagerOptions(lease_ttl=0.5)
    async with open_system(durable_target) as a, open_system(durable_target) as b:
        first = await a.run_process_manager(Mirror(), options=options)
        second = await b.run_process_manager(Mirror(), options=options)
        last = await _mirrored(a, 5)
        await first.wait_for(last)
        await first.stop()  # releases the lease
        more = await _deposit(a, "src-1", 100)
        with anyio.fail_after(10):
            await second.wait_for(more)
        assert second.held == (0,)
        assert second.statistics().takeovers == 1
        assert await _balance(b, "mirror-1") == sum(range(1, 6)) + 100


async def test_a_former_holder_whose_lease_was_taken_cannot_write(durable_target: str) -> None:
    """Fencing: the holder is only paused (here: its lease is handed to an intruder
    behind its back); its next command and checkpoint are refused by the store."""
    async with open_system(durable_target) as system:
        handle = await system.run_process_manager(
            Mirror(), options=ProcessManagerOptions(lease_ttl=30)
        )
        last = await _mirrored(system, 3)
        await handle.wait_for(last)
        store = system.store
        lease = handle._partitions[0].lease
        assert lease is not None
        await store.release_lease(lease)
        intruder = await store.acquire_lease(lease.name, "intruder", 60)
        assert intruder is not None
        assert intruder.epoch == lease.epoch + 1
        with pytest.raises(LeaseLost):
            await store.save_checkpoint(lease.name, last + 1, fence=lease)
        position = await _deposit(system, "src-1", 50)
        with anyio.fail_after(10):
            while held(handle):  # the refused command stopped the partition  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert handle.statistics().lost == 1
        assert handle.position < position  # not handled: the holder does it
        assert await _balance(system, "mirror-1") == 6  # the 50 was not mirrored
        assert await store.load_checkpoint(lease.name) < position


async def test_partitions_are_shared_fairly_and_every_event_handled_once(
    durable_target: str,
) -> None:
    options = ProcessManagerOptions(lease_ttl=0.25, partitions=4)
    async with open_system(durable_target) as a, open_system(durable_target) as b:
        first = await a.run_process_manager(Mirror(), options=options)
        assert first.held == (0, 1, 2, 3)
        second = await b.run_process_manager(Mirror(), options=options)
        with anyio.fail_after(20):
            while len(held(first)) != 2 or len(held(second)) != 2:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert set(held(first)) | set(held(second)) == {0, 1, 2, 3}
        accounts = [f"{n}" for n in range(12)]
        await _open(a, *(f"src-{n}" for n in accounts), *(f"mirror-{n}" for n in accounts))
        last = 0
        for n in accounts:
            last = await _deposit(a, f"src-{n}", 5, 7)
        await first.wait_for(last, timeout=20)
        await second.wait_for(last, timeout=20)
        for n in accounts:
            assert await _balance(a, f"mirror-{n}") == 12
        handled = first.statistics().handled + second.statistics().handled
        assert handled == 2 * len(accounts)
        assert first.statistics().handled > 0
        assert second.statistics().handled > 0


@pytest.mark.slow
async def test_a_holder_killed_with_sigkill_is_replaced_within_the_lease(
    durable_target: str,
) -> None:
    ttl = 1.0
    command = [sys.executable, "-m", "tests.actors._child_saga", durable_target, str(ttl)]
    async with open_system(durable_target) as system:
        await _open(system, "src-1", "mirror-1")
        async with await anyio.open_process(command, cwd=REPO_ROOT) as child:
            try:
                assert child.stdout is not None
                with anyio.fail_after(60):
                    line = await _line(child.stdout)
                assert line == "ready 0"
                handle = await system.run_process_manager(
                    Mirror(), options=ProcessManagerOptions(lease_ttl=ttl)
                )
                assert handle.held == ()
                child.send_signal(signal.SIGKILL)
                await child.wait()
            finally:
                if child.returncode is None:
                    child.kill()
        killed = anyio.current_time()
        last = await _deposit(system, "src-1", 1, 2, 3)
        await handle.wait_for(last, timeout=20)
        assert anyio.current_time() - killed < 1.2 * ttl + 2  # the bound, with slack
        assert held(handle) == (0,)
        assert handle.statistics().takeovers == 1
        assert await _balance(system, "mirror-1") == 6


async def _line(stream: anyio.abc.ByteReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive()
    return data.decode().strip()


def test_lease_options_are_checked() -> None:
    for bad in ({"lease": 1}, {"lease_ttl": 0.01}, {"partitions": 0}, {"partitions": 2000}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ProcessManagerOptions(**bad)


async def test_a_step_refused_and_compensated_is_not_redone_when_its_event_is_replayed(
    durable_target: str,
) -> None:
    """A holder died after compensating a refused step but before its checkpoint; the
    next holder replays the event. The step would now be accepted (the mirror account
    was opened meanwhile): sent again, it would mirror money the source got back."""
    async with open_system(durable_target) as system:
        await _open(system, "src-9")  # no mirror-9: the mirror deposit is refused
        before = await system.store.last_position()
        handle = await system.run_process_manager(Mirror())
        last = await _deposit(system, "src-9", 30)
        await handle.wait_for(await system.store.last_position())
        assert handle.statistics().compensations == 1
        assert await _balance(system, "src-9") == 0  # refunded
        await handle.stop()
        await system.store.save_checkpoint("process:mirror", before)  # lost, as in a crash
        await _open(system, "mirror-9")
        again = await system.run_process_manager(Mirror())
        await again.wait_for(await system.store.last_position())
        assert again.position >= last
        assert await _balance(system, "mirror-9") == 0
        assert await _balance(system, "src-9") == 0
        assert again.statistics().rejected == 1


class MirrorOrLedger(Mirror):
    """Mirror's refund, then a note of the refused amount in account `ledger-<n>`."""

    name = "mirror-ledger"

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        assert isinstance(dispatch.command, Deposit)
        ledger = "ledger-" + recorded.stream_id.removeprefix("account-src-")
        return [
            *super().compensate(recorded, dispatch, error),
            Dispatch(Account, ledger, Deposit(amount=dispatch.command.amount)),
        ]


class MirrorNoUndo(Mirror):
    """Mirror, refusals left as they are (no compensating command)."""

    name = "mirror-no-undo"

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        return ()


async def test_a_compensation_cut_short_is_finished_when_its_event_is_replayed(
    durable_target: str,
) -> None:
    """The first compensating command went out, the second did not (here: refused, as
    a crash between the two would leave it); the replay sends the second, not the step."""
    async with open_system(durable_target) as system:
        await _open(system, "src-9")  # no mirror-9, no ledger-9 yet
        before = await system.store.last_position()
        handle = await system.run_process_manager(MirrorOrLedger())
        await _deposit(system, "src-9", 30)
        await handle.wait_for(await system.store.last_position())
        assert (handle.statistics().compensations, handle.statistics().parked) == (1, 1)
        await handle.stop()
        await system.store.save_checkpoint("process:mirror-ledger", before)
        await _open(system, "mirror-9", "ledger-9")
        again = await system.run_process_manager(MirrorOrLedger())
        await again.wait_for(await system.store.last_position())
        assert await _balance(system, "ledger-9") == 30  # finished
        assert await _balance(system, "src-9") == 0  # refunded once
        assert await _balance(system, "mirror-9") == 0  # the step not redone
        [record] = await system.store.read_stream(f"process.refused-mirror-ledger:{before + 1}:0")
        assert isinstance(record.event, StepRefused)
        assert record.event.refusal.startswith("AccountNotOpen")
        assert [c.aggregate_id for c in record.event.compensation] == ["src-9", "ledger-9"]


async def test_a_refused_step_without_compensation_is_not_redone_when_replayed(
    durable_target: str,
) -> None:
    async with open_system(durable_target) as system:
        await _open(system, "src-9")
        before = await system.store.last_position()
        handle = await system.run_process_manager(MirrorNoUndo())
        await _deposit(system, "src-9", 30)
        await handle.wait_for(await system.store.last_position())
        await handle.stop()
        await system.store.save_checkpoint("process:mirror-no-undo", before)
        await _open(system, "mirror-9")
        again = await system.run_process_manager(MirrorNoUndo())
        await again.wait_for(await system.store.last_position())
        assert await _balance(system, "mirror-9") == 0
        assert (again.statistics().rejected, again.statistics().sent) == (1, 0)
