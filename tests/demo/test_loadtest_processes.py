"""`loadtest --processes N`: worker processes on one store (a SQLite file, PostgreSQL),
their combined JSON report, every read model against a replay of the store, the store
against the acknowledgements; and the refusals of bad values."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from demo.__main__ import main
from demo._loadtest import LoadOptions
from demo._loadtest._processes import _child_options, worker_cpus
from tests.demo._acks import missing_acks, read_acks, version_gaps
from tests.demo.test_postgres import stored
from tests.demo.test_postgres import version_gaps as postgres_version_gaps

# Few commands in flight over many accounts: conflicts happen, but no command runs out
# of attempts (an error), so every command is acknowledged.
SMALL = ["--aggregates", "200", "--commands", "600", "--concurrency", "8", "--seed", "5"]


def check_report(report: dict[str, Any], commands: int) -> None:
    assert report["processes"] == 2
    assert [p["index"] for p in report["per_process"]] == [0, 1]
    assert report["commands"] == report["acknowledged"] == commands
    assert (report["errors"], report["rejected"], report["error_types"]) == (0, 0, {})
    assert sum(p["acknowledged"] for p in report["per_process"]) == commands
    assert sorted(p["commands"] for p in report["per_process"]) == [commands // 2] * 2
    for process in report["per_process"]:
        assert process["errors"] == 0
        assert process["projection_ok"] is True
        assert process["cpu_seconds"] > 0
        assert 0 < process["in_transaction"] < 1  # its writer's share of the run
        assert set(process["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert report["conflicts"] == sum(p["conflicts"] for p in report["per_process"])
    assert report["projection_ok"] is True
    assert report["projection_failed"] == []
    assert report["store_matches_acks"] is True
    assert report["seconds"] > 0
    assert report["commands_per_s"] > 0
    lag = report["cross_process_lag_ms"]
    assert set(lag) == {"p50", "p95", "p99", "max"}
    assert report["cross_process_samples"] > 0


def unpinned() -> list[int] | None:
    """The CPUs a worker left to the OS may use: this process's."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


@pytest.mark.slow
def test_two_processes_on_a_sqlite_file_share_the_accounts_and_agree_with_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, acks = tmp_path / "load.db", tmp_path / "acks.tsv"
    argv = ["loadtest", "--processes", "2", *SMALL, "--db", str(db), "--ack-log", str(acks)]
    assert main([*argv, "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    check_report(report, 600)
    assert (report["backend"], report["db"]) == ("sqlite", str(db))
    # Not pinned (the default): each worker may run on any CPU this process may.
    assert report["cpus"] is None
    assert [process["cpus"] for process in report["per_process"]] == [unpinned()] * 2
    logged = read_acks(acks)
    assert len(logged) == 200 + 600  # the openings (by the parent), then the deposits
    assert missing_acks(logged, db) == []
    assert len({position for _, _, position in logged}) == len(logged)
    assert version_gaps(db) == []


@pytest.mark.slow
def test_two_processes_with_accounts_of_their_own_never_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "load.db"
    argv = ["loadtest", "--processes", "2", *SMALL, "--db", str(db), "--own-accounts"]
    pin = hasattr(os, "sched_setaffinity")  # Linux: each worker on a CPU of its own
    assert main([*argv, "--concurrency", "50", *(["--pin"] if pin else []), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    check_report(report, 600)
    assert report["own_accounts"] is True
    placed = worker_cpus(LoadOptions(processes=2, db=str(db), pin=pin))
    assert report["cpus"] == placed
    ran = [process["cpus"] for process in report["per_process"]]
    assert ran == ([unpinned()] * 2 if placed is None else [[cpu] for cpu in placed])
    assert report["conflicts"] == 0
    assert version_gaps(db) == []


@pytest.mark.slow
def test_two_processes_without_a_db_share_one_temporary_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["loadtest", "--processes", "2", *SMALL, "--no-projection"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "on 2 processes" in out
    assert "store balances equal the acknowledged deposits: True" in out


@pytest.mark.slow
@pytest.mark.anyio
async def test_two_processes_on_postgresql_share_the_accounts_and_agree_with_the_store(
    postgres_url: str, postgres_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acks = tmp_path / "acks.tsv"
    argv = ["loadtest", "--processes", "2", *SMALL, "--db", postgres_url, "--json"]
    capsys.readouterr()
    status = await anyio.to_thread.run_sync(main, [*argv, "--ack-log", str(acks)])
    out, _ = capsys.readouterr()
    assert status == 0
    report = json.loads(out)
    check_report(report, 600)
    assert report["backend"] == "postgresql"
    rows = await stored(postgres_schema)
    logged = read_acks(acks)
    assert len(logged) == 200 + 600
    assert [ack for ack in logged if ack not in rows] == []
    assert await postgres_version_gaps(postgres_schema) == []


def test_pinned_workers_take_the_cpus_this_process_may_use_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 1, 3}, raising=False)
    two, four = (LoadOptions(processes=n, db="x.db", pin=True) for n in (2, 4))
    assert worker_cpus(two) == [1, 3]  # the CPUs this process may use, in order
    assert worker_cpus(four) == [1, 3, 5, 1]  # more workers than CPUs: round robin
    assert worker_cpus(dataclasses.replace(two, pin=False)) is None  # the default
    child = msgspec.json.decode(_child_options(two, 1, 3), type=LoadOptions)
    assert (child.cpu, child.pin, child.processes) == (3, False, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes must be an integer from 1 to 64, not 0"),
        (["--processes", "-1"], "--processes must be an integer from 1 to 64, not -1"),
        (["--processes", "x"], "--processes must be an integer from 1 to 64, not 'x'"),
        (["--processes", "65"], "--processes must be an integer from 1 to 64, not 65"),
        (["--processes", "2", "--db", ":memory:"], "not --db :memory:"),
        (["--processes", "2", "--mix", "bank"], "--processes 2 runs the deposit mix only"),
        (["--processes", "4", "--commands", "3"], "give at least 4 commands, not 3"),
        (["--processes", "2", "--sweep"], "--sweep runs in one process: drop --processes"),
    ],
)
def test_bad_process_counts_are_refused_with_a_message_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", *argv]) == 2
    assert message in capsys.readouterr().err


def test_one_process_reports_processes_1_on_the_in_process_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["loadtest", "--processes", "1", "--aggregates", "5", "--commands", "20"]
    assert main([*argv, "--concurrency", "4", "--db", ":memory:", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["processes"] == 1
    assert "per_process" not in report
    assert report["acknowledged"] == 20
