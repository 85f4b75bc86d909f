"""`python -m demo loadtest`: concurrent command throughput through the whole stack.

Each run opens a store and an actor system, sets up the mix's aggregates (accounts,
warehouses; not measured), then keeps `concurrency` commands in flight until `commands`
were sent or `duration` seconds passed. Every command goes through the router (`ask`),
is decided, committed (group commit) and acknowledged; with the projection on, a live
`Balances` read model follows over the bus. The bank and shop mixes run their process
managers alongside and wait for them to finish afterwards. The report gives throughput,
latency percentiles, rejections and errors, the store's mean events per commit, the
projection's committed-to-applied lag, the process managers' outcome and the peak RSS.

With `ack_log`, each acknowledged command appends `stream_id<TAB>version<TAB>position`
to that file with one unbuffered `os.write` on an `O_APPEND` descriptor, before the
next command of that task is sent; after a crash, every line names events that must be
in the store.

The package, one concern a module (each imports only those listed before it):

- `_options`: `LoadOptions`, checked when made, and `LoadTestError`.
- `_report`: `LoadReport`, `Percentiles`, `render` and the `--sweep` table's rows.
- `_instruments`: the projection lag sampler, the acknowledgement log, peak RSS.
- `_driver`: the workers that keep `concurrency` commands in flight, and their counts.
- `_run`: `run_load`, one run from opening the store to the report.
"""

from __future__ import annotations

from demo._loadtest._options import LoadOptions, LoadTestError
from demo._loadtest._report import SWEEP_HEADER, LoadReport, Percentiles, render, sweep_row
from demo._loadtest._run import run_load

__all__ = [
    "SWEEP_HEADER",
    "LoadOptions",
    "LoadReport",
    "LoadTestError",
    "Percentiles",
    "render",
    "run_load",
    "sweep_row",
]
