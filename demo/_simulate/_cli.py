"""The `simulate` subcommand: its options on the command line, and the run printed."""

from __future__ import annotations

import argparse
import sys

import anyio
import msgspec

from demo._simulate._options import SimOptions, SimulationError
from demo._simulate._report import SimReport, render
from demo._simulate._simulation import simulate
from store import StoreError

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's options."""
    parser.add_argument(
        "--db",
        default="demo.db",
        help="SQLite file (default demo.db; ':memory:' works) or a postgresql:// URL"
        " (?schema=name picks the schema)",
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
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_cli(args: argparse.Namespace) -> int:
    """Run `simulate` with parsed `args`; print the report.

    Returns:
        0 when every invariant holds, 1 when one does not, 2 for options that cannot
        run or a store that cannot be opened (with a message on stderr).
    """
    steps = args.steps
    if steps is None and args.duration is None:
        steps = 2_000
    try:
        options = SimOptions(
            db=args.db,
            seed=args.seed,
            customers=args.customers,
            steps=steps,
            duration=args.duration,
            couriers=args.couriers,
            settle_timeout=args.settle_timeout,
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
    if args.json:
        print(msgspec.json.encode(report).decode(), flush=True)
    else:
        print(render(report), flush=True)
    return 0 if report.ok else 1
