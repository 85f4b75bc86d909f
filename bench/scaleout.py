"""One process against two on one store: `python -m demo loadtest --processes 1|2`.

Each round runs the load test once on one process and once on two, alternating (1, 2,
1, 2...), on a fresh store each time: a temporary SQLite file, or with `--db
postgresql://...` a fresh schema of that server (dropped afterwards). The load is the
deposit mix over `--aggregates` accounts for `--duration` seconds, `--concurrency`
commands in flight in each process (so two processes have twice as many in flight),
synchronous=FULL. For each run it prints commands/s (two processes: acknowledged over
their common window), CPU per command, conflicts and errors, and for two processes the
lag from one process's acknowledgement to the other's read model having applied it.

The summary gives the ratio of the two sides' medians (what the floor is judged on)
and the median of the rounds' own ratios, each taken from two runs side by side: the
host's speed drifts between rounds by more than the two sides differ.

CPU per command, two figures: "all" is the CPU time of the whole command (parent and
workers, setup and checks included, from the OS's accounting of reaped children) per
acknowledged command, for both; "load" is the workers' own CPU time over the measured
phase only (`time.process_time` in each), for two processes. For the many side it also
prints how many cores the workers kept busy over that phase (their CPU time per second
of it) and the shares of it their writers spent in write transactions, added up: on a
SQLite file, one process holds the write lock at a time, so that is how busy the lock
was.

With `--own-accounts` the many side gives each process accounts of its own
(`loadtest --own-accounts`: as when each aggregate's commands are routed to one
process), so none of its appends conflict: what the shared accounts cost.

With `--pin` the many side's workers run each pinned to a CPU of its own (`loadtest
--pin`); the summary says where they ran. The one process is never pinned: its writer
thread may use the other core.

    python -m bench.scaleout                 # 7 rounds of 5 s runs
    python -m bench.scaleout --rounds 3 --own-accounts
    python -m bench.scaleout --db postgresql://postgres@127.0.0.1/test --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from demo._backend import backend_of, redacted

ROUNDS = 7  # the host's speed drifts between runs: more rounds, a steadier median
DURATION = 5.0
SQLITE_FLOOR = 1.2  # 2 processes against one, on one SQLite file, the same accounts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds per run")
    parser.add_argument("--aggregates", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=1_000, help="in flight per process")
    parser.add_argument("--writer", choices=("thread", "process"), default="thread")
    parser.add_argument("--db", help="a postgresql:// URL (default: a temporary SQLite file)")
    parser.add_argument("--processes", type=int, default=2, help="the many side (default 2)")
    parser.add_argument(
        "--own-accounts",
        action="store_true",
        help="the many side's processes draw from accounts of their own (no conflicts)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="the many side's workers pinned to a CPU each"
    )
    return parser


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _drop_schema(url: str, name: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    conn = await asyncpg.connect(urlunsplit(parts._replace(query=urlencode(query))))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _with_schema(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("schema", name)])))


def run_once(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """One load test run (a process of its own); its JSON report plus `cpu_all`."""
    argv = [sys.executable, "-m", "demo", "loadtest", "--json", "--mix", "deposit"]
    argv += ["--processes", str(processes), "--duration", str(args.duration)]
    argv += ["--aggregates", str(args.aggregates), "--concurrency", str(args.concurrency)]
    argv += ["--writer", args.writer, "--progress", "never"]
    if processes > 1 and args.own_accounts:
        argv.append("--own-accounts")
    if processes > 1 and args.pin:
        argv.append("--pin")
    schema = f"esactors_scaleout_{uuid.uuid4().hex[:12]}"
    if args.db is not None:
        argv += ["--db", _with_schema(args.db, schema)]
    before = _cpu_of_children()
    try:
        done = anyio.run(_run_process, argv)
    finally:
        if args.db is not None:
            anyio.run(_drop_schema, args.db, schema)
    if done.returncode != 0:
        raise SystemExit(f"loadtest --processes {processes} failed:\n{done.stderr.decode()}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["cpu_all"] = _cpu_of_children() - before
    return report


async def _run_process(argv: list[str]) -> Any:
    return await anyio.run_process(argv, check=False)


def _cores(report: dict[str, Any]) -> float:
    """Cores the workers kept busy over the measured phase: their CPU per acknowledged
    command times the acknowledged commands per second."""
    return float(report["cpu_ms_per_command"]) * float(report["commands_per_s"]) / 1000


def _in_transactions(report: dict[str, Any]) -> float:
    """The workers' shares of the run spent in write transactions, added up: on a
    SQLite file, how busy its write lock was."""
    return sum(float(p.get("in_transaction", 0.0)) for p in report.get("per_process") or [])


def _lag(report: dict[str, Any]) -> str:
    lag = report.get("cross_process_lag_ms")
    return "-" if not lag else f"{lag['p50']:.1f}/{lag['p99']:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table; 0."""
    args = _parser().parse_args(argv)
    many = args.processes
    backend = backend_of(args.db)
    where = "a temporary SQLite file" if args.db is None else redacted(args.db)
    print(
        f"# {os.cpu_count()} cores; deposit mix, {args.aggregates:,} accounts,"
        f" {args.concurrency:,} in flight per process, {args.duration:g} s per run,"
        f" synchronous=FULL, {args.writer} writer, {backend} on {where};"
        f" 1 vs {many} processes alternating, {args.rounds} rounds"
        + ("; the many side's processes each on accounts of their own" if args.own_accounts else "")
    )
    print(
        "# cmd/s: acknowledged commands per second (several processes: over their common"
        " window); cpu ms/cmd all: whole command's CPU / acknowledged; load: the workers'"
        " CPU over the measured phase / acknowledged; cores: the workers' CPU over that"
        " phase per second; txn: their shares of it in write transactions, added up (on"
        " SQLite: how busy the file's write lock was); lag: ack in one process to applied"
        " in another, p50/p99 ms"
    )
    header = (
        f"{'round':>5} {'1p cmd/s':>9} {f'{many}p cmd/s':>9} {'ratio':>6}"
        f" {'1p cpu all':>10} {f'{many}p cpu all':>10} {f'{many}p load':>9}"
        f" {f'{many}p cores':>8} {f'{many}p txn':>7}"
        f" {'conflicts':>9} {'errors':>6} {'lag p50/p99':>12}"
    )
    print(header, flush=True)
    ones: list[float] = []
    manys: list[float] = []
    ratios: list[float] = []  # each round's, its two runs side by side
    placed: set[str] = set()  # where the many side's workers ran
    for n in range(1, args.rounds + 1):
        one = run_once(args, 1)
        two = run_once(args, many)
        r1, r2 = one["commands_per_s"], two["commands_per_s"]
        ones.append(r1)
        manys.append(r2)
        ratios.append(r2 / r1)
        cpus = two.get("cpus")
        placed.add("by the OS" if cpus is None else "pinned to CPUs " + ", ".join(map(str, cpus)))
        cpu1 = one["cpu_all"] * 1000 / max(one["acknowledged"], 1)
        cpu2 = two["cpu_all"] * 1000 / max(two["acknowledged"], 1)
        print(
            f"{n:>5} {r1:>9,.0f} {r2:>9,.0f} {r2 / r1:>6.2f} {cpu1:>10.3f} {cpu2:>10.3f}"
            f" {two['cpu_ms_per_command']:>9.3f} {_cores(two):>8.2f} {_in_transactions(two):>7.0%}"
            f" {two['conflicts']:>9,}"
            f" {one['errors'] + two['errors']:>6,} {_lag(two):>12}",
            flush=True,
        )
    print(f"{many} processes' workers placed: {'; '.join(sorted(placed))}")
    m1, m2 = statistics.median(ones), statistics.median(manys)
    print(f"median 1 process {m1:,.0f} cmd/s, {many} processes {m2:,.0f} cmd/s:", end=" ")
    print(
        f"ratio of medians {m2 / m1:.2f}; median of the rounds' ratios {statistics.median(ratios):.2f}"
    )
    if backend == "sqlite" and many == 2:
        met = "met" if m2 / m1 >= SQLITE_FLOOR else "not met"
        print(f"floor: 2 processes >= {SQLITE_FLOOR:g}x one on a SQLite file: {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
