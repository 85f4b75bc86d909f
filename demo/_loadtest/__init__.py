"""`python -m demo loadtest`: concurrent command throughput through the whole stack.

Each run opens a store and an actor system, sets up the mix's aggregates (accounts,
warehouses; not measured), then keeps `concurrency` commands in flight until `commands`
were sent or `duration` seconds passed. Every command goes through the router (`ask`),
is decided, committed (group commit) and acknowledged; with the projection on, a live
`Balances` read model follows over the bus. The bank and shop mixes run their process
managers alongside and wait for them to finish afterwards. The report gives throughput,
latency percentiles, rejections and errors, the store's mean events per commit, the
projection's committed-to-applied lag, the process managers' outcome and the peak RSS,
and a timeline of the measured phase (commands and latency per interval). Thresholds
(`--threshold`) are checked on the report; `--chart` and `--html` draw it.

With `ack_log`, each acknowledged command appends `stream_id<TAB>version<TAB>position`
to that file with one unbuffered `os.write` on an `O_APPEND` descriptor, before the
next command of that task is sent; after a crash, every line names events that must be
in the store.

With `processes` > 1 (the deposit mix, on a SQLite file or PostgreSQL), the parent
opens the accounts, then starts that many worker processes (`python -m
demo._loadtest._child`), each with an actor system of its own on the same store,
sending deposits to the same accounts; all are released at once. Each reports its
figures; the parent combines them (`ProcessesReport`), measures the lag from one
process's acknowledgement to another's read model, and checks every read model
against a fold of the store and the store against the acknowledged deposits.

The package, one concern a module (each imports only those listed before it):

- `_options`: `LoadOptions`, checked when made, and `LoadTestError`.
- `_timeline`: the per-interval sampler of the measured phase (`TimelinePoint`).
- `_report`: `LoadReport`, `Percentiles`, `render` and the `--sweep` table's rows.
- `_thresholds`: `--threshold`, parsed against a report type and checked on a report.
- `_charts`: the `--chart` PNGs (matplotlib, imported only there and only then).
- `_html`: the `--html` page (figures, thresholds, charts, options, machine).
- `_instruments`: the projection lag sampler, the acknowledgement log, peak RSS.
- `_driver`: the workers that keep `concurrency` commands in flight, and their counts.
- `_run`: `run_load`, one run from opening the store to the report.
- `_child`: one worker process of a several-process run.
- `_processes`: `run_processes`, the parent of a several-process run.
"""

from __future__ import annotations

from demo._loadtest._options import MAX_PROCESSES, LoadOptions, LoadTestError
from demo._loadtest._processes import run_processes
from demo._loadtest._report import (
    SWEEP_HEADER,
    LoadReport,
    Percentiles,
    ProcessesReport,
    ProcessFigures,
    render,
    render_processes,
    sweep_row,
)
from demo._loadtest._run import run_load
from demo._loadtest._thresholds import InvalidThreshold, Threshold, render_thresholds
from demo._loadtest._thresholds import check as check_thresholds
from demo._loadtest._thresholds import parse as parse_thresholds
from demo._loadtest._timeline import TimelinePoint

__all__ = [
    "MAX_PROCESSES",
    "SWEEP_HEADER",
    "InvalidThreshold",
    "LoadOptions",
    "LoadReport",
    "LoadTestError",
    "Percentiles",
    "ProcessFigures",
    "ProcessesReport",
    "Threshold",
    "ThresholdResult",
    "TimelinePoint",
    "check_thresholds",
    "parse_thresholds",
    "render",
    "render_processes",
    "render_thresholds",
    "run_load",
    "run_processes",
    "sweep_row",
]
