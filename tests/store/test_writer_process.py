"""The writer process (`open_store(path, writer="process")`): what is particular to it.

The contract, bad-input, concurrency and cancellation suites run on it too (the
`store_kind` fixture); these tests cover its own life: start, stop, a crash, fault
rules, and the batches it keeps in flight.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from store import (
    NO_STREAM,
    AppendResult,
    StoreError,
    StoreUnavailable,
    _wire,
    faults,
    open_store,
)
from store._writer_process import widen_pipes
from tests.store._events import Deposited, make_registry
from tests.store._helpers import stored_rows


async def test_the_writer_runs_in_a_child_process_that_exits_with_the_store(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "events.db", registry=make_registry(), writer="process") as s:
        process = s._process
        assert process is not None
        assert process.pid != os.getpid()
        running = process.returncode
        assert running is None  # running while the store is open
        result = await s.append("a", [Deposited(1)], expected_version=NO_STREAM)
        assert result == AppendResult("a", 1, 1, 1, 1)
    assert process.returncode == 0  # stopped cleanly by end of input, not killed
    assert stored_rows(str(tmp_path / "events.db")) == [(1, "a", 1)]


async def test_a_memory_store_refuses_the_writer_process() -> None:
    with pytest.raises(ValueError, match=r"writer='process' needs a database file.*:memory:"):
        async with open_store(":memory:", writer="process"):
            pass


async def test_an_unknown_writer_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"writer must be 'thread' or 'process', not 'fork'"):
        async with open_store(tmp_path / "events.db", writer="fork"):  # type: ignore[arg-type]
            pass


async def test_a_killed_writer_process_fails_what_it_held_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    held: dict[int, BaseException] = {}
    async with open_store(path, registry=make_registry(), writer="process") as store:
        acknowledged = [
            await store.append(f"ok-{i}", [Deposited(i)], expected_version=NO_STREAM)
            for i in range(20)
        ]

        async def append(i: int) -> None:
            try:
                await store.append(f"lost-{i}", [Deposited(i)], expected_version=NO_STREAM)
            except StoreError as exc:
                held[i] = exc

        process = store._process
        assert process is not None
        lock = sqlite3.connect(path, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the batch waits for the lock in the process
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(5):
                        tg.start_soon(append, i)
                    await anyio.wait_all_tasks_blocked()
                    assert len(store._in_flight) == 1  # sent, not answered
                    os.kill(process.pid, signal.SIGKILL)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert sorted(held) == list(range(5))
        for error in held.values():
            assert isinstance(error, StoreUnavailable)
            assert "exited (code -9) while it held this write: its outcome is unknown" in str(error)
        with pytest.raises(StoreUnavailable, match=r"writer process .* exited \(code -9\)"):
            await store.append("after", [Deposited(0)], expected_version=NO_STREAM)
        assert store.closed
    assert process.returncode == -signal.SIGKILL
    # Everything acknowledged is in the file; nothing of the batches it held.
    assert stored_rows(str(path)) == [(r.first_position, r.stream_id, 1) for r in acknowledged]
    async with open_store(path, registry=make_registry()) as reopened:
        assert await reopened.last_position() == 20
        result = await reopened.append("again", [Deposited(1)], expected_version=NO_STREAM)
        assert result.first_position == 21


async def test_fault_rules_reach_the_writer_process(tmp_path: Path) -> None:
    faults.configure("after_begin:raise:2")
    try:
        async with open_store(
            tmp_path / "events.db", registry=make_registry(), writer="process"
        ) as store:
            await store.append("a", [Deposited(1)], expected_version=NO_STREAM)
            with pytest.raises(StoreError, match="fault injected at 'after_begin'"):
                await store.append("b", [Deposited(2)], expected_version=NO_STREAM)
            # The batch failed as a unit and was rolled back; the writer goes on.
            result = await store.append("b", [Deposited(2)], expected_version=NO_STREAM)
            assert (result.first_version, result.first_position) == (1, 2)
    finally:
        faults.configure(None)
    assert stored_rows(str(tmp_path / "events.db")) == [(1, "a", 1), (2, "b", 1)]


async def test_a_long_queue_is_split_so_one_half_commits_while_the_other_is_answered(
    tmp_path: Path,
) -> None:
    results: list[AppendResult] = []
    async with open_store(tmp_path / "events.db", registry=make_registry(), writer="process") as s:

        async def append(i: int) -> None:
            results.append(
                await s.append(f"s-{i}", [Deposited(i), Deposited(-i)], expected_version=NO_STREAM)
            )

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(append, i)
        statistics = s.statistics()
    # All 300 were queued before the writer woke, with nothing in flight: two halves.
    assert statistics.batches == 2
    assert (statistics.appends, statistics.events, statistics.last_position) == (300, 600, 600)
    assert sorted(r.first_position for r in results) == list(range(1, 601, 2))


async def test_another_process_writing_the_file_meanwhile_is_seen_by_the_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry(), writer="process") as store:
        await store.append("mine", [Deposited(1)], expected_version=NO_STREAM)
        # Another writer (here a plain connection) appends to the same stream and log.
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute(
                "INSERT INTO events (position, stream_id, version, event_type,"
                " schema_version, data, recorded_at, checksum)"
                " SELECT 2, stream_id, 2, event_type, schema_version, data, recorded_at,"
                " checksum FROM events WHERE position = 1"
            )
        other.close()
        with pytest.raises(StoreError, match=r"'mine' is at version 2, not the expected 1"):
            await store.append("mine", [Deposited(2)], expected_version=1)
        result = await store.append("mine", [Deposited(3)], expected_version=2)
        assert (result.first_version, result.first_position) == (3, 3)


_ORPHAN_PARENT = """
import sys, anyio
from store import open_store

async def main() -> None:
    async with open_store(sys.argv[1], writer="process") as store:
        print(store._process.pid, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


def test_the_writer_process_exits_when_the_store_process_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT, str(tmp_path / "events.db")],
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            writer_pid = int(parent.stdout.readline())
            # A handle on the writer process that becomes readable when it exits.
            handle = os.pidfd_open(writer_pid)
        finally:
            parent.kill()
    try:
        readable, _, _ = select.select([handle], [], [], 30.0)
        assert readable == [handle], "the writer process outlived the store's process by 30 s"
    finally:
        os.close(handle)


async def test_a_writer_cancelled_with_a_batch_in_flight_still_publishes_its_commit(
    tmp_path: Path,
) -> None:
    published: list[int] = []
    faults.configure("after_begin:delay:300:1")  # the first batch takes 300 ms in the process
    try:
        with anyio.CancelScope() as scope:
            async with open_store(
                tmp_path / "events.db", registry=make_registry(), writer="process"
            ) as store:
                store.add_commit_listener(lambda batch: published.extend(e.position for e in batch))

                async def append(i: int) -> None:
                    await store.append(f"s-{i}", [Deposited(i)], expected_version=NO_STREAM)

                async with anyio.create_task_group() as tg:
                    for i in range(3):
                        tg.start_soon(append, i)
                    await anyio.wait_all_tasks_blocked()
                    assert len(store._in_flight) == 1  # sent; the process is in its delay
                    scope.cancel()  # everything, the store's writer task included
                    await anyio.sleep_forever()
        process = store._process
        assert process is not None
    finally:
        faults.configure(None)
    # The batch committed in the process and the store read its answer before stopping
    # it: the commit listener (the bus, in a system) saw it, as with the writer thread.
    assert sorted(published) == [1, 2, 3]
    rows = stored_rows(str(tmp_path / "events.db"))
    assert sorted(stream for _, stream, _ in rows) == ["s-0", "s-1", "s-2"]
    assert [position for position, _, _ in rows] == [1, 2, 3]
    assert process.returncode == 0


class _Garbled:
    """Stands in for the store's decoder of the writer process's answers."""

    def decode(self, payload: bytes) -> object:
        raise msgspec.DecodeError(f"garbled ({len(payload)} bytes)")


async def test_an_answer_that_does_not_decode_stops_the_writer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path / "events.db", registry=make_registry(), writer="process") as s:
        await s.append("a", [Deposited(1)], expected_version=NO_STREAM)
        process = s._process
        assert process is not None
        monkeypatch.setattr(_wire, "from_writer", _Garbled())
        with pytest.raises(StoreUnavailable, match="its outcome is unknown"):
            await s.append("b", [Deposited(2)], expected_version=NO_STREAM)
        assert s.closed
    assert process.returncode == -signal.SIGKILL  # not trusted with another batch


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_the_writer_process_widens_its_pipes_to_hold_whole_batches() -> None:
    read_end, write_end = os.pipe()
    try:
        before = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        widen_pipes(read_end)
        after = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)  # one pipe: either end tells
    finally:
        os.close(read_end)
        os.close(write_end)
    assert before < after == 1 << 20


async def test_the_writer_process_gets_the_rules_in_force_not_those_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process was started with a rule that it has since cleared (as the
    # reliability suite's child does before it sets up): the writer must not inherit it.
    monkeypatch.setenv(faults.ENV, "after_begin:raise:*")
    faults.configure(None)
    async with open_store(tmp_path / "events.db", registry=make_registry(), writer="process") as s:
        result = await s.append("a", [Deposited(1)], expected_version=NO_STREAM)
    assert result.first_position == 1
