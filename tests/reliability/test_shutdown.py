"""Shutdown (SHD-1, SHD-2): a shutdown under load answers or refuses every command,
loses no acknowledged one and acknowledges nothing after it returned; a shutdown whose
grace runs out returns on time and leaves a consistent file."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import ActorSystem, ShuttingDown, open_system
from demo.bank import Account, Balances, Deposit, OpenAccount
from store import open_store
from tests.actors.domain import Counter, Increment
from tests.actors.support import GatedStore
from tests.reliability._report import Report, size, time_limit
from tests.reliability.oracle import (
    digest_mismatches,
    integrity,
    log_gaps,
    lost_acks,
    partial_commands,
    whole_log,
)
from tests.reliability.test_durability import run_child, stored_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]

ACCOUNTS = 16
CLIENTS = 64


async def _shutdown_under_load(path: Path, wanted: int) -> dict[str, Any]:
    """64 clients deposit on 16 accounts with a live projection; after `wanted` acks,
    `shutdown(grace=5)`; then the file is reopened and compared with the acks."""
    acked: set[str] = set()
    acked_after_close = refused = other = 0
    closed = False
    enough = anyio.Event()

    async def client(router: Any, c: int) -> None:
        nonlocal acked_after_close, refused, other
        n = 0
        while True:
            command_id = f"d{c}:{n}"
            account = f"{c % ACCOUNTS}"
            try:
                await router.ask(
                    account, Deposit(account_id=account, amount=1), command_id=command_id
                )
            except ShuttingDown:
                refused += 1
                return
            except Exception:  # noqa: BLE001 - counted: must stay 0
                other += 1
                return
            acked.add(command_id)
            acked_after_close += closed
            if len(acked) >= wanted:
                enough.set()
            n += 1

    with anyio.fail_after(120):
        async with open_system(path) as system:
            accounts = system.aggregates(Account)
            for i in range(ACCOUNTS):
                await accounts.ask(f"{i}", OpenAccount(account_id=f"{i}", owner="o"))
            balances = await system.project(Balances())
            async with anyio.create_task_group() as clients:
                for c in range(CLIENTS):
                    clients.start_soon(client, accounts, c)
                await enough.wait()
                started = time.perf_counter()
                drained = await system.shutdown(grace=5)
                seconds = time.perf_counter() - started
                closed = True
                head = await system.store.last_position()
                await balances.wait_for(head, timeout=10)
                lag = head - balances.position
                stats = system.statistics()
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    async with open_system(path) as reopened:
        reopened.aggregates(Account)  # registers the bank's event types for the read
        stored = {r.command_id for r in await whole_log(reopened.store) if r.command_id}
    deposits = {cid for cid in stored if cid.startswith("d")}
    lost = len(acked - deposits)
    unacked_applied = len(deposits - acked)
    return {
        "clients": CLIENTS,
        "acked": len(acked),
        "refused_with_shutting_down": refused,
        "other_errors": other,
        "accepted_unanswered": CLIENTS - refused - other,
        "lost_acks": lost,
        "applied_not_acked": unacked_applied,
        "acked_after_close": acked_after_close,
        "drained_in_grace": drained,
        "shutdown_ms": round(seconds * 1e3, 1),
        "projection_lag_at_exit": lag,
        "queued_at_exit": stats.queued,
        "wal_bytes_after_close": wal_bytes,
    }


def check_shutdown(figures: dict[str, Any]) -> list[str]:
    """Violations of SHD-1: a client that did not end on `ShuttingDown` (hung or another
    error), an ack lost, a command stored but never acked, an ack after `shutdown`
    returned, a projection behind the head, commands still queued, a WAL left behind."""
    found = [
        f"{name} {figures[name]}"
        for name in (
            "other_errors",
            "accepted_unanswered",
            "lost_acks",
            "applied_not_acked",
            "acked_after_close",
            "projection_lag_at_exit",
            "queued_at_exit",
            "wal_bytes_after_close",
        )
        if figures[name]
    ]
    if not figures["drained_in_grace"]:
        found.append("the mailboxes did not drain within the grace")
    return found


async def test_shd1_shutdown_under_load_answers_every_accepted_command(
    tmp_path: Path, report: Report
) -> None:
    figures = await _shutdown_under_load(tmp_path / "shd1.db", size(2_000, 20_000))
    report.record("SHD-1", **figures)
    assert check_shutdown(figures) == []


async def test_shd1_the_checker_catches_a_shutdown_that_returns_before_the_drain(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: shutdown stops accepting and returns at once; queued commands
    # are still being decided and acknowledged after it returned.
    async def hasty(self: ActorSystem, *, grace: float | None = None) -> bool:
        self._registry.accepting = False
        return True

    monkeypatch.setattr(ActorSystem, "shutdown", hasty)
    violations = check_shutdown(await _shutdown_under_load(tmp_path / "shd1.db", 2_000))
    report.record("SHD-1", broken_variant="returns before the drain", caught=len(violations))
    assert any(v.startswith("acked_after_close") for v in violations)


def check_sigterm_run(lines: list[dict[str, object]], code: int, db: Path) -> list[str]:
    """Violations of SHD-1's SIGTERM variant: the child must exit 0 after a drained
    shutdown; every command it sent must end acknowledged or refused (none failed or
    unanswered); no ack may follow the shutdown's return; every ack must be in the file,
    whole and without gaps; the last digest must be the fold of the whole file; the WAL
    must be empty after the exit."""
    found: list[str] = []
    if code != 0:
        found.append(f"exit code {code}")
    kinds = [next(iter(line)) for line in lines]
    if "shutdown" not in kinds or not lines[kinds.index("shutdown")]["shutdown"]:
        found.append("no drained shutdown reported")
    else:
        after = kinds[kinds.index("shutdown") :].count("ack")
        if after:
            found.append(f"{after} acks after shutdown returned")
    sent = {line["send"] for line in lines if "send" in line}
    answered = {line.get("ack", line.get("refused")) for line in lines} - {None}
    if sent - answered:
        found.append(f"{len(sent - answered)} commands unanswered or failed")
    if "done" not in kinds:
        found.append("the child did not end cleanly")
    found += [f"lost {a}" for a in lost_acks(lines, db)]
    found += partial_commands(db) + log_gaps(db) + integrity(db)
    digests = [line for line in lines if "digest" in line]
    with sqlite3.connect(db) as conn:
        head = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    conn.close()
    if not digests or digests[-1]["digest"] != head:
        found.append(f"the read model ended at {digests[-1:]}, not at the head {head}")
    wal = Path(f"{db}-wal")
    if wal.exists() and wal.stat().st_size:
        found.append(f"WAL of {wal.stat().st_size} bytes left after exit")
    return found


async def test_shd1_sigterm_to_a_child_with_a_handler_drains_and_exits_cleanly(
    tmp_path: Path, report: Report
) -> None:
    db = tmp_path / "sigterm.db"
    rounds = size(3, 20)
    violations: list[str] = []
    acked = refused = 0
    mismatches = 0
    for round_ in range(rounds):
        lines, code = await run_child(
            db,
            seed=round_,
            kill_after_acks=None,
            sigterm_after_acks=200 + 97 * round_,
            extra=("--accounts", "16", "--clients", "64", "--on-sigterm"),
        )
        violations += check_sigterm_run(lines, code, db)
        mismatches += len(digest_mismatches(lines, await stored_events(db)))
        acked += sum("ack" in line for line in lines)
        refused += sum(line.get("error") == "ShuttingDown" for line in lines)
    report.record(
        "SHD-1",
        setup="SIGTERM to a child with a handler",
        rounds=rounds,
        acked=acked,
        refused_with_shutting_down=refused,
        digest_mismatches=mismatches,
        violations=len(violations),
    )
    assert violations == []
    assert mismatches == 0
    assert refused > 0  # the signal came while commands were in flight


async def test_shd1_the_sigterm_checker_catches_a_child_without_a_handler(
    tmp_path: Path, report: Report
) -> None:
    # The broken variant: no handler, so SIGTERM ends the process at once.
    db = tmp_path / "sigterm.db"
    lines, code = await run_child(
        db,
        seed=0,
        kill_after_acks=None,
        sigterm_after_acks=200,
        extra=("--accounts", "16", "--clients", "64"),
    )
    violations = check_sigterm_run(lines, code, db)
    report.record("SHD-1", broken_variant="no SIGTERM handler", caught=len(violations))
    assert f"exit code {-signal.SIGTERM}" in violations


async def _stuck_shutdown() -> dict[str, Any]:
    """A command stuck in its append, 7 queued behind it, then `shutdown(grace=1)`."""
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)  # its appends wait until the gate opens: a stuck handler
        outcomes: list[str] = []
        async with open_system(gated.as_store()) as system:
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
                for i in range(1, 8):
                    tg.start_soon(send, i)
                await anyio.wait_all_tasks_blocked()
                started = time.perf_counter()
                drained = await system.shutdown(grace=1.0)
                seconds = time.perf_counter() - started
                refused_after = 0
                try:
                    await counters.ask("stuck", Increment(by=1))
                except ShuttingDown:
                    refused_after = 1
                gated.gate.set()  # the stuck append completes; what queued is answered
            queued = system.statistics().queued
        stored = await inner.stream_version("counter-stuck")
    return {
        "shutdown_ms": round(seconds * 1e3, 1),
        "drained_in_grace": drained,
        "new_ask_refused": refused_after,
        "outcomes": {k: outcomes.count(k) for k in ("ok", "refused")},
        "answered": f"{len(outcomes)}/8",
        "divergence": int(outcomes.count("ok") != stored),
        "queued_after": queued,
    }


def check_stuck_shutdown(figures: dict[str, Any]) -> list[str]:
    """Violations of SHD-2: `shutdown(grace=1)` must return False within 1.0-1.5 s, a
    new ask must get `ShuttingDown`, every command must be answered or refused, and
    what was acknowledged must be exactly what is stored."""
    found: list[str] = []
    if figures["drained_in_grace"] or not 1_000 <= figures["shutdown_ms"] <= 1_500:
        found.append(
            f"shutdown returned {figures['drained_in_grace']} after {figures['shutdown_ms']} ms"
        )
    if not figures["new_ask_refused"]:
        found.append("a new ask during shutdown was not refused")
    if figures["answered"] != "8/8" or figures["divergence"] or figures["queued_after"]:
        found.append(
            f"answered {figures['answered']}, divergence {figures['divergence']},"
            f" queued after {figures['queued_after']}"
        )
    return found


async def test_shd2_shutdown_whose_grace_runs_out_returns_on_time(report: Report) -> None:
    figures = await _stuck_shutdown()
    report.record("SHD-2", **figures)
    assert check_stuck_shutdown(figures) == []


async def test_shd2_the_checker_catches_a_shutdown_that_ignores_its_grace(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: the grace passed in is ignored; the system's own (here 3 s)
    # applies, so the shutdown returns late.
    shutdown = ActorSystem.shutdown

    async def deaf(self: ActorSystem, *, grace: float | None = None) -> bool:
        return await shutdown(self, grace=3.0)

    monkeypatch.setattr(ActorSystem, "shutdown", deaf)
    violations = check_stuck_shutdown(await _stuck_shutdown())
    report.record("SHD-2", broken_variant="grace ignored", caught=len(violations))
    assert any(v.startswith("shutdown returned") for v in violations)
