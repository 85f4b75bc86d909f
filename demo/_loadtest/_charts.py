"""The load test's charts as PNG bytes (matplotlib, the `charts` extra, imported here
only, and only when a chart is drawn; the Agg backend: no display needed).

- `sweep_png`: throughput, and latency p50/p99, against concurrency (`--sweep`).
- `timeline_png`: throughput, and latency p50/p99, over the time of one run, from its
  `timeline`, with the whole run's figures as dashed lines.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from demo._loadtest._report import LoadReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["INSTALL", "ChartsMissing", "require", "sweep_png", "timeline_png"]

INSTALL = "pip install 'esactors[charts]'"
"""What to run for the charts."""


class ChartsMissing(Exception):
    """matplotlib cannot be imported (the `charts` extra is not installed)."""


def require() -> None:
    """Import matplotlib and pick its Agg backend.

    Raises:
        ChartsMissing: matplotlib is not installed.
    """
    try:
        import matplotlib  # the optional extra: imported only for charts
    except ImportError as error:
        raise ChartsMissing(f"charts need matplotlib: {INSTALL}") from error
    matplotlib.use("Agg")


def _title(report: LoadReport) -> str:
    return (
        f"esactors load test: {report.mix} mix on {report.backend}"
        f" (synchronous={report.synchronous}, {report.writer} writer,"
        f" {report.aggregates:,} aggregates)"
    )


def _figure() -> Figure:
    require()
    from matplotlib.figure import Figure

    return Figure(figsize=(9.0, 7.0), dpi=100, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _style(axes: Axes, ylabel: str) -> None:
    if "commands/s" in ylabel:
        from matplotlib.ticker import StrMethodFormatter

        axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", alpha=0.35)
    axes.legend(loc="best", fontsize="small")


def sweep_png(reports: list[LoadReport]) -> bytes:
    """Throughput (top) and latency p50/p99 (bottom) against concurrency, a point per
    run of the sweep, as a PNG.

    Raises:
        ChartsMissing: matplotlib is not installed.
    """
    figure = _figure()
    from matplotlib.ticker import StrMethodFormatter

    figure.suptitle(f"{_title(reports[0])}\nconcurrency sweep", fontsize="medium")
    rate, latency = figure.add_subplot(2, 1, 1), figure.add_subplot(2, 1, 2)
    x = [r.concurrency for r in reports]
    rates = [r.commands_per_s for r in reports]
    rate.plot(x, rates, marker="o", color="tab:blue", label="throughput")
    for at, value in zip(x, rates, strict=True):
        rate.annotate(
            f"{value:,.0f}", (at, value), textcoords="offset points", xytext=(0, 6), ha="center"
        )
    rate.set_ylim(bottom=0, top=max(rates, default=1.0) * 1.2 or 1.0)
    _style(rate, "throughput (commands/s)")
    latency.plot(x, [r.latency_ms.p50 for r in reports], marker="o", label="p50")
    latency.plot(x, [r.latency_ms.p99 for r in reports], marker="s", label="p99")
    if all(r.latency_ms.p50 > 0 for r in reports):
        latency.set_yscale("log")
        latency.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    latency.set_xlabel("concurrency (commands in flight)")
    _style(latency, "latency (ms)")
    for axes in (rate, latency):
        if len(set(x)) > 1:
            axes.set_xscale("log")
        axes.set_xticks(x, [f"{c:,}" for c in x])
        axes.minorticks_off()
    return _png(figure)


def timeline_png(report: LoadReport) -> bytes:
    """Throughput (top) and latency p50/p99 (bottom) per interval of one run's
    timeline, with the run's own figures as dashed lines, as a PNG.

    Raises:
        ChartsMissing: matplotlib is not installed.
    """
    figure = _figure()
    figure.suptitle(
        f"{_title(report)}\nconcurrency {report.concurrency:,}:"
        f" {report.commands:,} commands in {report.seconds:.2f} s",
        fontsize="medium",
    )
    rate = figure.add_subplot(2, 1, 1)
    latency = figure.add_subplot(2, 1, 2, sharex=rate)
    points = report.timeline
    x = [p.at + p.seconds / 2 for p in points]
    marker = "o" if len(points) <= 60 else ""
    rates = [p.commands_per_s for p in points]
    rate.plot(x, rates, marker=marker, color="tab:blue", label="interval")
    rate.axhline(report.commands_per_s, linestyle="--", color="tab:gray", label="whole run")
    rate.set_ylim(bottom=0)
    _style(rate, "throughput (commands/s)")

    def ms(value: float | None) -> float:
        return math.nan if value is None else value

    latency.plot(x, [ms(p.latency_ms_p50) for p in points], marker=marker, label="p50")
    latency.plot(x, [ms(p.latency_ms_p99) for p in points], marker=marker, label="p99")
    latency.axhline(report.latency_ms.p99, linestyle="--", color="tab:gray", label="p99, whole run")
    highest = max([report.latency_ms.p99, *(p.latency_ms_p99 or 0.0 for p in points)])
    latency.set_ylim(bottom=0, top=highest * 1.1 or 1.0)
    rate.set_ylim(top=max([report.commands_per_s, *rates]) * 1.1 or 1.0)
    # The first interval is a whole one unless the run had only one.
    each = f"intervals of {points[0].seconds:g} s" if len(points) > 1 else "one interval"
    latency.set_xlabel(f"time since the load began (s; {each})")
    _style(latency, "latency (ms)")
    latency.set_xlim(0, max(report.seconds, 1e-3))
    return _png(figure)
