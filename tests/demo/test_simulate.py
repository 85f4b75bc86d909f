"""`python -m demo simulate` at small scale: every invariant holds, over one run and over
a file holding two; the same seed sends the same commands; and the checks fail, with
a non-zero exit status, on a store corrupted behind the bank's back."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import open_system
from demo.__main__ import main
from demo._simulate import (
    SimOptions,
    SimReport,
    SimulationError,
    check_store,
    simulate,
)
from demo._simulate._settling import _settled
from demo.bank import Account, Balances, Credited, OpenAccount, TransferProcess, Withdrawn
from store import ANY

ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = {
    "settled",
    "money_conserved",
    "no_negative_balance",
    "orders_final",
    "transfers_ended",
    "read_models_rebuild",
}
SMALL = ["--customers", "8", "--steps", "300", "--seed", "3"]


def run_json(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> tuple[int, Any]:
    capsys.readouterr()  # only what the simulation prints (not, say, a setup's log lines)
    status = main(["simulate", "--db", str(db), *SMALL, "--json", *extra])
    out, err = capsys.readouterr()
    assert err == ""  # not a terminal: no progress line, and no log line at warning
    return status, json.loads(out)


def invariants(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {inv["name"]: inv for inv in report["invariants"]}


def failing(report: dict[str, Any]) -> set[str]:
    return {name for name, inv in invariants(report).items() if not inv["ok"]}


def test_a_small_simulation_holds_every_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = run_json(capsys, tmp_path / "sim.db")
    assert status == 0
    assert report["ok"] is True
    checks = invariants(report)
    assert set(checks) == INVARIANTS
    assert failing(report) == set()
    assert report["steps"] == 300
    assert report["store_before"] == 0
    assert report["store_head"] == report["events"] == sum(report["events_by_type"].values())
    assert report["errors"] == 0
    answered = report["acknowledged"] + report["rejected"] + report["errors"]
    assert answered == report["commands"] == sum(report["commands_by_type"].values())
    assert report["commands_by_type"]["OpenAccount"] == 8
    events = report["events_by_type"]
    # Every order and every transfer the customers asked for was checked, and ended.
    assert checks["orders_final"]["checked"] == events["shop.order_requested"] > 0
    assert checks["transfers_ended"]["checked"] == events["bank.transfer_requested"] > 0
    finals = sum(events.get(f"shop.order_{s}", 0) for s in ("delivered", "rejected", "cancelled"))
    assert finals == events["shop.order_requested"]
    # The couriers delivered what was shipped; the shipping saga shipped what was paid.
    assert (
        events["shop.order_delivered"] == events["shop.order_shipped"] == events["shop.order_paid"]
    )
    assert events["shop.order_delivered"] > 0
    assert checks["read_models_rebuild"]["checked"] == 6
    assert all(pm["parked"] == 0 for pm in report["process_managers"].values())


def test_a_second_run_on_the_same_file_is_checked_with_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sim.db"
    first_status, first = run_json(capsys, db)
    second_status, second = run_json(capsys, db)
    assert (first_status, second_status) == (0, 0)
    assert second["store_before"] == first["store_head"]
    assert second["store_head"] == first["store_head"] + second["events"]
    # The same seed sends the same commands, under ids of the run's own.
    assert second["commands_digest"] == first["commands_digest"]
    orders = sum(r["events_by_type"]["shop.order_requested"] for r in (first, second))
    assert invariants(second)["orders_final"]["checked"] == orders
    accounts = sum(r["events_by_type"]["bank.account_opened"] for r in (first, second))
    assert invariants(second)["no_negative_balance"]["checked"] == accounts == 16
    assert second["ok"] is True


async def test_the_same_seed_sends_the_same_commands() -> None:
    async def once(seed: int) -> SimReport:
        with anyio.fail_after(30):
            return await simulate(SimOptions(db=":memory:", seed=seed, customers=6, steps=200))

    first, again, other = await once(11), await once(11), await once(12)
    assert [first.ok, again.ok, other.ok] == [True, True, True]
    assert again.commands_digest == first.commands_digest
    assert again.commands_by_type == first.commands_by_type
    assert other.commands_digest != first.commands_digest
    assert sum(first.commands_by_type.values()) == 200 + 36  # the customers', the restocks


def test_money_from_nowhere_breaks_conservation_and_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sim.db"
    assert run_json(capsys, db)[0] == 0

    async def corrupt() -> None:
        async with open_system(str(db)) as system:
            system.aggregates(Account)  # registers the bank's events
            # A credit for a transfer that never debited anyone: money from nowhere.
            bogus = Credited(transfer_id="bogus", source="nobody", amount=1_234)
            await system.store.append("account-r0.c0", [bogus], expected_version=ANY)

    anyio.run(corrupt)
    status, report = run_json(capsys, db)
    assert status == 1
    assert report["ok"] is False
    assert failing(report) == {"money_conserved"}
    money = invariants(report)["money_conserved"]
    # The unmatched transfer, the total off by 1,234, and -1,234 in flight.
    assert money["failures"] == 3
    examples = "\n".join(money["examples"])
    assert "in flight after settling: -1234 cents" in examples
    assert "transfer 'bogus': debited 0 in 0 event(s), credited or refunded 1234" in examples
    assert "(+1234)" in examples


def test_an_overdrawn_account_breaks_no_negative_balance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sim.db"
    assert run_json(capsys, db)[0] == 0

    async def overdraw() -> None:
        async with open_system(str(db)) as system:
            accounts = system.aggregates(Account)
            state = await accounts.state("r0.c1")
            stolen = Withdrawn(amount=state.balance + 1)
            await system.store.append("account-r0.c1", [stolen], expected_version=ANY)

    anyio.run(overdraw)
    status = main(["simulate", "--db", str(db), *SMALL])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL no_negative_balance" in out
    assert "account 'r0.c1' went to -1 cents at version" in out
    assert "account 'r0.c1' holds -1 cents" in out
    assert "INVARIANTS BROKEN: no_negative_balance" in out
    assert "FAIL money_conserved" not in out


async def test_a_live_read_model_that_drifted_from_the_log_is_reported(tmp_path: Path) -> None:
    db = str(tmp_path / "sim.db")
    with anyio.fail_after(30):
        report = await simulate(SimOptions(db=db, customers=4, steps=80))
        assert report.ok
        async with open_system(db) as system:
            system.aggregates(Account)
            balances = await system.project(Balances())
            head = await system.store.last_position()
            await balances.wait_for(head)
            balances.view.balances["r0.c2"] += 1  # what a buggy apply would leave
            checks, _ = await check_store(system, [balances], head=head)
    found = {inv.name: inv for inv in checks}
    rebuild = found["read_models_rebuild"]
    assert not rebuild.ok
    assert rebuild.failures == 2
    assert "bank.balances: the live view differs from a rebuild from 0" in rebuild.examples
    assert any("account 'r0.c2' shows" in e for e in rebuild.examples)
    assert all(inv.ok for name, inv in found.items() if name != "read_models_rebuild")


async def test_progress_goes_to_a_terminal_as_one_rewritten_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    with anyio.fail_after(30):
        report = await simulate(SimOptions(db=":memory:", customers=3, steps=60), stderr=terminal)
    text = terminal.getvalue()
    assert report.ok
    assert text.startswith("\r")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    last = text.rsplit("\r", 1)[1]
    assert f"  {report.steps:,} commands (" in last  # the customers', at the end
    assert "sagas in flight" in last
    assert "read model lag" in last


def test_options_that_cannot_run_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--db", ":memory:", "--customers", "0"]) == 2
    assert "--customers must be an integer in 1..100000, not 0" in capsys.readouterr().err
    assert main(["simulate", "--db", ":memory:", "--steps", "0"]) == 2
    assert "--steps must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["simulate", "--db", str(tmp_path / "missing" / "sim.db")]) == 2
    assert "its directory does not exist" in capsys.readouterr().err
    with pytest.raises(SimulationError, match="exactly one of --steps and --duration"):
        SimOptions(steps=None, duration=None)
    with pytest.raises(SimulationError, match="--duration must be > 0 seconds"):
        SimOptions(steps=None, duration=-1.0)


async def test_a_duration_bounds_the_run_instead_of_steps() -> None:
    with anyio.fail_after(30):
        report = await simulate(SimOptions(db=":memory:", customers=3, steps=None, duration=0.2))
    assert report.ok
    assert report.duration == 0.2
    assert sum(report.commands_by_type.values()) == report.steps + 36  # and the restocks


@pytest.mark.slow
def test_python_m_demo_simulate_prints_one_json_object(tmp_path: Path) -> None:
    db = tmp_path / "sim.db"
    done = subprocess.run(
        [sys.executable, "-m", "demo", "simulate", "--db", str(db), *SMALL, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)  # one object, nothing else on stdout
    assert report["ok"] is True
    assert set(invariants(report)) == INVARIANTS
    assert report["db"] == str(db)
    assert db.exists()


@pytest.mark.slow
def test_no_arguments_run_a_short_simulation_on_demo_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulate: 50 customers, 2,000 steps, seed 1, db demo.db\n")
    assert "every invariant holds" in out
    assert (tmp_path / "demo.db").exists()


async def test_a_process_manager_that_stopped_short_fails_settled_and_is_named() -> None:
    with anyio.fail_after(30):
        async with open_system(":memory:") as system:
            accounts = system.aggregates(Account)
            transfers = await system.run_process_manager(TransferProcess())
            await transfers.stop()
            await accounts.ask("a1", OpenAccount("a1", "ada"))  # the head moves past it
            settled = await _settled(system, [transfers], timeout=30)
    assert not settled.ok
    assert settled.name == "settled"
    assert settled.summary.startswith("a process manager stopped: process manager 'bank.transfers'")
    assert settled.examples == ("bank.transfers at 0 of 1 (0 in flight)",)
