"""The report plumbing: records land as JSON lines and the summary merges them per check."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reliability._report import Report
from tests.reliability.summary import summarise


def test_records_are_appended_as_json_lines(tmp_path: Path) -> None:
    target = tmp_path / "r.jsonl"
    Report("t1", target).record("DUR-1", acked=10, lost=0)
    Report("t2", target).record("DUR-1", acked=5, lost=0, recovery_seconds=0.25)
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["figures"] for line in lines] == [
        {"acked": 10, "lost": 0},
        {"acked": 5, "lost": 0, "recovery_seconds": 0.25},
    ]
    assert {line["id"] for line in lines} == {"DUR-1"}


def test_the_summary_sums_counts_and_ranges_floats() -> None:
    lines = [
        json.dumps({"id": "OCC-2", "figures": {"lost": 0, "rate": 10.0}, "tier": "soak"}),
        json.dumps({"id": "DUR-1", "figures": {"acked": 3, "lost": 1}, "tier": "soak"}),
        json.dumps({"id": "DUR-1", "figures": {"acked": 4, "lost": 0}, "tier": "soak"}),
        json.dumps({"id": "OCC-2", "figures": {"lost": 0, "rate": 12.5}, "tier": "soak"}),
    ]
    table = summarise(lines).splitlines()
    assert table[0] == "Run: tier soak"
    assert table[-2:] == [
        "| DUR-1 | 2 | acked 7; lost 1 |  |",
        "| OCC-2 | 2 | lost 0; rate 10..12.5 |  |",
    ]


def test_without_a_target_nothing_is_written(tmp_path: Path) -> None:
    report = Report("t", None)
    line = report.record("BP-1", dropped=0)
    assert report.records == [line]
    assert list(tmp_path.iterdir()) == []


def test_a_control_run_gets_its_own_row_and_settings_are_not_summed() -> None:
    lines = [
        json.dumps({"id": "OCC-2", "figures": {"processes": 2, "lost": 0}}),
        json.dumps({"id": "OCC-2", "figures": {"processes": 4, "lost": 0}}),
        json.dumps({"id": "OCC-2", "figures": {"broken_variant": "plain BEGIN", "busy": 9}}),
    ]
    table = summarise(lines).splitlines()
    assert table[-2:] == [
        "| OCC-2 | 2 | processes 2..4; lost 0 |  |",
        "| OCC-2 control: plain BEGIN | 1 | busy 9 |  |",
    ]


def test_a_run_with_a_setup_gets_its_own_row() -> None:
    lines = [
        json.dumps({"id": "BP-2", "figures": {"ok": 5}}),
        json.dumps({"id": "BP-2", "figures": {"setup": "slow disk", "ok": 7}}),
        json.dumps({"id": "BP-2", "figures": {"setup": "slow disk", "ok": 1}}),
    ]
    table = summarise(lines).splitlines()
    assert table[-2:] == ["| BP-2 | 1 | ok 5 |  |", "| BP-2 (slow disk) | 2 | ok 8 |  |"]


def test_each_row_names_the_tests_that_reproduce_it() -> None:
    test = "tests/reliability/test_durability.py::test_dur1_kill9"
    lines = [
        json.dumps({"id": "DUR-1", "figures": {"lost": 0}, "test": f"{test}[FULL]"}),
        json.dumps({"id": "DUR-1", "figures": {"lost": 0}, "test": f"{test}[NORMAL]"}),
        json.dumps({"id": "DUR-1", "figures": {"lost": 0}, "test": "t.py::test_other"}),
    ]
    assert summarise(lines).splitlines()[-1] == (
        f"| DUR-1 | 3 | lost 0 | `pytest {test} t.py::test_other` |"
    )


def test_a_report_of_several_commits_says_which_commit_each_row_is_from() -> None:
    lines = [
        json.dumps({"id": "DUR-1", "figures": {"lost": 0}, "commit": "aaa"}),
        json.dumps({"id": "CAN-1", "figures": {"dup": 0}, "commit": "bbb"}),
    ]
    table = summarise(lines).splitlines()
    assert table[2] == "| check | records | figures | reproduce | commit |"
    assert table[-2:] == ["| CAN-1 | 1 | dup 0 |  | bbb |", "| DUR-1 | 1 | lost 0 |  | aaa |"]


def test_an_integer_setting_is_shown_whole() -> None:
    lines = [json.dumps({"id": "BP-3", "figures": {"cap": 10_000, "ids": 1_000_000}})]
    assert summarise(lines).splitlines()[-1] == "| BP-3 | 1 | cap 10000; ids 1000000 |  |"
