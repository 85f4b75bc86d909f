"""Sagas keep up: how long the simulation's process managers take to finish after its
customers stop.

    python -m bench.settle                     # 3 runs of 500 customers for 5 s
    python -m bench.settle --runs 5 --customers 500 --duration 5

Each run is `python -m demo simulate --customers C --duration S --json` in a process of
its own, on a fresh temporary SQLite file. `settle_seconds` runs from the end of the
customers' load until every order, transfer and shipment has ended. It prints each
run (settle seconds, the customers' commands per second, the events stored, whether
every invariant held) and the median, and whether the median meets the floor: settled
within 5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETTLE_FLOOR_S = 5.0


def run_once(customers: int, duration: float, db: Path) -> dict[str, Any]:
    """One simulation in a process of its own; its JSON report."""
    command = [sys.executable, "-m", "demo", "simulate", "--json", "--db", str(db)]
    command += ["--customers", str(customers), "--duration", str(duration)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: an invariant failed, which the report says
        raise SystemExit(f"simulate failed ({done.returncode}): {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    args = parser.parse_args(argv)
    print(
        f"# demo simulate, {args.customers} customers for {args.duration:g} s, a fresh"
        f" SQLite file per run, {args.runs} runs"
    )
    print(f"{'run':>3} {'settle s':>8} {'customers cmd/s':>15} {'events':>8} {'invariants':>10}")
    settles: list[float] = []
    for n in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            report = run_once(args.customers, args.duration, Path(tmp) / "sim.db")
        settle = float(report["settle_seconds"])
        settles.append(settle)
        print(
            f"{n:>3} {settle:>8.2f} {report['commands_per_s']:>15,.0f} {report['events']:>8,}"
            f" {'held' if report['ok'] else 'FAILED':>10}",
            flush=True,
        )
    median = statistics.median(settles)
    met = "met" if median <= SETTLE_FLOOR_S else "not met"
    print(f"median settle {median:.2f} s; floor: settled within {SETTLE_FLOOR_S:g} s: {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
