"""The load test CLI at small scale: its JSON report, its ack log against the store,
its refusals, progress lines and the sweep."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import demo._loop
from demo.__main__ import main
from demo._loadtest import LoadOptions, LoadTestError, Percentiles, run_load
from store import RecordedEvent
from tests.demo._acks import missing_acks, read_acks, version_gaps

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "commands",
    "seconds",
    "commands_per_s",
    "events_per_s",
    "latency_ms",
    "errors",
    "rejected",
    "projection_lag_ms_p99",
    "peak_rss_mb",
    "events_per_commit",
}


def check_shape(report: dict[str, object], commands: int) -> None:
    assert KEYS <= report.keys()
    assert report["commands"] == commands
    assert report["acknowledged"] == commands
    assert (report["errors"], report["rejected"]) == (0, 0)
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    assert set(latency) == {"p50", "p95", "p99", "max"}
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    for key in ("seconds", "commands_per_s", "events_per_s", "peak_rss_mb", "events_per_commit"):
        value = report[key]
        assert isinstance(value, float)
        assert value > 0


def test_an_in_process_run_reports_json_and_every_ack_is_in_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, acks = tmp_path / "load.db", tmp_path / "acks.tsv"
    argv = ["loadtest", "--aggregates", "20", "--commands", "400", "--concurrency", "32"]
    argv += ["--db", str(db), "--ack-log", str(acks), "--json", "--seed", "7"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    check_shape(report, 400)
    assert report["projection_ok"] is True
    assert isinstance(report["projection_lag_ms_p99"], float)
    assert report["writer"] == "thread"
    assert err == ""  # not a terminal: no progress line
    logged = read_acks(acks)
    assert len(logged) == 20 + 400  # the openings, then the measured deposits
    assert missing_acks(logged, db) == []
    assert len({position for _, _, position in logged}) == len(logged)
    assert version_gaps(db) == []


@pytest.mark.slow
def test_a_subprocess_run_prints_one_json_object(tmp_path: Path) -> None:
    acks = tmp_path / "acks.tsv"
    db = tmp_path / "load.db"
    argv = ["--aggregates", "10", "--commands", "200", "--concurrency", "10", "--no-projection"]
    argv += ["--json", "--db", str(db), "--ack-log", str(acks), "--synchronous", "NORMAL"]
    argv += ["--writer", "process"]
    done = subprocess.run(
        [sys.executable, "-m", "demo", "loadtest", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    report = json.loads(line)
    check_shape(report, 200)
    assert report["projection_lag_ms_p99"] is None
    assert (report["synchronous"], report["writer"]) == ("NORMAL", "process")
    assert missing_acks(read_acks(acks), db) == []


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["bank", "shop"])
def test_the_bank_and_shop_mixes_settle_consistently(
    mix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, acks = tmp_path / "load.db", tmp_path / "acks.tsv"
    argv = ["loadtest", "--mix", mix, "--aggregates", "30", "--commands", "300"]
    argv += ["--concurrency", "24", "--db", str(db), "--ack-log", str(acks), "--json"]
    assert main([*argv, "--synchronous", "NORMAL"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert KEYS <= report.keys()
    assert (report["commands"], report["errors"], report["projection_ok"]) == (300, 0, True)
    outcome = report["outcome"]
    assert outcome["parked"] == 0
    if mix == "bank":
        assert outcome["money_conserved"] is True
        assert outcome["in_flight"] == 0
        assert outcome["transfers_settled"] > 0
    else:
        assert outcome["revenue_equals_charges"] is True
        orders = sum(n for key, n in outcome.items() if key.startswith("orders_"))
        assert orders == report["acknowledged"] == 300
        assert outcome["orders_shipped"] > 0
    assert missing_acks(read_acks(acks), db) == []
    assert version_gaps(db) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--aggregates", "0"], "--aggregates must be a positive integer, not 0"),
        (["--duration", "-1"], "--duration must be > 0 seconds"),
        (["--sweep", "--db", "x.db"], "--sweep runs each row on a fresh store"),
        (
            ["--writer", "process", "--db", ":memory:"],
            "--writer process needs a database file, not --db :memory:",
        ),
    ],
)
def test_options_that_cannot_run_are_refused_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--loop", "uvloop"], ["--uvloop"]])
def test_uvloop_is_refused_clearly_when_it_is_not_installed(
    flag: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo._loop, "uvloop_installed", lambda: False)
    assert main(["loadtest", *flag, "--commands", "1"]) == 2
    assert "--loop uvloop: uvloop is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("loop", "installed", "ran"),
    [
        ("auto", False, "asyncio"),
        ("auto", True, "uvloop"),
        ("asyncio", True, "asyncio"),
        ("uvloop", True, "uvloop"),
    ],
)
def test_the_report_names_the_loop_that_ran(
    loop: str,
    installed: bool,
    ran: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if installed and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed (the uvloop extra)")
    monkeypatch.setattr(demo._loop, "uvloop_installed", lambda: installed)
    argv = ["loadtest", "--loop", loop, "--commands", "50", "--aggregates", "5", "--json"]
    assert main([*argv, "--db", ":memory:"]) == 0
    assert json.loads(capsys.readouterr().out)["loop"] == ran


def test_progress_lines_go_to_stderr_when_asked() -> None:
    err = io.StringIO()
    options = LoadOptions(
        aggregates=4,
        commands=10**9,
        duration=0.3,
        concurrency=4,
        db=":memory:",
        progress="always",
        progress_interval=0.05,
        projection=False,
    )

    async def run() -> None:
        report = await run_load(options, stderr=err)
        assert report.acknowledged == report.commands > 0

    anyio.run(run)
    lines = err.getvalue().splitlines()
    assert lines
    assert all(line.startswith("progress acked=") for line in lines)


def test_a_duration_run_sends_at_least_one_command_per_client() -> None:
    """A deadline already past when the clients start (a loaded machine) still sends
    one command per client rather than an empty run."""
    options = LoadOptions(
        aggregates=8, duration=1e-9, concurrency=8, db=":memory:", progress="never"
    )
    report = anyio.run(run_load, options)
    assert report.commands >= 8
    assert report.acknowledged == report.commands


def test_a_cold_run_loads_each_account_its_commands_touch() -> None:
    """With `cold`, the setup's actors are passivated: the measured commands load only
    the accounts they touch (at most one per command), and every command still lands."""
    options = LoadOptions(
        aggregates=200, commands=12, concurrency=4, db=":memory:", progress="never", cold=True
    )
    report = anyio.run(run_load, options)
    assert report.cold
    assert report.acknowledged == report.commands == 12
    assert 1 <= report.live_actors <= 12
    assert report.projection_ok is True
    warm = anyio.run(run_load, dataclasses.replace(options, cold=False))
    assert not warm.cold
    assert warm.live_actors == 200


def test_cold_is_refused_with_several_processes() -> None:
    with pytest.raises(LoadTestError, match="--cold passivates the actors of this process"):
        LoadOptions(processes=2, db="x.db", cold=True)


def test_the_sweep_prints_a_header_and_one_row_per_concurrency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["loadtest", "--sweep", "--aggregates", "5", "--commands", "40", "--no-projection"]
    assert main([*argv, "--db", ":memory:"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["concurrency", "commands/s"]
    assert [int(row.split()[0].replace(",", "")) for row in rows] == [1, 10, 100, 1000]


def test_percentiles_take_the_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert Percentiles.of(samples) == Percentiles(50.0, 95.0, 99.0, 100.0)
    assert Percentiles.of([]) == Percentiles(0.0, 0.0, 0.0, 0.0)
    assert Percentiles.of([3.0]) == Percentiles(3.0, 3.0, 3.0, 3.0)


def test_load_options_check_their_limits() -> None:
    with pytest.raises(LoadTestError, match="--concurrency must be a positive integer"):
        LoadOptions(concurrency=0)
    with pytest.raises(LoadTestError, match="--progress-interval must be > 0"):
        LoadOptions(progress_interval=0)


def test_the_tour_walks_through_the_bank_and_the_shop(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour"]) == 0
    out = capsys.readouterr().out
    assert "refused, as it should be: account 'bob' holds 0 cents, not 500" in out
    assert "ada holds 10000 cents; bob open: False" in out
    assert "ada's order o-1: requested, 300 cents" in out
    # The shop's process managers then carry the order through stock, payment, shipping.
    steps = out[out.index("process managers shop.fulfilment, shop.shipping take it on:") :]
    assert [line.split()[-1] for line in steps.splitlines()[1:5]] == [
        "shop.order_requested",
        "shop.order_validated",
        "shop.order_paid",
        "shop.order_shipped",
    ]
    assert "ada's order o-1: shipped, parcel TRK-" in out
    assert out.rstrip().endswith("ada holds 9700 cents")
    assert "once the runtime" not in out


def test_own_accounts_needs_several_processes_and_an_account_for_each() -> None:
    with pytest.raises(LoadTestError, match="--own-accounts shares the accounts out"):
        LoadOptions(own_accounts=True)
    with pytest.raises(LoadTestError, match="give at least 3 --aggregates, not 2"):
        LoadOptions(processes=3, aggregates=2, db="x.db", own_accounts=True)


def test_pin_needs_several_processes_and_a_platform_that_can() -> None:
    with pytest.raises(LoadTestError, match="--pin places worker processes on CPUs"):
        LoadOptions(pin=True)
    with pytest.raises(LoadTestError, match=r"cpu must be a CPU number \(>= 0\), not -1"):
        LoadOptions(cpu=-1)
    with pytest.raises(LoadTestError, match=r"cpu pins one worker process .* --processes 2"):
        LoadOptions(processes=2, db="x.db", cpu=0)  # the parent's options carry none
    assert LoadOptions(pin=True, cpu=3).cpu == 3  # a worker's


def test_pin_is_refused_where_the_platform_cannot_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    with pytest.raises(LoadTestError, match=r"--pin needs os\.sched_setaffinity"):
        LoadOptions(processes=2, db="x.db", pin=True)
    assert LoadOptions(processes=2, db="x.db").pin is False  # the default asks for none


@pytest.mark.parametrize("share", [(2, 2), (-1, 2), (0, 11)])
def test_a_workers_account_share_must_name_a_worker_and_leave_it_accounts(
    share: tuple[int, int],
) -> None:
    with pytest.raises(LoadTestError, match="account_share must be"):
        LoadOptions(aggregates=10, account_share=share)


def test_a_long_run_keeps_a_bounded_uniform_sample_of_its_latencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past `MAX_LATENCY_SAMPLES` latencies the run keeps a reservoir of that size (a
    run of hours would otherwise hold every one), drawn from all of them, not the
    first ones; the max is the longest of all."""
    import demo._loadtest._driver as driver
    from demo._loadtest._timeline import _Timeline

    counted: list[driver._Counters] = []
    every: list[float] = []  # each latency, in the order the timeline got them
    percentiles, record = driver._Counters.latency_percentiles, _Timeline.record

    def count(self: driver._Counters) -> Percentiles:
        counted.append(self)
        return percentiles(self)

    def note(self: _Timeline, now: float, latency_ms: float | None) -> None:
        if latency_ms is not None:
            every.append(latency_ms)
        record(self, now, latency_ms)

    monkeypatch.setattr(driver, "MAX_LATENCY_SAMPLES", 50)
    monkeypatch.setattr(driver._Counters, "latency_percentiles", count)
    monkeypatch.setattr(_Timeline, "record", note)
    options = LoadOptions(
        aggregates=20, commands=600, concurrency=10, db=":memory:", progress="never"
    )
    report = anyio.run(run_load, options)
    (counters,) = counted
    assert report.acknowledged == len(every) == 600
    assert len(counters.latencies) == 50
    assert set(counters.latencies) <= set(every)
    assert counters.latencies != every[:50]  # later ones replaced some of the first
    assert report.latency_ms.max == round(max(every), 3)
    assert report.latency_ms.p50 == Percentiles.of(counters.latencies).p50


def test_the_several_process_stamps_add_nothing_for_the_collector_to_track(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker stamps the acknowledgements and applied events at every
    `SAMPLE_EVERY`th position (the cross-process lag): kept as objects the collector
    tracks, two per command ran it several times as often as the runtime alone does.
    They are kept in arrays; what they report is unchanged, and capped at
    `MAX_LAG_SAMPLES` each."""
    import gc

    import demo._loadtest._instruments as instruments

    every = instruments.SAMPLE_EVERY
    assert every > 1
    monkeypatch.setattr(instruments, "MAX_LAG_SAMPLES", 3_000)
    stamps = instruments._Stamps()
    stamps.acking = stamps.applying = True
    stamps.ack(every)  # the arrays' first growth, outside the count
    stamps.apply(every)
    gc.collect()
    gc.disable()
    try:
        tracked = len(gc.get_objects())
        for position in range(every + 1, 5_000 * every + 1):
            stamps.ack(position)
            stamps.apply(position)
        added = len(gc.get_objects()) - tracked
    finally:
        gc.enable()
    assert added < 10
    acks, applied = stamps.acks, stamps.applied
    sampled = list(range(every, 3_000 * every + 1, every))
    assert [p for p, _ in acks] == [p for p, _ in applied] == sampled
    times = [t for _, t in acks]
    assert times == sorted(times)
    assert all(isinstance(t, float) for t in times)


def test_the_lag_sampler_measures_the_sampled_positions_from_their_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`observe` measures the events at every `SAMPLE_EVERY`th position, each from the
    publication of the batch that holds it, and skips the others."""
    import demo._loadtest._instruments as instruments

    every = instruments.SAMPLE_EVERY
    now = [1.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    sampler = instruments._LagSampler()
    sampler.measuring = True

    def batch(first: int, last: int) -> list[RecordedEvent]:
        return [
            RecordedEvent("account-a", p, p, "Deposited", 1, None, {}, 0.0)
            for p in range(first, last + 1)
        ]

    first_batch, second_batch = batch(1, 3 * every), batch(3 * every + 1, 5 * every)
    sampler.published(first_batch)  # at 1.0 s
    now[0] = 2.0
    sampler.published(second_batch)
    now[0] = 3.5
    for recorded in first_batch + second_batch:
        sampler.observe(recorded)
    assert sampler.seen == 5
    assert sampler.samples == [2500.0] * 3 + [1500.0] * 2
