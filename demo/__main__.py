"""`python -m demo [simulate ... | tour | loadtest ...]`: the demo's command line.

With no arguments it runs a short simulation (`simulate`: 2,000 steps on demo.db).
`tour` is a short walk through the bank and the shop on an in-memory store.
`simulate --help` and `loadtest --help` list their options.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Literal

import msgspec

from demo._backend import backend_of, scratch_schema
from demo._loadtest import (
    SWEEP_HEADER,
    LoadOptions,
    LoadReport,
    LoadTestError,
    ProcessesReport,
    Threshold,
    check_thresholds,
    parse_thresholds,
    render,
    render_processes,
    render_thresholds,
    run_load,
    run_processes,
    sweep_row,
)
from demo._loadtest._charts import INSTALL as CHARTS_INSTALL
from demo._loadtest._charts import ChartsMissing, sweep_png, timeline_png
from demo._loadtest._charts import require as require_charts
from demo._loadtest._html import html_report
from demo._logging import configured_logging
from demo._loop import LoopUnavailable, resolve
from demo._loop import run as run_on
from demo._simulate import add_arguments as add_simulate_arguments
from demo._simulate import run_cli as run_simulate
from demo._tour import tour
from store import StoreError

SWEEP = (1, 10, 100, 1_000)
SWEEP_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log info lines too")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("tour", help="a short walk through the bank and the shop")
    # -- simulate (demo/_simulate/_cli.py) --
    add_simulate_arguments(
        sub.add_parser(
            "simulate",
            help="many customers at once, then invariants checked (the default)",
            description="Simulated customers open accounts, deposit, withdraw, transfer and"
            " order concurrently; then the run settles and invariants are checked over the"
            " whole store. Exit status 1 when one fails.",
        )
    )
    # -- end simulate --
    load = sub.add_parser(
        "loadtest",
        help="concurrent command throughput and latency",
        description="Send commands through the whole stack and report throughput, latency,"
        " store batching, projection lag and memory.",
    )
    _add_load_arguments(load)
    _add_report_arguments(load)
    return parser


def _add_load_arguments(load: argparse.ArgumentParser) -> None:
    """The workload of `loadtest` and the store it runs on."""
    load.add_argument("--aggregates", type=int, default=1_000, help="accounts (default 1,000)")
    amount = load.add_mutually_exclusive_group()
    amount.add_argument("--commands", type=int, help="commands to send (default 100,000)")
    amount.add_argument("--duration", type=float, help="seconds to send for, instead")
    load.add_argument(
        "--concurrency", type=int, default=1_000, help="commands in flight (default 1,000)"
    )
    load.add_argument(
        "--db",
        help="SQLite file (default: a temporary file; ':memory:' works) or a postgresql://"
        " URL (?schema=name picks the schema)",
    )
    load.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    load.add_argument(
        "--writer",
        choices=("thread", "process"),
        default="thread",
        help="the store's writer: thread (default) or process (faster under load; SQLite"
        " files only)",
    )
    load.add_argument("--mix", choices=("deposit", "bank", "shop"), default="deposit")
    load.add_argument(
        "--projection",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow with a live Balances read model (default on)",
    )
    load.add_argument(
        "--own-accounts",
        action="store_true",
        help="with --processes: each worker draws from accounts of its own (as when each"
        " aggregate's commands are routed to one process), so their appends never conflict",
    )
    load.add_argument(
        "--pin",
        action="store_true",
        help="with --processes: pin each worker to a CPU of its own, round robin (Linux)",
    )
    load.add_argument(
        "--cold",
        action="store_true",
        help="passivate every actor after the setup: the measured commands load their"
        " accounts from the store on first touch (one process only)",
    )
    load.add_argument(
        "--distribution",
        choices=("uniform", "zipf"),
        default="uniform",
        help="how commands pick their account: uniform (default) or zipf (hot accounts)",
    )
    load.add_argument(
        "--zipf-exponent",
        type=float,
        default=1.0,
        metavar="S",
        help="the exponent of --distribution zipf: rank k drawn with weight 1/k**S"
        " (default 1.0; larger is more skewed)",
    )
    load.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: auto (default: uvloop when installed, else asyncio), asyncio"
        " or uvloop",
    )
    load.add_argument(
        "--uvloop",
        dest="loop",
        action="store_const",
        const="uvloop",
        help="the same as --loop uvloop",
    )
    load.add_argument("--seed", type=int, default=0)


def _add_report_arguments(load: argparse.ArgumentParser) -> None:
    """How `loadtest` runs and reports: JSON, the acknowledgement log, the sweep,
    progress, several processes, thresholds, charts, HTML."""
    load.add_argument("--json", action="store_true", help="print one JSON object (per run)")
    load.add_argument(
        "--ack-log",
        metavar="PATH",
        help="append 'stream<TAB>version<TAB>position' per acknowledged command",
    )
    load.add_argument(
        "--sweep",
        action="store_true",
        help=f"run at concurrency {', '.join(map(str, SWEEP))} (default {SWEEP_SECONDS:g} s each)",
    )
    load.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress lines on stderr: auto (on a terminal only), always, never",
    )
    load.add_argument("--progress-interval", type=float, default=0.5, metavar="SECONDS")
    load.add_argument(
        "--processes",
        default="1",
        metavar="N",
        help="worker processes sharing the store and the accounts (default 1: this"
        " process; more: the deposit mix on a SQLite file or PostgreSQL, --commands"
        " divided between them; at most 64)",
    )
    load.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME<LIMIT",
        help="fail (exit 1) unless a figure of the JSON report holds, e.g."
        " 'latency_ms.p99<50' or 'commands_per_s>=10000' (repeatable; dotted names for"
        " nested figures; operators < <= > >=)",
    )
    load.add_argument(
        "--chart",
        metavar="FILE.png",
        help="draw a PNG: throughput and latency against concurrency (--sweep) or over"
        " the run (needs the charts extra: pip install 'esactors[charts]')",
    )
    load.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained HTML report: figures, thresholds, charts (with the"
        " charts extra), options and machine",
    )


class _Refused(Exception):
    """The load test cannot run as asked; the message says why (exit status 2)."""


def _loadtest(args: argparse.Namespace) -> int:
    try:
        loop = resolve(args.loop)
        options = _load_options(args)
        report_type = ProcessesReport if options.processes > 1 else LoadReport
        thresholds = parse_thresholds(args.threshold, report_type)
        refused = _outputs_refused(args, options)
        if refused is not None:
            raise _Refused(refused)
        if options.processes > 1:
            return _loadtest_processes(options, thresholds, args, loop)
        reports = _run_rows(args, options, thresholds, loop)
    except (LoopUnavailable, LoadTestError, StoreError, _Refused) as error:
        # StoreError: the store cannot be opened, so nothing ran
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    if args.sweep and not args.json:
        for report in reports:
            lines = render_thresholds(report.thresholds, f"concurrency {report.concurrency:,}: ")
            if lines:
                print("\n".join(lines), flush=True)
    written = _write_outputs(args, options, reports)
    if written != 0:
        return written
    return 1 if any(not t.passed for r in reports for t in r.thresholds) else 0


def _load_options(args: argparse.Namespace) -> LoadOptions:
    """The options the arguments ask for (`LoadTestError` names what cannot run)."""
    duration = args.duration
    if args.sweep and args.commands is None and duration is None:
        duration = SWEEP_SECONDS
    try:
        processes: Any = int(args.processes)
    except ValueError:
        processes = args.processes  # refused by LoadOptions, by name
    return LoadOptions(
        aggregates=args.aggregates,
        commands=100_000 if args.commands is None else args.commands,
        duration=duration,
        concurrency=args.concurrency,
        db=args.db,
        synchronous=args.synchronous,
        writer=args.writer,
        mix=args.mix,
        projection=args.projection,
        distribution=args.distribution,
        zipf_exponent=args.zipf_exponent,
        seed=args.seed,
        ack_log=args.ack_log,
        progress=args.progress,
        progress_interval=args.progress_interval,
        processes=processes,
        cold=args.cold,
        own_accounts=args.own_accounts,
        pin=args.pin,
    )


def _run_rows(
    args: argparse.Namespace,
    options: LoadOptions,
    thresholds: list[Threshold],
    loop: Literal["asyncio", "uvloop"],
) -> list[LoadReport]:
    """Run the load in this process (once, or once per concurrency with `--sweep`),
    printing each report as it comes."""
    postgres = backend_of(args.db) == "postgresql"
    if args.sweep and args.db not in (None, ":memory:") and not postgres:
        raise _Refused("--sweep runs each row on a fresh store; drop --db")
    runs = [dataclasses.replace(options, concurrency=c) for c in SWEEP] if args.sweep else [options]
    if args.sweep and not args.json:
        print(SWEEP_HEADER, flush=True)
    reports: list[LoadReport] = []
    for run in runs:

        async def one(run: LoadOptions = run) -> LoadReport:
            if args.sweep and postgres:  # a fresh store per row: a schema of its own
                async with scratch_schema(run.db or "", "esactors_sweep") as url:
                    return await run_load(dataclasses.replace(run, db=url))
            return await run_load(run)

        report = run_on(one, loop)
        report = msgspec.structs.replace(report, thresholds=check_thresholds(thresholds, report))
        reports.append(report)
        if args.json:
            print(msgspec.json.encode(report).decode(), flush=True)
            _failed_to_stderr(report, f"concurrency {report.concurrency:,}: " if args.sweep else "")
        elif args.sweep:
            print(sweep_row(report), flush=True)
        else:
            print("\n".join([render(report), *render_thresholds(report.thresholds)]), flush=True)
    return reports


def _outputs_refused(args: argparse.Namespace, options: LoadOptions) -> str | None:
    """Why `--chart`/`--html` cannot be honoured (checked before the run), or None."""
    if options.processes > 1 and (args.chart or args.html):
        return "--chart and --html draw a run in this process: drop --processes"
    for flag, path in (("--chart", args.chart), ("--html", args.html)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            return f"{flag} {path}: its directory does not exist"
    if args.chart is not None:
        try:
            require_charts()
        except ChartsMissing:
            return f"--chart needs matplotlib, which is not installed: {CHARTS_INSTALL}"
    return None


def _failed_to_stderr(report: LoadReport | ProcessesReport, prefix: str = "") -> None:
    """With --json: one line on stderr per failed threshold (stdout is the JSON)."""
    for line in render_thresholds([t for t in report.thresholds if not t.passed], prefix):
        print(f"loadtest: {line.strip()}", file=sys.stderr, flush=True)


def _write_outputs(
    args: argparse.Namespace, options: LoadOptions, reports: list[LoadReport]
) -> int:
    """Write the `--chart` PNG and the `--html` page; 2 when one cannot be written."""
    try:
        if args.chart is not None:
            png = sweep_png(reports) if args.sweep else timeline_png(reports[0])
            Path(args.chart).write_bytes(png)
        if args.html is not None:
            shown: dict[str, object] = msgspec.to_builtins(options)
            shown["db"] = reports[0].db
            if args.sweep:
                shown["concurrency"] = ", ".join(f"{c:,}" for c in SWEEP) + " (--sweep)"
            shown["loop"] = reports[0].loop
            shown["threshold"] = " ".join(args.threshold) or None
            page = html_report(reports, shown, sweep=args.sweep)
            Path(args.html).write_text(page, encoding="utf-8")
            if "data:image/png" not in page:
                print(
                    f"loadtest: --html {args.html} written without charts: they need"
                    f" matplotlib ({CHARTS_INSTALL})",
                    file=sys.stderr,
                )
    except OSError as error:
        print(f"loadtest: cannot write the report: {error}", file=sys.stderr)
        return 2
    return 0


def _loadtest_processes(
    options: LoadOptions,
    thresholds: list[Threshold],
    args: argparse.Namespace,
    loop: Literal["asyncio", "uvloop"],
) -> int:
    """`loadtest --processes N` (N > 1): one run on N worker processes."""
    if args.sweep:
        print("loadtest: --sweep runs in one process: drop --processes", file=sys.stderr)
        return 2

    async def several() -> ProcessesReport:
        return await run_processes(options, uvloop=loop == "uvloop")

    try:
        report = run_on(several, loop)
    except StoreError as error:  # the store cannot be opened: nothing ran
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    except LoadTestError as error:  # a worker failed
        print(f"loadtest: {error}", file=sys.stderr)
        return 1
    report = msgspec.structs.replace(report, thresholds=check_thresholds(thresholds, report))
    if args.json:
        print(msgspec.json.encode(report).decode(), flush=True)
        _failed_to_stderr(report)
    else:
        lines = [render_processes(report), *render_thresholds(report.thresholds)]
        print("\n".join(lines), flush=True)
    return 1 if any(not t.passed for t in report.thresholds) else 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo command line with `argv` (default: the process's arguments).

    Returns:
        The exit status: 0, 1 when a simulation finds an invariant broken, or 2 for
        options that cannot run (with a message on stderr).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command is None:  # simulate is the default (demo/_simulate/)
        args = _parser().parse_args([*argv, "simulate"])
    with configured_logging(verbose=args.verbose):
        if args.command == "simulate":
            return run_simulate(args)
        if args.command == "loadtest":
            return _loadtest(args)

        async def walk() -> None:
            await tour(sys.stdout)

        run_on(walk, "asyncio")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
