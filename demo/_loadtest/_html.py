"""The `--html` report: one self-contained page to attach to a ticket.

It holds the figures (a table; one row per concurrency for a sweep), the thresholds,
the charts as PNG data URIs, the options and the machine (CPUs, Python, SQLite, OS,
the git commit of the code that ran, the time). Nothing is loaded from elsewhere: no
script, no stylesheet, no image outside the page. Without matplotlib the page is still
written, with a note where the charts would be.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import msgspec

from demo._loadtest._charts import INSTALL, ChartsMissing, sweep_png, timeline_png
from demo._loadtest._report import LoadReport, ThresholdResult

__all__ = ["html_report", "machine"]

_ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the `demo` package (a git checkout, or not)."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.passed { color: #176f2c; } .failed { color: #b00020; font-weight: bold; }
.note { background: #fff6d5; border: 1px solid #e0c060; padding: 0.6em; }
img { max-width: 100%; border: 1px solid #ddd; }
"""

_SWEEP_COLUMNS = (
    ("concurrency", "concurrency"),
    ("commands/s", "commands_per_s"),
    ("p50 ms", "latency_ms.p50"),
    ("p95 ms", "latency_ms.p95"),
    ("p99 ms", "latency_ms.p99"),
    ("max ms", "latency_ms.max"),
    ("events/commit", "events_per_commit"),
    ("lag p99 ms", "projection_lag_ms_p99"),
    ("rejected", "rejected"),
    ("errors", "errors"),
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # a fixed command, no shell
            ["git", "-C", str(_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, str]:
    """What ran the test: CPUs, Python, SQLite, OS, git commit, time (UTC)."""
    # Only a checkout of this code: not a repository that happens to hold an install.
    top = _git("rev-parse", "--show-toplevel")
    here = top is not None and Path(top).resolve() == _ROOT
    commit = _git("rev-parse", "HEAD") if here else None
    if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "CPUs": str(os.cpu_count() or "unknown"),
        "CPU model": _cpu_model(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite": sqlite3.sqlite_version,
        "OS": platform.platform(),
        "git commit": commit or "unknown (not a git checkout)",
        "time (UTC)": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _cell(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape('-' if value is None else str(value))}</td>"


def _rows(pairs: list[tuple[str, object]]) -> str:
    return "\n".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in pairs)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, object]]:
    """A report's builtins as (dotted name, value) pairs, the timeline left out."""
    if isinstance(value, dict) and (value or not prefix):
        pairs: list[tuple[str, object]] = []
        for key, item in value.items():
            if key not in ("timeline", "thresholds") or prefix:
                pairs += _flatten(item, f"{prefix}{key}.")
        return pairs
    return [(prefix.rstrip("."), "{}" if value == {} else value)]


def _pick(figures: dict[str, Any], name: str) -> object:
    value: Any = figures
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _figures(reports: list[LoadReport], sweep: bool) -> str:
    if not sweep:
        return f"<table>\n{_rows(_flatten(msgspec.to_builtins(reports[0])))}\n</table>"
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in _SWEEP_COLUMNS)
    body = []
    for report in reports:
        figures = msgspec.to_builtins(report)
        body.append("<tr>" + "".join(_cell(_pick(figures, k)) for _, k in _SWEEP_COLUMNS) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _thresholds(reports: list[LoadReport], sweep: bool) -> str:
    rows = [
        _threshold_row(r, report.concurrency if sweep else None)
        for report in reports
        for r in report.thresholds
    ]
    if not rows:
        return "<p>No thresholds were given (<code>--threshold</code>).</p>"
    head = "<tr><th>threshold</th>" + ("<th>concurrency</th>" if sweep else "")
    head += "<th>actual</th><th>outcome</th></tr>"
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def _threshold_row(result: ThresholdResult, concurrency: int | None) -> str:
    verdict = "passed" if result.passed else "failed"
    actual = "not measured" if result.actual is None else f"{result.actual:,}"
    where = "" if concurrency is None else f'<td class="n">{concurrency:,}</td>'
    return (
        f"<tr><td><code>{html.escape(result.threshold)}</code></td>{where}"
        f'<td class="n">{html.escape(actual)}</td><td class="{verdict}">{verdict}</td></tr>'
    )


def _charts(reports: list[LoadReport], sweep: bool) -> str:
    try:
        png = sweep_png(reports) if sweep else timeline_png(reports[0])
    except ChartsMissing:
        return (
            '<p class="note">No charts: they need matplotlib, which is not installed'
            f" (<code>{html.escape(INSTALL)}</code>). The figures above are complete;"
            " the timeline is in the JSON report (<code>--json</code>).</p>"
        )
    data = base64.b64encode(png).decode("ascii")
    what = "against concurrency" if sweep else "over the run"
    alt = f"throughput and latency {what}"
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def html_report(reports: list[LoadReport], options: dict[str, object], *, sweep: bool) -> str:
    """The page for one run (or a sweep's runs); `options` as they are to be shown.

    Without matplotlib the page is the same but for a note instead of the charts.
    """
    first = reports[0]
    title = f"esactors load test: {first.mix} mix on {first.backend}"
    if sweep:
        title += ", concurrency sweep"
    option_rows = _rows(sorted(options.items()))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Figures</h2>
{_figures(reports, sweep)}
<h2>Thresholds</h2>
{_thresholds(reports, sweep)}
<h2>Charts</h2>
{_charts(reports, sweep)}
<h2>Options</h2>
<table>
{option_rows}
</table>
<h2>Machine</h2>
<table>
{_rows(list(machine().items()))}
</table>
</body>
</html>
"""
