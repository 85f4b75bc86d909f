"""The `simulate` subcommand: its options on the command line, and the run printed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec

from demo._simulate._options import MAX_PROCESSES, SimOptions, SimulationError
from demo._simulate._report import SimReport, render
from demo._simulate._simulation import simulate
from store import StoreError

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's options."""
    parser.add_argument(
        "--db",
        help="SQLite file (default demo.db; with --processes N > 1, a temporary file;"
        " ':memory:' works in one process) or a postgresql:// URL (?schema=name picks"
        " the schema)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds the customers (default 1)")
    parser.add_argument("--customers", type=int, default=50, help="default 50")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--steps", type=int, help="commands the customers send (default 2,000)")
    amount.add_argument("--duration", type=float, help="seconds the customers act, instead")
    parser.add_argument("--couriers", type=int, default=4, help="deliveries at once (default 4)")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time the process managers get to finish (default 300)",
    )
    parser.add_argument(
        "--processes",
        default="1",
        metavar="N",
        help="worker processes sharing the store, each running its share of the customers"
        f" and every process manager under a lease (default 1: this process; at most"
        f" {MAX_PROCESSES})",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="partitions of each of the bank's and the shop's process managers, each"
        " leased on its own so that the processes share them (default: one per process)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="the process managers' lease: a killed holder is replaced within about 1.2"
        " times this (default 2)",
    )
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="with --processes N > 1: kill a random worker (SIGKILL) every --chaos-interval"
        " while the customers act, never the last one alive, and start a new one in its place",
    )
    parser.add_argument(
        "--chaos-interval",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="seconds between two kills (default 3)",
    )
    parser.add_argument(
        "--ack-log",
        metavar="PATH",
        help="append 'stream<TAB>version<TAB>position' per acknowledged command",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_cli(args: argparse.Namespace) -> int:
    """Run `simulate` with parsed `args`; print the report.

    Returns:
        0 when every invariant holds, 1 when one does not (or a worker process failed),
        2 for options that cannot run or a store that cannot be opened (with a message
        on stderr).
    """
    steps = args.steps
    if steps is None and args.duration is None:
        steps = 2_000
    try:
        processes: Any = int(args.processes)
    except ValueError:
        processes = args.processes  # refused by SimOptions, by name
    db = args.db
    if db is None and processes == 1:
        db = "demo.db"
    try:
        options = SimOptions(
            db=db,
            seed=args.seed,
            customers=args.customers,
            steps=steps,
            duration=args.duration,
            couriers=args.couriers,
            settle_timeout=args.settle_timeout,
            processes=processes,
            lease_ttl=args.lease_ttl,
            partitions=args.partitions,
            chaos=args.chaos,
            chaos_interval=args.chaos_interval,
            ack_log=args.ack_log,
        )
    except SimulationError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2

    async def one() -> SimReport:
        return await simulate(options)

    try:
        report = anyio.run(one, backend="asyncio")
    except StoreError as error:  # the file cannot be opened or read: nothing was checked
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    except SimulationError as error:  # a worker failed: nothing was checked
        print(f"simulate: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(report).decode(), flush=True)
    else:
        print(render(report), flush=True)
    return 0 if report.ok else 1
