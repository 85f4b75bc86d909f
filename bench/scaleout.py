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

After the rounds comes the lag sweep: the many side alone at several commands in flight
per process (`--lag-levels`, default 250, 500 and 1,000), each level `--lag-rounds`
times, the levels alternating. Under a closed loop, throughput stops growing once the
processes are busy (the knee); past it, each command more in flight only waits in a
queue, and the cross-process lag grows with the burst of commands each batch's answer
sets going on the event loop. The floor (lag p99 at most 50 ms under load) is judged
at the knee: the fewest in flight whose median throughput is within 5% of the best
level's. Every level's figures are printed, the knee's and the others'.

With `--pin` the many side's workers run each pinned to a CPU of its own (`loadtest
--pin`); the summary says where they ran. The one process is never pinned: its writer
thread may use the other core.

    python -m bench.scaleout                 # 7 rounds of 5 s runs
    python -m bench.scaleout --rounds 3 --own-accounts --lag-rounds 0
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
LAG_LEVELS = "250,500,1000"  # commands in flight per process, for the lag sweep
LAG_ROUNDS = 3
LAG_FLOOR_MS = 50.0  # cross-process lag p99 at the knee
KNEE = 0.95  # the knee: the fewest in flight within 5% of the best level's throughput


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
    parser.add_argument(
        "--lag-levels",
        type=_levels,
        default=_levels(LAG_LEVELS),
        help=f"the lag sweep's commands in flight per process, comma-separated ({LAG_LEVELS})",
    )
    parser.add_argument(
        "--lag-rounds",
        type=int,
        default=LAG_ROUNDS,
        help=f"runs of each lag sweep level ({LAG_ROUNDS}; 0: no sweep)",
    )
    return parser


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated integers: {text!r}") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError(f"at least one level, each 1 or more: {text!r}")
    return levels


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


def run_once(
    args: argparse.Namespace, processes: int, concurrency: int | None = None
) -> dict[str, Any]:
    """One load test run (a process of its own), `concurrency` in flight per process
    (default `args.concurrency`); its JSON report plus `cpu_all`."""
    in_flight = args.concurrency if concurrency is None else concurrency
    argv = [sys.executable, "-m", "demo", "loadtest", "--json", "--mix", "deposit"]
    argv += ["--processes", str(processes), "--duration", str(args.duration)]
    argv += ["--aggregates", str(args.aggregates), "--concurrency", str(in_flight)]
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
    if args.lag_rounds > 0 and many > 1:
        lag_sweep(args, many)
    return 0


def lag_sweep(args: argparse.Namespace, many: int) -> None:
    """The many side at each of `args.lag_levels` in flight per process, the levels
    alternating, `args.lag_rounds` runs each: a row per run, then each level's medians,
    the knee and the lag floor judged there."""
    levels: list[int] = args.lag_levels
    print(
        f"# lag sweep: {many} processes at {', '.join(f'{n:,}' for n in levels)} in flight"
        f" per process, {args.lag_rounds} runs each, alternating; cmd p99: the slowest"
        " process's command latency p99; lag: ack in one process to applied in another"
    )
    print(f"{'round':>5} {'in flight':>9} {'cmd/s':>9} {'cmd p99':>8} {'lag p50/p99':>12}")
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in levels}
    for n in range(1, args.lag_rounds + 1):
        for level in levels:
            report = run_once(args, many, level)
            runs[level].append(report)
            print(
                f"{n:>5} {level:>9,} {report['commands_per_s']:>9,.0f}"
                f" {_command_p99(report):>8.1f} {_lag(report):>12}",
                flush=True,
            )
    rates = {level: statistics.median(r["commands_per_s"] for r in runs[level]) for level in levels}
    lags = {level: [_lag_p99(r) for r in runs[level]] for level in levels}
    best = max(rates.values())
    for level in levels:
        print(
            f"{level:,} in flight: median {rates[level]:,.0f} cmd/s"
            f" ({rates[level] / best:.0%} of the best level's), lag p99 median"
            f" {statistics.median(lags[level]):.1f} ms (runs {min(lags[level]):.1f}"
            f"-{max(lags[level]):.1f})"
        )
    knee = next(level for level in levels if rates[level] >= KNEE * best)
    lag = statistics.median(lags[knee])
    met = "met" if lag <= LAG_FLOOR_MS else "not met"
    print(
        f"knee: {knee:,} in flight per process (the fewest within {1 - KNEE:.0%} of the best"
        f" level's throughput); floor: lag p99 <= {LAG_FLOOR_MS:g} ms there: {met}"
        f" (median {lag:.1f} ms)"
    )


def _command_p99(report: dict[str, Any]) -> float:
    """The slowest process's command latency p99, ms."""
    return max(float(p["latency_ms"]["p99"]) for p in report.get("per_process") or [])


def _lag_p99(report: dict[str, Any]) -> float:
    lag = report.get("cross_process_lag_ms")
    return float(lag["p99"]) if lag else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
