"""DUR-2: a bank child with transfers (the saga) and snapshots dies (`exit`, like kill -9)
at each named fault point on its 1st and 7th hit (100th in soak); the restart is checked."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
import pytest

from actors import CommandResult, open_system
from demo.bank import (
    Account,
    Balances,
    Deposit,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdraw,
)
from store import faults
from store.faults import EXIT_CODE
from tests.reliability import oracle
from tests.reliability._report import Report, size
from tests.reliability.test_durability import run_child, violations

POINTS = sorted(faults.POINTS)
NTH = [1, 7, 100] if size(0, 1) else [1, 7]


async def restart_and_check(db: Path, raw: bytes) -> dict[str, int]:
    """Reopen `db` after the child died, resend the commands whose reply was lost, let
    the saga settle, and count the violations of each DUR-2 promise."""
    acks, _ = oracle.read_lines(raw)
    sent = oracle.sent_commands(raw)
    found = violations(acks, db)
    committed_before = {cmd for *_, cmd in oracle.stored_events(db) if cmd is not None}
    replied = {str(a["cmd_id"]) for a in acks}
    figures = {key: len(value) for key, value in found.items()}
    figures["indeterminate_committed"] = figures["duplicate_retry_failures"] = 0
    async with open_system(str(db)) as system:
        accounts, transfers = system.aggregates(Account), system.aggregates(Transfer)
        saga = await system.run_process_manager(TransferProcess())
        balances = await system.project(Balances())
        for cmd_id, record in sent.items():
            if cmd_id in replied:
                continue
            ask: Awaitable[CommandResult[Any]]
            if "transfer" in record:
                source, target, amount = cast(list[Any], record["transfer"])
                request = RequestTransfer(cmd_id, str(source), str(target), int(amount))
                ask = transfers.ask(cmd_id, request, command_id=cmd_id)
            else:
                kind = "deposit" if "deposit" in record else "withdraw"
                account, cents = cast(list[Any], record[kind])
                command = Deposit(account, cents) if kind == "deposit" else Withdraw(account, cents)
                ask = accounts.ask(str(account), command, command_id=cmd_id)
            result: CommandResult[Any] | None
            try:
                result = await ask
            except Exception:  # noqa: BLE001 - a rejection is a result too
                result = None
            if cmd_id in committed_before:
                figures["indeterminate_committed"] += 1
                figures["duplicate_retry_failures"] += result is None or not result.duplicate
        while True:  # settle: the saga has handled everything, and wrote nothing more
            head = await system.store.last_position()
            await saga.wait_for(head, timeout=30)
            if await system.store.last_position() == head:
                break
        await balances.wait_for(head, timeout=30)
        events = oracle.stored_events(db)
        expected = oracle.fold_balances(events)
        figures["rm1_mismatch"] = int(balances.view.balances != expected)
        states = {a: (await accounts.state(a)).balance for a in sorted(expected)}
        figures["state_mismatch"] = int(states != expected)
    double, never = oracle.saga_violations(events)
    figures["double_applied"] = len(double)
    figures["never_applied"] = len(never)
    figures["money"] = len(oracle.money_violations(events))
    figures["duplicated_commands"] = len(oracle.partial_commands(db))
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
async def test_dur2_crash_at_named_points(tmp_path: Path, point: str, report: Report) -> None:
    passed = 0
    hit = 0
    totals: dict[str, int] = {}
    for nth in NTH:
        db = tmp_path / f"{nth}.db"
        argv = ["--db", str(db), "--seed", str(nth), "--accounts", "8", "--clients", "4"]
        argv += ["--digest-interval", "0.05"]
        if point != "after_commit_before_reply":
            argv += ["--transfers", "0.3", "--snapshot-every", "3"]
        # else only client appends commit, so the dying commit holds client commands
        argv += ["--faults", f"{point}:exit:{nth}"]
        with anyio.fail_after(90):
            raw, status = await run_child(argv, size(3_000, 20_000), stderr=tmp_path / "err")
            figures = await restart_and_check(db, raw)
        errors = (tmp_path / "err").read_text()[-3000:]
        # It ended by itself, without a traceback: the fault fired (else the combo would be
        # vacuous). The status is 137, or 255 when the event loop's child watcher lost it.
        assert status in (EXIT_CODE, 255), (point, nth, status, errors)
        assert "Traceback" not in errors, (point, nth, errors)
        hit += 1
        for key, value in figures.items():
            totals[key] = totals.get(key, 0) + value
        bad = {k: v for k, v in figures.items() if v and k != "indeterminate_committed"}
        passed += not bad
        assert bad == {}, (point, nth, bad)
    if point == "after_commit_before_reply":
        # Each dying commit held client commands whose callers got no reply.
        assert totals["indeterminate_committed"] >= len(NTH)
    report.record(
        "DUR-2",
        point=point,
        combos_passing=f"{passed}/{len(NTH)}",
        fault_hit=f"{hit}/{len(NTH)}",
        committed_but_never_applied=totals["never_applied"],
        double_applied=totals["double_applied"],
        indeterminate_committed=totals["indeterminate_committed"],
        lost=totals["lost"],
    )
    report.record("RM-1", variant="A", point=point, mismatches=totals["rm1_mismatch"])
    report.record("RM-3", point=point, mismatches=totals["rm1_mismatch"] + totals["state_mismatch"])


def test_dur2_checkers_see_a_double_debit_and_a_transfer_never_finished() -> None:
    """The saga checkers on broken logs: a debit stored twice (double effect, money
    not conserved) and a requested transfer that never ended."""

    def leg(position: int, stream: str, kind: str, amount: int, transfer: str = "t1") -> Any:
        data = msgspec.msgpack.encode({"transfer_id": transfer, "amount": amount})
        return (position, stream, position, kind, data, None)

    requested = (1, "transfer-t1", 1, "bank.transfer_requested", b"\x80", None)
    completed = (5, "transfer-t1", 2, "bank.transfer_completed", b"\x80", None)
    good = [
        requested,
        leg(2, "account-a", "bank.debited", 5),
        leg(3, "account-b", "bank.credited", 5),
        completed,
    ]
    assert oracle.saga_violations(good) == ([], [])
    assert oracle.money_violations(good) == []
    doubled = [*good, leg(6, "account-a", "bank.debited", 5)]
    assert oracle.saga_violations(doubled) == (["t1"], [])
    assert oracle.money_violations(doubled) == ["debited - credited - refunded = 5"]
    assert oracle.saga_violations(good[:3]) == ([], ["t1"])
