"""Durability under kill -9 (DUR-1), crashes at every named fault point (DUR-2), and read
models rebuilt after restart (RM-1, RM-3).

A child process (`tests.reliability.child`) runs the bank under load and reports every
acknowledged command on its stdout; the parent kills it (SIGKILL, or an `exit` fault
point, which is `os._exit`), then checks the file against the acknowledgements and
against the in-memory oracle, restarts the framework on the file and checks it serves.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from actors import open_system
from demo.bank import (
    Account,
    AccountOpened,
    Balances,
    BankTotals,
    Credited,
    Debited,
    Deposit,
    Deposited,
    OpenAccount,
    Refunded,
    Transfer,
    TransferProcess,
)
from store import RecordedEvent, SQLiteEventStore, faults
from tests.reliability._report import ROOT, Report, size, time_limit
from tests.reliability.oracle import (
    balances_hash,
    digest_mismatches,
    fold_balances,
    integrity,
    log_gaps,
    lost_acks,
    partial_commands,
    read_lines,
    settle,
    whole_log,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(600))]


async def run_child(
    db: Path,
    *,
    seed: int,
    kill_after_acks: int | None,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
    sigterm_after_acks: int | None = None,
) -> tuple[list[dict[str, object]], int]:
    """Run the child until it has reported `kill_after_acks` acknowledgements (then
    SIGKILL it) or until it exits; returns its complete stdout lines and exit code.
    With `sigterm_after_acks`, the child gets a SIGTERM after that many acks and is
    read on until it exits by itself."""
    argv = [sys.executable, "-m", "tests.reliability.child", "--db", str(db)]
    argv += ["--seed", str(seed), "--run", f"r{seed}", *extra]
    raw = bytearray()
    acks = 0
    killed = ended = False
    async with await anyio.open_process(
        argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            assert process.stdout is not None
            stream = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(300):
                while True:
                    try:
                        line = await stream.receive_until(b"\n", 1 << 20)
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        ended = True  # the child closed its stdout: it is exiting
                        break
                    raw += line + b"\n"
                    if line.startswith(b'{"ack"'):
                        acks += 1
                        if sigterm_after_acks is not None and acks == sigterm_after_acks:
                            process.send_signal(signal.SIGTERM)
                        if kill_after_acks is not None and acks >= kill_after_acks:
                            killed = True
                            process.kill()
                            break
                # Whatever the child wrote before it died is in the pipe: read it all.
                raw += await _drain(stream)
        finally:
            # Once only: a second kill() polls the dead child and reaps it under the
            # event loop's watcher, which then reports exit code 255.
            if not killed and not ended and process.returncode is None:
                process.kill()
        code = await process.wait()
    return read_lines(bytes(raw)), code


async def _drain(stream: BufferedByteReceiveStream) -> bytes:
    rest = bytearray(stream.buffer)
    while True:
        try:
            rest += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return bytes(rest)


async def stored_events(db: Path) -> list[RecordedEvent]:
    async with open_system(db) as system:
        system.aggregates(Account)
        system.aggregates(Transfer)
        return await whole_log(system.store)


def stored_command_ids(db: Path) -> set[object]:
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("SELECT command_id FROM commands")}
    conn.close()
    return ids


def check_file(lines: list[dict[str, object]], db: Path) -> dict[str, list[object]]:
    """Every durability checker over one killed run."""
    return {
        "lost": list(lost_acks(lines, db)),
        "partial": list(partial_commands(db)),
        "gaps": list(log_gaps(db)),
        "integrity": list(integrity(db)),
    }


async def restart_and_check(db: Path) -> tuple[float, list[int], int]:
    """Reopen the file: rebuild the read model, compare it with the oracle at the head,
    and run one command. Returns (recovery seconds, mismatching positions, head)."""
    started = time.perf_counter()
    async with open_system(db) as system:
        accounts = system.aggregates(Account)
        system.aggregates(Transfer)
        balances = await system.project(Balances())
        head = await system.store.last_position()
        await balances.wait_for(head, timeout=60)
        recovery = time.perf_counter() - started
        events = await whole_log(system.store)
        mismatch = [] if balances.view.balances == fold_balances(events) else [head]
        await accounts.ask("0", Deposit(account_id="0", amount=1), command_id="after-restart")
    return recovery, mismatch, head


# -- DUR-1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("synchronous", "writer"), [("FULL", "thread"), ("NORMAL", "thread"), ("FULL", "process")]
)
async def test_dur1_kill9_at_random_moments_loses_no_acknowledged_command(
    tmp_path: Path, synchronous: str, writer: str, report: Report
) -> None:
    """The writer process variant kills the program and leaves its writer process to
    finish what it was sent (and exit) while the next round opens the same file."""
    rounds = size(8, 200)
    # The thread variants keep the seed they had before the writer process existed.
    rng = random.Random(f"dur1-{synchronous}" + ("" if writer == "thread" else f"-{writer}"))
    totals = {"acked": 0, "lost": 0, "partial": 0, "gaps": 0, "integrity": 0}
    digest_bad = rebuild_bad = indeterminate = 0
    recovery = []
    db = tmp_path / "bank.db"
    for round_ in range(rounds):
        # One file across the rounds: every restart resumes on what the kills left.
        lines, code = await run_child(
            db,
            seed=round_,
            kill_after_acks=rng.randint(20, size(400, 3_000)),
            extra=(
                *("--synchronous", synchronous, "--writer", writer),
                *("--accounts", "40", "--clients", "16"),
            ),
        )
        assert code == -9, f"round {round_}: the child ended with {code}, not SIGKILL"
        found = check_file(lines, db)
        totals["acked"] += sum(1 for line in lines if "ack" in line)
        for name in ("lost", "partial", "gaps", "integrity"):
            totals[name] += len(found[name])
        events = await stored_events(db)
        digest_bad += len(digest_mismatches(lines, events))
        acked = {line["ack"] for line in lines if "ack" in line}
        sent = {line["send"] for line in lines if "send" in line}
        stored_ids = stored_command_ids(db)
        indeterminate += len((sent - acked) & stored_ids)
        seconds, mismatch, _ = await restart_and_check(db)
        recovery.append(seconds)
        rebuild_bad += len(mismatch)
        assert found == {"lost": [], "partial": [], "gaps": [], "integrity": []}, round_
    report.record(
        "DUR-1",
        synchronous=synchronous,
        writer=writer,
        rounds=rounds,
        **totals,
        digest_mismatches=digest_bad,
        indeterminate_committed=indeterminate,
        recovery_seconds_max=max(recovery),
    )
    report.record("RM-1", variant="A (rebuilt at start)", rounds=rounds, mismatches=rebuild_bad)
    report.record("RM-3", rounds=rounds, mismatches=digest_bad + rebuild_bad)
    assert totals["acked"] > rounds * 20
    assert digest_bad == 0
    assert rebuild_bad == 0


async def test_dur1_checker_catches_acks_before_commit(tmp_path: Path, report: Report) -> None:
    """The self-test: a writer that answers before it commits loses acknowledged
    commands under the same kill, and the checker sees it."""
    lost = 0
    for round_ in range(3):
        db = tmp_path / f"broken-{round_}.db"
        lines, code = await run_child(
            db,
            seed=round_,
            kill_after_acks=300,
            extra=("--accounts", "20", "--clients", "16", "--broken", "ack-before-commit"),
        )
        assert code == -9
        lost += len(lost_acks(lines, db))
        if lost:
            break
    report.record("DUR-1", broken_variant="ack before commit", caught=lost)
    assert lost > 0


# -- DUR-2 ------------------------------------------------------------------------------

STORE_POINTS = [
    "before_begin",
    "after_begin",
    "after_insert_before_commit",
    "after_commit_before_publish",
    "after_commit_before_reply",
]
SUBSCRIBER_POINTS = [
    "bus_deliver",
    "projection_apply",
    "snapshot_write",
    "checkpoint_write",
    "process_after_send",
    "after_projection_apply_before_checkpoint",
]


async def settle_and_resend(
    db: Path, lines: list[dict[str, object]]
) -> tuple[dict[str, int], dict[str, object]]:
    """Restart: resume the transfer process to the head, resend every command that was
    sent but not answered (same command id), and fold the outcome."""
    acked = {line["ack"] for line in lines if "ack" in line}
    refused = {line["refused"] for line in lines if "refused" in line}
    in_flight = [line for line in lines if "send" in line and line["send"] not in acked | refused]
    counts = {"resent": 0, "duplicate": 0}
    async with open_system(db) as system:
        accounts = system.aggregates(Account)
        transfers = system.aggregates(Transfer)
        process = await system.run_process_manager(TransferProcess())
        totals = await system.project(BankTotals())
        balances = await system.project(Balances())
        for line in in_flight:
            command_id = str(line["send"])
            if line["kind"] == "transfer":
                continue  # a transfer is resent by its own idempotent id below
            command = Deposit(account_id=str(line["account"]), amount=int(str(line["amount"])))
            if line["kind"] != "deposit":
                continue  # a withdrawal may be refused now: only deposits are resent
            result = await accounts.ask(str(line["account"]), command, command_id=command_id)
            counts["resent"] += 1
            counts["duplicate"] += result.duplicate
        del transfers
        head = await settle(system.store, process)
        await totals.wait_for(head, timeout=60)
        await balances.wait_for(head, timeout=60)
        events = await whole_log(system.store)
        view = totals.view
        outcome: dict[str, object] = {
            "conserved": view.conserved(),
            "in_flight": view.in_flight,
            "balances_equal_oracle": balances.view.balances == fold_balances(events),
            "double_applied": double_applied(events),
            "states_equal_oracle": await states_equal_oracle(system, events),
        }
    return counts, outcome


def double_applied(events: list[RecordedEvent]) -> list[str]:
    """Transfers debited, credited or refunded more than once, or both credited and
    refunded."""
    legs: dict[str, list[str]] = {}
    for recorded in events:
        match recorded.event:
            case Debited(transfer_id=t):
                legs.setdefault(t, []).append("debit")
            case Credited(transfer_id=t):
                legs.setdefault(t, []).append("credit")
            case Refunded(transfer_id=t):
                legs.setdefault(t, []).append("refund")
    bad = []
    for transfer, seen in legs.items():
        if any(seen.count(leg) > 1 for leg in set(seen)) or {"credit", "refund"} <= set(seen):
            bad.append(transfer)
    return bad


async def states_equal_oracle(system: object, events: list[RecordedEvent]) -> bool:
    from actors import ActorSystem

    assert isinstance(system, ActorSystem)
    accounts = system.aggregates(Account)
    expected = fold_balances(events)
    for account, balance in expected.items():
        state = await accounts.state(account)
        if state.balance != balance:
            return False
    return True


# At soak size each client sends more, so that even the 1,000th hit of the rarest point
# (a saga checkpoint write, one per batch of handled events) is reached.
LOAD = ("--accounts", "20", "--clients", "16", "--commands", size("400", "2000"))


def dur2_cases() -> list[tuple[str, int]]:
    nths = size((1, 7, 100), (1, 7, 100, 1000))
    return [(point, nth) for point in STORE_POINTS + SUBSCRIBER_POINTS for nth in nths]


@pytest.mark.parametrize(("point", "nth"), dur2_cases())
async def test_dur2_crash_at_a_named_point(
    tmp_path: Path, point: str, nth: int, report: Report
) -> None:
    db = tmp_path / "bank.db"
    lines, code = await run_child(
        db,
        seed=nth,
        kill_after_acks=None,
        env={faults.ENV: f"{point}:exit:{nth}"},
        extra=(*LOAD, "--transfers", "--snapshot-every", "3"),
    )
    # The point must be reached, or the case proves nothing.
    assert code == faults.EXIT_CODE, f"{point}:{nth} was never reached (exit {code})"
    found = check_file(lines, db)
    counts, outcome = await settle_and_resend(db, lines)
    violations = {key: value for key, value in found.items() if value}
    if outcome["double_applied"]:
        violations["double_applied"] = list(outcome["double_applied"])  # type: ignore[call-overload]
    for key in ("conserved", "balances_equal_oracle", "states_equal_oracle"):
        if outcome[key] is not True:
            violations[key] = [outcome[key]]
    if outcome["in_flight"] != 0:
        violations["stuck_in_flight"] = [outcome["in_flight"]]
    report.record(
        "DUR-2",
        point=point,
        nth=nth,
        passed=int(not violations),
        combos=1,
        acked=sum(1 for line in lines if "ack" in line),
        resent=counts["resent"],
        resent_duplicate=counts["duplicate"],
        double_applied=len(outcome["double_applied"]),  # type: ignore[arg-type]
    )
    assert not violations, f"{point}:{nth}: {violations}"


# -- DUR-3 ------------------------------------------------------------------------------


def _raw_log(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT position, stream_id, version, event_type, data FROM events ORDER BY position"
        ).fetchall()
    conn.close()
    return rows


def has_sidecars(db: Path) -> bool:
    return Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()


def prefix_violations(copy: Path, live: Path) -> list[str]:
    """Events of `copy` that differ from the live log at the same position, or a copy
    longer than the live log (a backup must hold exactly positions 1..n of it)."""
    live_rows, copied = _raw_log(live), _raw_log(copy)
    bad = [f"position {c[0]}" for c, w in zip(copied, live_rows, strict=False) if c != w]
    if len(copied) > len(live_rows):
        bad.append(f"copy has {len(copied)} events, the live log {len(live_rows)}")
    return bad


async def test_dur3_wal_sidecars_survive_a_kill_and_a_backup_is_a_consistent_prefix(
    tmp_path: Path, report: Report
) -> None:
    rounds = size(2, 20)
    sidecars_missing = lost = 0
    for round_ in range(rounds):
        db = tmp_path / f"k{round_}.db"
        lines, code = await run_child(
            db,
            seed=round_,
            kill_after_acks=300 + 200 * round_,
            extra=("--accounts", "10", "--clients", "8"),
        )
        assert code == -9
        sidecars_missing += not has_sidecars(db)
        lost += len(lost_acks(lines, db))
        assert integrity(db) == []
    live, copy, naive = tmp_path / "live.db", tmp_path / "backup.db", tmp_path / "naive.db"
    async with open_system(live) as system:
        accounts = system.aggregates(Account)
        ids = [f"a{n}" for n in range(16)]
        for account in ids:
            await accounts.ask(account, OpenAccount(account_id=account, owner="o"))
        stop = anyio.Event()

        async def client(account: str) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                await accounts.ask(
                    account, Deposit(account_id=account, amount=1), command_id=f"{account}-{k}"
                )

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for account in ids:
                    tg.start_soon(client, account)
                while await system.store.last_position() < size(500, 5_000):
                    await anyio.wait_all_tasks_blocked()
                store = system.store
                assert isinstance(store, SQLiteEventStore)
                backed_up = await store.backup(copy)
                await anyio.to_thread.run_sync(shutil.copyfile, live, naive)
                while await system.store.last_position() < backed_up + 200:
                    await anyio.wait_all_tasks_blocked()
                stop.set()
    prefix = prefix_violations(copy, live)
    assert prefix == []
    assert integrity(copy) == []
    assert partial_commands(copy) == []
    assert len(_raw_log(copy)) == backed_up
    async with open_system(copy) as restored:
        restored.aggregates(Account)
        balances = await restored.project(Balances())
        await balances.wait_for(backed_up)
        events = await whole_log(restored.store)
        assert balances.view.balances == fold_balances(events)
    try:
        naive_info: object = len(_raw_log(naive)) if not prefix_violations(naive, live) else "torn"
    except sqlite3.DatabaseError as exc:
        naive_info = f"unreadable: {exc}"
    report.record(
        "DUR-3",
        kill_rounds=rounds,
        sidecars_missing=sidecars_missing,
        lost_after_reopen=lost,
        backup_events=backed_up,
        backup_prefix_violations=len(prefix),
        naive_copy_info=str(naive_info),
    )
    assert sidecars_missing == 0
    assert lost == 0


# -- the checkers above, on evidence made to fail them ------------------------------------


def _recorded(stream_id: str, version: int, position: int, event: object) -> RecordedEvent:
    return RecordedEvent(stream_id, version, position, "t", 1, event, {}, 0.0)


def test_dur2_double_applied_catches_a_doubled_leg_and_a_credit_with_a_refund() -> None:
    events = [
        _recorded("account-a", 1, 1, Debited(transfer_id="t1", target="b", amount=5)),
        _recorded("account-a", 2, 2, Debited(transfer_id="t1", target="b", amount=5)),
        _recorded("account-b", 1, 3, Credited(transfer_id="t2", source="a", amount=5)),
        _recorded("account-a", 3, 4, Refunded(transfer_id="t2", amount=5, reason="x")),
        _recorded("account-a", 4, 5, Debited(transfer_id="t3", target="b", amount=5)),
        _recorded("account-b", 2, 6, Credited(transfer_id="t3", source="a", amount=5)),
    ]
    assert double_applied(events) == ["t1", "t2"]


def test_rm3_digest_mismatches_catches_a_read_model_that_differs_from_the_fold() -> None:
    events = [
        _recorded("account-a", 1, 1, AccountOpened(owner="o")),
        _recorded("account-a", 2, 2, Deposited(amount=10)),
        _recorded("account-a", 3, 3, Deposited(amount=5)),
    ]
    lines: list[dict[str, object]] = [
        {"digest": 2, "hash": balances_hash({"a": 10})},
        {"digest": 3, "hash": balances_hash({"a": 10})},  # missed the deposit at 3
    ]
    assert digest_mismatches(lines, events) == [3]


def test_dur3_prefix_violations_catches_a_torn_and_a_longer_copy(tmp_path: Path) -> None:
    def log(path: Path, rows: Sequence[tuple[object, ...]]) -> Path:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE events (position, stream_id, version, event_type, data)")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
        conn.close()
        return path

    rows = [(p, "s", p, "t", b"%d" % p) for p in range(1, 5)]
    live = log(tmp_path / "live.db", rows)
    assert prefix_violations(log(tmp_path / "prefix.db", rows[:2]), live) == []
    torn = log(tmp_path / "torn.db", [rows[0], (2, "s", 2, "t", b"other")])
    assert prefix_violations(torn, live) == ["position 2"]
    longer = log(tmp_path / "longer.db", [*rows, (5, "s", 5, "t", b"5")])
    assert prefix_violations(longer, live) == ["copy has 5 events, the live log 4"]
