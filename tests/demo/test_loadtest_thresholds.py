"""`--threshold`: checked on the report, listed in it, exit 1 when one fails, and
refused before the run when malformed or naming no figure of the report."""

from __future__ import annotations

import json

import pytest

from demo.__main__ import main
from demo._loadtest import InvalidThreshold, LoadReport, ProcessesReport, parse_thresholds

SMALL = ["loadtest", "--aggregates", "5", "--commands", "40", "--concurrency", "4"]
SMALL += ["--db", ":memory:", "--no-projection"]


def test_thresholds_that_hold_pass_and_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SMALL, "--threshold", "errors<=0", "--threshold", "latency_ms.p99 > 0"]
    argv += ["--threshold", "error_types.AskTimeout<1", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    listed = json.loads(out)["thresholds"]
    assert [(t["threshold"], t["passed"]) for t in listed] == [
        ("errors<=0", True),
        ("latency_ms.p99>0", True),
        ("error_types.AskTimeout<1", True),
    ]
    assert listed[0]["actual"] == 0
    assert listed[1]["actual"] > 0
    assert listed[2]["actual"] == 0  # no such error: none of them


def test_a_failed_threshold_exits_1_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SMALL, "--threshold", "errors>0", "--threshold", "commands>=40"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "threshold errors > 0: FAILED (actual 0)" in out
    assert "threshold commands >= 40: passed (actual 40)" in out


def test_a_failed_threshold_goes_to_stderr_beside_the_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*SMALL, "--json", "--threshold", "acknowledged<10"]) == 1
    out, err = capsys.readouterr()
    (listed,) = json.loads(out)["thresholds"]
    assert listed == {
        "threshold": "acknowledged<10",
        "name": "acknowledged",
        "op": "<",
        "limit": 10.0,
        "actual": 40.0,
        "passed": False,
    }
    assert err == "loadtest: threshold acknowledged < 10: FAILED (actual 40)\n"


def test_a_sweep_checks_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--sweep", "--threshold", "concurrency<=10"]) == 1
    out = capsys.readouterr().out
    assert "concurrency 10: threshold concurrency <= 10: passed (actual 10)" in out
    assert "concurrency 100: threshold concurrency <= 10: FAILED (actual 100)" in out
    assert "concurrency 1,000: threshold concurrency <= 10: FAILED (actual 1000)" in out


def test_a_json_sweep_names_the_row_of_a_failed_threshold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*SMALL, "--sweep", "--json", "--threshold", "concurrency<1000"]) == 1
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["thresholds"][0]["passed"] for r in rows] == [True, True, True, False]
    assert (
        err == "loadtest: concurrency 1,000: threshold concurrency < 1000: FAILED (actual 1000)\n"
    )


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ("p99<50", "no figure 'p99' in the report; did you mean latency_ms.p99?"),
        ("latency_ms.p99=50", "is malformed: write NAME OP NUMBER"),
        ("latency_ms.p99<", "is malformed"),
        ("<50", "is malformed"),
        ("latency_ms.p99<fifty", "is malformed"),
        ("timeline<3", "no figure 'timeline' in the report; the figures: acknowledged"),
        ("mix>1", "no figure 'mix'"),
        ("latency_ms<1", "no figure 'latency_ms'"),
        ("commands_per_s>1e999", "the limit must be finite"),
    ],
)
def test_a_bad_threshold_is_refused_before_the_run(
    threshold: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SMALL, "--threshold", "errors<1", "--threshold", threshold]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing ran
    assert err.startswith(f"loadtest: --threshold {threshold!r}")
    assert message in err


def test_thresholds_are_checked_against_the_report_that_will_be_made() -> None:
    """Several processes make a `ProcessesReport`: other figures."""
    (lag,) = parse_thresholds(["cross_process_lag_ms.p99<5"], ProcessesReport)
    assert (lag.name, lag.op, lag.limit) == ("cross_process_lag_ms.p99", "<", 5.0)
    with pytest.raises(InvalidThreshold, match=r"no figure 'cross_process_lag_ms\.p99'"):
        parse_thresholds(["cross_process_lag_ms.p99<5"], LoadReport)
    with pytest.raises(InvalidThreshold, match=r"no figure 'latency_ms\.p99'"):
        parse_thresholds(["latency_ms.p99<5"], ProcessesReport)


def test_several_processes_refuse_a_figure_of_the_one_process_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["loadtest", "--processes", "2", "--commands", "10", "--threshold", "latency_ms.p99<5"]
    assert main(argv) == 2
    assert "no figure 'latency_ms.p99'" in capsys.readouterr().err
