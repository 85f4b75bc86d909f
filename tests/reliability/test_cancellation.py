"""Cancellation and deadlock: asks cancelled mid-flight and resent with the same command id
(CAN-1), cancellation while the writer is inside its transaction, with another process
writing to the file (CAN-2, with the unshielded-commit control), cancelled opens and
closes (CAN-3), and ask cycles (CAN-4)."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import actors._plain
import store._groupcommit
import store._sqlite
import store._sqlite_connect
from actors import ActorRef, AggregateRouter, Overloaded, ReentrantAskError, open_system
from store import EventRegistry, StoreError, faults, open_store
from tests.actors.domain import Counter, Increment, Noop
from tests.reliability._report import ROOT, Report, size, time_limit
from tests.reliability.oracle import whole_log
from tests.store._events import Deposited

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]


# Asks in flight at once. Small waves give every outcome: answered, cancelled before the
# actor took the command, and cancelled while it was being appended (committed anyway).
WAVE = 100


async def _cancel_and_resend(path: Path, asks: int) -> dict[str, int]:
    """`asks` increments on 50 counters, each ask cancelled after a random 0-5 ms; then
    every cancelled (or refused) one is resent with its command id. Each increment
    carries its command id as a tag, so the log tells how often each was applied."""
    rng = random.Random(1)
    cancelled: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []  # Overloaded: not enqueued (the global bound)
    async with open_system(path, synchronous="NORMAL") as system:
        counters = system.aggregates(Counter)

        async def one(n: int) -> None:
            aggregate = f"c{n % 50}"
            command_id = f"cmd-{n}"
            with anyio.move_on_after(rng.random() * 0.005) as scope:
                try:
                    await counters.ask(
                        aggregate, Increment(by=1, tag=command_id), command_id=command_id
                    )
                except Overloaded:
                    refused.append((aggregate, command_id))
            if scope.cancelled_caught:
                cancelled.append((aggregate, command_id))

        for first in range(0, asks, WAVE):
            async with anyio.create_task_group() as tg:
                for n in range(first, min(first + WAVE, asks)):
                    tg.start_soon(one, n)
            # A cancelled ask's command stays queued (it may still be applied): a barrier
            # per aggregate (FIFO) lets the wave drain before the next one.
            async with anyio.create_task_group() as tg:
                for a in range(50):
                    tg.start_soon(counters.ask, f"c{a}", Noop())
        # Cancelled asks whose command committed anyway: the resends must not repeat them.
        stored = {e.event.tag for e in await whole_log(system.store)}
        in_doubt_committed = sum(command_id in stored for _, command_id in cancelled)
        for aggregate, command_id in cancelled + refused:
            await counters.ask(aggregate, Increment(by=1, tag=command_id), command_id=command_id)
        divergence = 0
        for a in range(50):
            state = await counters.state(f"c{a}")
            divergence += state.value != await system.store.stream_version(f"counter-c{a}")
        events = await whole_log(system.store)
    tags = [e.event.tag for e in events]
    return {
        "asks": asks,
        "cancelled": len(cancelled),
        "cancelled_but_committed": in_doubt_committed,
        "refused": len(refused),
        "duplicates_after_retry": len(tags) - len(set(tags)),
        "applied": len(set(tags)),
        "divergence": divergence,
    }


def check_cancel_resend(figures: dict[str, int]) -> list[str]:
    """Violations of CAN-1: a command applied twice, one never applied after its resend,
    an actor that disagrees with its stream."""
    found: list[str] = []
    if figures["duplicates_after_retry"]:
        found.append(f"{figures['duplicates_after_retry']} commands applied twice")
    if figures["applied"] != figures["asks"]:
        found.append(f"{figures['applied']} of {figures['asks']} commands applied")
    if figures["divergence"]:
        found.append(f"{figures['divergence']} actors disagree with their stream")
    return found


async def test_can1_cancelled_asks_resent_with_their_id_apply_once(
    tmp_path: Path, report: Report
) -> None:
    figures = await _cancel_and_resend(tmp_path / "can1.db", size(2_000, 200_000))
    report.record("CAN-1", **figures)
    assert figures["cancelled"] > 0  # the cancellations were real
    assert figures["cancelled_but_committed"] > 0  # and some came too late to stop the write
    assert check_cancel_resend(figures) == []


async def test_can1_the_checker_catches_a_router_that_drops_the_command_id(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: `ask` does not pass the command id on, so neither the actor
    # nor the store can recognise a resend.
    ask = AggregateRouter.ask

    async def forgetful(self: Any, aggregate_id: str, command: Any, **kw: Any) -> Any:
        kw["command_id"] = None
        return await ask(self, aggregate_id, command, **kw)

    monkeypatch.setattr(AggregateRouter, "ask", forgetful)
    violations = check_cancel_resend(await _cancel_and_resend(tmp_path / "can1.db", 2_000))
    report.record("CAN-1", broken_variant="command id dropped", caught=len(violations))
    assert any("applied twice" in v for v in violations)


FOREIGN = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
worst = 0.0
deadline = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < deadline:
    started = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (f"foreign-{n}", n, 0.0))
    conn.execute("COMMIT")
    worst = max(worst, time.monotonic() - started)
    n += 1
    time.sleep(0.001)
print(n, worst, flush=True)
"""

POINTS = ("before_begin", "after_begin", "after_insert_before_commit")


async def _one_trial(
    db: Path, command_id: str, amount: int, entered: threading.Event, patience: float
) -> dict[str, object]:
    outcome: dict[str, object] = {}
    opened: list[Any] = []
    ready = anyio.Event()
    owner = anyio.CancelScope()

    async def own() -> None:
        with owner:
            async with open_store(db, registry=EventRegistry([Deposited])) as s:
                opened.append(s)
                ready.set()
                await anyio.sleep_forever()

    async def append(version: int) -> None:
        with anyio.move_on_after(patience):
            try:
                outcome["result"] = await opened[0].append(
                    "s", [Deposited(amount=amount)], expected_version=version, command_id=command_id
                )
            except StoreError as exc:
                outcome["error"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(own)
        await ready.wait()
        tg.start_soon(append, await opened[0].stream_version("s"))
        await anyio.to_thread.run_sync(entered.wait)
        owner.cancel()
    return outcome


async def cancel_mid_commit(
    db: Path, point: str, trials: int, monkeypatch: pytest.MonkeyPatch, patience: float = 10
) -> dict[str, int]:
    """For each trial: hold the writer inside its transaction at `point`, cancel the
    task that owns the store (the store closes), and see what the appending caller, who
    is outside that scope, is told. Counts callers left with no answer, answers that
    disagree with the file (told written but absent, told failed but stored), and a
    file still locked afterwards."""
    found = {"unanswered": 0, "divergent": 0, "wedged": 0}
    entered = threading.Event()
    original = faults.hit

    def hold(name: str) -> faults.Returned:
        if name == point:
            entered.set()
            time.sleep(0.1)  # the writer thread sits inside the transaction
            return None
        return original(name)

    monkeypatch.setattr(faults, "hit", hold)
    for trial in range(trials):
        entered.clear()
        faults.configure("bus_deliver:dup:1000000000")  # any rule: turns the points on
        command_id = f"{point}-{trial}"
        outcome = await _one_trial(db, command_id, trial, entered, patience)
        faults.configure(None)
        with sqlite3.connect(db, timeout=5, isolation_level=None) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                found["wedged"] += 1
            stored = conn.execute(
                "SELECT count(*) FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()[0]
        conn.close()
        if not outcome:
            found["unanswered"] += 1
        elif ("result" in outcome) != bool(stored):
            found["divergent"] += 1
    return found


async def test_can2_cancelling_inside_the_transaction_leaves_a_consistent_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    db = tmp_path / "can2.db"
    async with open_store(db) as s:
        await s.stream_version("s")  # create the schema
    trials = size(5, 100)
    seconds = 3 * len(POINTS) * trials * 0.2 + 5
    totals = {"unanswered": 0, "divergent": 0, "wedged": 0}
    async with await anyio.open_process(
        [sys.executable, "-c", FOREIGN, str(db), str(seconds)], cwd=ROOT
    ) as foreign:
        for point in POINTS:
            found = await cancel_mid_commit(db, point, trials, monkeypatch)
            for key in totals:
                totals[key] += found[key]
        assert foreign.stdout is not None
        output = b"".join([chunk async for chunk in foreign.stdout])  # to EOF
        assert await foreign.wait() == 0
        line = output.decode().split()
    writes, worst = int(line[0]), float(line[1])
    report.record(
        "CAN-2",
        trials=trials * len(POINTS),
        wedged_connections=totals["wedged"],
        divergence=totals["divergent"],
        unanswered=totals["unanswered"],
        foreign_writes=writes,
        foreign_max_stall_ms=round(worst * 1000, 1),
    )
    assert totals == {"unanswered": 0, "divergent": 0, "wedged": 0}
    assert worst < 5.0  # never blocked past busy_timeout
    assert writes > 0


async def _unshielded_run(db: Path) -> dict[str, int]:
    """The broken variant: the store's `anyio` swapped for one whose CancelScope ignores
    `shield`. Run in a child process (`python -m tests.reliability.test_cancellation
    DB`), since the abandoned worker threads outlive the event loop they answer to."""

    class Unshielded(anyio.CancelScope):
        def __new__(cls, *, deadline: float = float("inf"), shield: bool = False) -> Any:
            return anyio.CancelScope(deadline=deadline, shield=False)

    names = {name: getattr(anyio, name) for name in dir(anyio) if not name.startswith("__")}
    proxy = SimpleNamespace(**{**names, "CancelScope": Unshielded})
    with pytest.MonkeyPatch.context() as monkeypatch:
        # the writer task's shielded commit, and the store's opening and closing
        monkeypatch.setattr(store._groupcommit, "anyio", proxy)
        monkeypatch.setattr(store._sqlite, "anyio", proxy)
        async with open_store(db) as s:
            await s.stream_version("s")
        return await cancel_mid_commit(db, "after_insert_before_commit", 2, monkeypatch, 1.0)


async def test_can2_the_checker_catches_an_unshielded_commit(
    tmp_path: Path, report: Report
) -> None:
    """Without the shield, closing the store mid-commit abandons the batch's callers
    (the worker thread commits it anyway): they never hear back."""
    done = await anyio.run_process(
        [sys.executable, "-m", "tests.reliability.test_cancellation", str(tmp_path / "b.db")],
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    found = json.loads(done.stdout.decode().splitlines()[-1])
    caught = found["unanswered"] + found["divergent"]
    report.record("CAN-2", broken_variant="unshielded commit", caught=caught)
    assert caught > 0


def _handles(path: Path) -> tuple[int, int]:
    """(open fds of this process, of which on `path` or its -wal/-shm files)."""
    fds = os.listdir("/proc/self/fd")
    on_file = 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed between listdir and readlink (the listdir's own fd)
        on_file += target.startswith(str(path))
    return len(fds), on_file


async def _join_new_threads(before: set[threading.Thread], seconds: float = 5.0) -> int:
    """Wait (`seconds` at most each) for threads started since `before`; how many stay
    alive."""
    alive = 0
    for thread in set(threading.enumerate()) - before:
        await anyio.to_thread.run_sync(thread.join, seconds)
        alive += thread.is_alive()
    return alive


async def _cancelled_opens(
    path: Path, trials: int, join_seconds: float, scopes: list[anyio.CancelScope] | None = None
) -> dict[str, Any]:
    """Open and use the system `trials` times, each cancelled after a random 0-30 ms
    (each trial's scope is appended to `scopes`, for a control to cancel it itself);
    then count the threads, fds and file handles left behind, and reopen."""
    async with open_system(path) as system:
        await system.aggregates(Counter).ask("c", Increment(by=1))
    threads0 = set(threading.enumerate())
    fds0, on_file0 = _handles(path)
    rng = random.Random(3)
    phases = {"opening": 0, "serving": 0, "closing": 0, "completed": 0}
    for _ in range(trials):
        phase = "opening"
        with anyio.move_on_after(rng.random() * 0.03) as scope:
            if scopes is not None:
                scopes.append(scope)
            async with open_system(path) as system:
                phase = "serving"
                counters = system.aggregates(Counter)
                for _ in range(rng.randrange(1, 20)):
                    await counters.ask("c", Increment(by=1))
                phase = "closing"
            phase = "completed"
        phases[phase] += 1
    leaked_threads = await _join_new_threads(threads0, join_seconds)
    fds1, on_file1 = _handles(path)
    # A later open works, and the actor's state is the stored stream's.
    async with open_system(path) as system:
        state = await system.aggregates(Counter).state("c")
        stored = len(await system.store.read_stream("counter-c"))
    return {
        "trials": trials,
        "cancelled_while": phases,
        "leaked_threads": leaked_threads,
        "leaked_fds": max(fds1 - fds0, 0),
        "leaked_file_handles": max(on_file1 - on_file0, 0),
        "reopen_state_matches_store": state.value == stored,
    }


def can3_violations(figures: dict[str, Any]) -> list[str]:
    leaks = {k: figures[k] for k in ("leaked_threads", "leaked_fds", "leaked_file_handles")}
    found = [f"{name} {count}" for name, count in leaks.items() if count]
    if not figures["reopen_state_matches_store"]:
        found.append("after reopening, the actor's state is not the stored stream's")
    return found


async def test_can3_cancelled_opens_and_closes_leak_no_thread_or_handle(
    tmp_path: Path, report: Report
) -> None:
    figures = await _cancelled_opens(tmp_path / "can3.db", size(60, 200), 5.0)
    report.record("CAN-3", **figures)
    phases = figures["cancelled_while"]
    assert phases["opening"] + phases["serving"] + phases["closing"] > 0  # it did cancel
    assert can3_violations(figures) == []


async def test_can3_the_checker_catches_a_connection_leaked_by_a_cancelled_open(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken variant: a cancellation point between opening a connection and handing
    it to the code that closes it."""
    connect = store._sqlite_connect._connect
    leaked: list[Any] = []
    scopes: list[anyio.CancelScope] = []

    async def leaky_connect(path: str, options: Any, *, memory: bool) -> Any:
        conn = await connect(path, options, memory=memory)
        leaked.append(conn)
        if scopes and len(scopes) % 4 == 0:
            scopes[-1].cancel()  # the cancellation arrives right here, in one trial of 4
        await anyio.lowlevel.checkpoint()  # cancelled here, nobody closes `conn`
        return conn

    monkeypatch.setattr(store._sqlite, "_connect", leaky_connect)
    try:
        figures = await _cancelled_opens(tmp_path / "leak.db", 20, 0.2, scopes)
    finally:
        for conn in leaked:
            with anyio.CancelScope(shield=True):
                await conn.close()  # end the leaked threads (closing twice is harmless)
    violations = can3_violations(figures)
    report.record("CAN-3", broken_variant="unclosed connection", caught=len(violations))
    assert any(v.startswith("leaked_threads") for v in violations)


async def _ask_cycle(cycle: tuple[str, ...], ask_timeout: float) -> dict[str, Any]:
    """Plain actors that forward each message to the next of `cycle` (the last back to
    the first); one ask into the cycle, then one message that stops at each actor."""
    async with open_system(":memory:", ask_timeout=ask_timeout) as system:
        refs: dict[str, ActorRef[int, int]] = {}

        def forwarder(target: str) -> Any:
            async def handle(n: int) -> int:
                return n if n < 0 else await refs[target].ask(n + 1)

            return handle

        for index, name in enumerate(cycle):
            refs[name] = system.spawn(name, forwarder(cycle[(index + 1) % len(cycle)]))
        error: BaseException | None = None
        started = time.perf_counter()
        with anyio.move_on_after(ask_timeout * 2 + 1) as scope:
            try:
                await refs["a"].ask(1)
            except Exception as exc:  # noqa: BLE001 - judged by the checker
                error = exc
        elapsed = time.perf_counter() - started
        served = 0
        with anyio.move_on_after(ask_timeout * 2 + 1):
            for name in cycle:
                served += await refs[name].ask(-1) == -1
    return {
        "cycle": "->".join((*cycle, "a")),
        "error": type(error).__name__ if error else None,
        "chain_starts_at_a": isinstance(error, ReentrantAskError) and error.chain[0] == "a",
        "hung": int(scope.cancelled_caught),
        "seconds_to_error": elapsed,
        "actors": len(cycle),
        "served_after": served,
    }


def check_cycle(figures: dict[str, Any]) -> list[str]:
    """Violations of CAN-4: the ask into a cycle must fail at once with
    `ReentrantAskError` naming the chain, and every actor must serve again."""
    found: list[str] = []
    if figures["hung"] or figures["error"] != "ReentrantAskError":
        found.append(
            f"{figures['cycle']}: {figures['error'] or 'no error'} (hung {figures['hung']})"
        )
    elif not figures["chain_starts_at_a"] or figures["seconds_to_error"] > 0.1:
        found.append(f"{figures['cycle']}: chain or time wrong ({figures['seconds_to_error']} s)")
    if figures["served_after"] != figures["actors"]:
        found.append(
            f"{figures['cycle']}: {figures['served_after']} of {figures['actors']} actors"
            " served again"
        )
    return found


@pytest.mark.parametrize("cycle", [("a",), ("a", "b"), ("a", "b", "c")])
async def test_can4_ask_cycles_fail_fast_and_the_actors_serve_again(
    cycle: tuple[str, ...], report: Report
) -> None:
    figures = await _ask_cycle(cycle, ask_timeout=5.0)
    report.record("CAN-4", **{k: v for k, v in figures.items() if k != "chain_starts_at_a"})
    assert check_cycle(figures) == []


async def test_can4_the_checker_catches_a_cycle_that_waits_for_its_timeout(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: no ask chain is tracked, so a cycle waits on itself.
    monkeypatch.setattr(actors._plain, "current_chain", tuple)
    violations = check_cycle(await _ask_cycle(("a", "b"), ask_timeout=0.3))
    report.record("CAN-4", broken_variant="no ask chain", caught=len(violations))
    assert any("AskTimeout" in v or "hung" in v for v in violations)


if __name__ == "__main__":
    print(json.dumps(anyio.run(_unshielded_run, Path(sys.argv[1]))), flush=True)
    os._exit(0)  # the abandoned worker threads never end: do not wait for them
