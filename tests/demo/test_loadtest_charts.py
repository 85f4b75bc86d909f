"""The load test's pictures: `--chart` PNGs (a sweep, one run's timeline), the `--html`
page, both without matplotlib, and the timeline they are drawn from."""

from __future__ import annotations

import base64
import itertools
import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from demo.__main__ import main
from demo._loadtest._timeline import BUCKET_SECONDS, MAX_BUCKETS, _Timeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = ["loadtest", "--aggregates", "5", "--commands", "60", "--concurrency", "4"]
SMALL += ["--db", ":memory:", "--no-projection"]
INSTALL = "pip install 'esactors[charts]'"


def check_png(data: bytes) -> None:
    """A PNG: its signature, then an IHDR chunk of the chart's size (900 x 700)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 700)
    assert len(data) > 10_000  # axes, labels and lines, not an empty canvas
    assert data.endswith(b"IEND\xaeB`\x82")


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import matplotlib` fails, as when the charts extra is not installed."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_a_sweep_draws_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "sweep.png"
    assert main([*SMALL, "--sweep", "--chart", str(chart)]) == 0
    _header, *rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 4
    check_png(chart.read_bytes())


def test_a_run_draws_its_timeline_and_reports_it_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "run.png"
    assert main([*SMALL, "--json", "--chart", str(chart)]) == 0
    report = json.loads(capsys.readouterr().out)
    check_png(chart.read_bytes())
    timeline = report["timeline"]
    assert timeline
    assert sum(point["commands"] for point in timeline) == report["commands"] == 60
    assert timeline[0]["at"] == 0.0
    for before, after in itertools.pairwise(timeline):
        assert after["at"] == pytest.approx(before["at"] + before["seconds"], abs=0.002)
    assert timeline[-1]["at"] + timeline[-1]["seconds"] == pytest.approx(
        report["seconds"], abs=0.002
    )
    timed = [point for point in timeline if point["commands"]]
    assert all(0 < p["latency_ms_p50"] <= p["latency_ms_p99"] for p in timed)


def test_a_chart_without_matplotlib_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_matplotlib: None
) -> None:
    chart = tmp_path / "run.png"
    assert main([*SMALL, "--chart", str(chart)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing ran
    assert err.count("\n") == 1
    assert "--chart needs matplotlib" in err
    assert INSTALL in err
    assert not chart.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "2", "--chart", "x.png"], "--chart and --html draw a run in this process"),
        (["--html", "no/such/dir/r.html"], "--html no/such/dir/r.html: its directory does not"),
    ],
)
def test_pictures_that_cannot_be_drawn_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", "--commands", "10", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err


def test_the_html_report_is_self_contained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    page_file = tmp_path / "report.html"
    argv = [*SMALL, "--json", "--html", str(page_file), "--threshold", "errors<=0"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    page = page_file.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Nothing is fetched from elsewhere: no external src, href, stylesheet or script.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page
    assert "<link" not in page
    assert "@import" not in page
    # The figures, the thresholds, the options and the machine.
    assert "<th>commands_per_s</th>" in page
    assert f'<td class="n">{report["commands_per_s"]:,}</td>' in page
    assert "<th>latency_ms.p99</th>" in page
    assert "<code>errors&lt;=0</code>" in page
    assert '<td class="passed">passed</td>' in page
    assert "<th>aggregates</th>" in page
    assert f"<td>{sqlite3.sqlite_version}</td>" in page
    for row in ("CPUs", "CPU model", "Python", "OS", "git commit", "time (UTC)"):
        assert f"<th>{row}</th>" in page
    # The chart, embedded.
    (data,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    check_png(base64.b64decode(data))


def test_the_html_report_without_matplotlib_has_the_figures_and_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_matplotlib: None
) -> None:
    page_file = tmp_path / "report.html"
    assert main([*SMALL, "--sweep", "--html", str(page_file)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 5  # the sweep table ran
    assert "written without charts" in err
    assert INSTALL in err
    page = page_file.read_text(encoding="utf-8")
    assert "data:image" not in page
    assert "No charts: they need matplotlib" in page
    assert INSTALL.replace("'", "&#x27;") in page
    rows = re.findall(r'<tr><td class="n">([\d,]+)</td>', page)
    assert rows == ["1", "10", "100", "1,000"]  # the sweep's figures, one row each


def test_the_timeline_stays_bounded_by_coarsening_and_keeps_every_count() -> None:
    timeline = _Timeline()
    timeline.start(100.0)
    recorded = 0
    for tenth in range(10_000):  # 1,000 s, one answer every 0.1 s
        timeline.record(100.0 + tenth / 10, 1.0 + tenth % 7)
        recorded += 1
    assert len(timeline.counts) <= MAX_BUCKETS
    assert timeline.width == BUCKET_SECONDS * 2**5  # 8 s: 125 intervals
    points = timeline.points(1_000.0)
    assert len(points) <= MAX_BUCKETS
    assert sum(p.commands for p in points) == recorded
    assert all(p.seconds == 8.0 for p in points)


def test_the_sketch_percentiles_are_within_one_percent() -> None:
    timeline = _Timeline()
    timeline.start(0.0)
    for latency in range(1, 1_001):  # 1..1000 ms in the first interval
        timeline.record(0.1, float(latency))
    timeline.record(0.2, None)  # a rejection: counted, not timed
    (point,) = timeline.points(0.25)
    assert point.commands == 1_001
    assert point.commands_per_s == 4_004.0
    assert point.latency_ms_p50 == pytest.approx(500, rel=0.01)
    assert point.latency_ms_p99 == pytest.approx(990, rel=0.01)


def test_a_short_last_interval_joins_the_one_before() -> None:
    timeline = _Timeline()
    timeline.start(0.0)
    for at in (0.1, 0.3, 0.51):
        timeline.record(at, 2.0)
    first, last = timeline.points(0.52)  # 0.5-0.52 is too short to stand alone
    assert (first.at, first.seconds, first.commands) == (0.0, 0.25, 1)
    assert (last.at, last.seconds, last.commands) == (0.25, 0.27, 2)
    empty = _Timeline()
    empty.start(0.0)
    empty.record(0.1, 1.0)
    points = empty.points(1.0)  # no answers after 0.25 s: the empty intervals show
    assert [p.commands for p in points] == [1, 0, 0, 0]
    assert points[-1].latency_ms_p99 is None
