"""`simulate --processes N`: worker processes on one store (a SQLite file, PostgreSQL)
hold every invariant and send the commands one process would; bad values are refused
by name; and a cancelled run leaves no worker behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from demo.__main__ import main
from demo._simulate import SimOptions, simulate

SMALL = ["--customers", "8", "--steps", "300", "--seed", "3"]


def check_two(report: dict[str, Any]) -> None:
    assert report["ok"] is True, [i for i in report["invariants"] if not i["ok"]]
    assert report["processes"] == 2
    assert (report["kills"], report["restarts"], report["duplicates"]) == (0, 0, 0)
    assert [w["index"] for w in report["workers"]] == [0, 1]
    assert [w["customers"] for w in report["workers"]] == [4, 4]
    assert sum(w["commands"] for w in report["workers"]) == report["steps"] == 300
    assert all(w["read_models_ok"] for w in report["workers"])
    # Each partition of each process manager is held by at most one worker: its lease
    # (at the end one may be between two workers, handed over to even them out; the
    # settled invariant says every one was handled). The bank's and the shop's come in
    # one partition per process, the couriers in one.
    assert report["partitions"] == 2
    held = sorted(
        (name, int(index))
        for w in report["workers"]
        for entry in w["held"]
        for name, indexes in [entry[:-1].split("[")]
        for index in indexes.split(",")
    )
    expected = sorted(
        (name, index)
        for name in report["process_managers"]
        for index in range(1 if name == "demo.simulate.couriers" else 2)
    )
    assert len(set(held)) == len(held)
    assert set(held) <= set(expected)
    assert report["takeovers"] >= len(held)


@pytest.mark.slow
def test_two_processes_on_a_sqlite_file_hold_every_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--db", str(tmp_path / "one.db"), *SMALL, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["partitions"] == 1  # one process: each process manager whole
    argv = ["simulate", "--processes", "2", "--db", str(tmp_path / "two.db"), *SMALL, "--json"]
    assert main(argv) == 0
    two = json.loads(capsys.readouterr().out)
    check_two(two)
    assert two["backend"] == "sqlite"
    # The same customers send the same commands, in one process or in two.
    assert two["commands_digest"] == one["commands_digest"]
    assert two["commands_by_type"] == one["commands_by_type"]


@pytest.mark.slow
def test_two_processes_without_a_db_share_a_temporary_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--processes", "2", *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulate: 8 customers, 300 steps, seed 3, db temporary\n")
    assert "2 worker processes" in out
    assert "every invariant holds" in out


@pytest.mark.slow
async def test_two_processes_on_postgresql_hold_every_invariant(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--processes", "2", "--db", postgres_url, *SMALL, "--json"]
    capsys.readouterr()
    status = await anyio.to_thread.run_sync(main, argv)
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    check_two(report)
    assert report["backend"] == "postgresql"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes must be an integer from 1 to 64, not 0"),
        (["--processes", "x"], "--processes must be an integer from 1 to 64, not 'x'"),
        (["--processes", "65"], "--processes must be an integer from 1 to 64, not 65"),
        (["--processes", "2", "--db", ":memory:"], "not --db :memory:"),
        (
            ["--processes", "4", "--customers", "3", "--db", "never-made.db"],
            "give at least 4 --customers, not 3",
        ),
        (["--chaos"], "--chaos needs --processes 2 or more"),
        (["--chaos-interval", "0"], "--chaos-interval must be a number of seconds > 0, not 0.0"),
        (["--chaos-interval", "-1"], "--chaos-interval must be a number of seconds > 0"),
        (["--chaos-interval", "inf"], "--chaos-interval must be a number of seconds > 0"),
        (["--chaos-interval", "nan"], "--chaos-interval must be a number of seconds > 0"),
        (["--lease-ttl", "0.01"], "--lease-ttl must be a number of seconds from 0.05 to 3600"),
        (["--partitions", "0"], "--partitions: partitions must be an int from 1 to 1024, not 0"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--db", ":memory:", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_chaos_interval_that_is_no_number_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--chaos-interval", "soon"])
    assert exited.value.code == 2
    assert "argument --chaos-interval: invalid float value: 'soon'" in capsys.readouterr().err


def children() -> set[int]:
    """This process's live child processes (Linux)."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listed:
            found |= {int(pid) for pid in listed.read().split()}
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
async def test_a_cancelled_run_kills_and_reaps_every_worker(tmp_path: Path) -> None:
    before = children()
    options = SimOptions(
        db=str(tmp_path / "sim.db"), customers=4, steps=None, duration=600.0, processes=2
    )
    with anyio.move_on_after(3) as scope:  # cancelled wherever it is by then
        await simulate(options)
    assert scope.cancelled_caught
    assert children() - before == set()
