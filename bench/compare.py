"""esactors side by side with raw sqlite3 and with a peer library, on one workload.

The workload: 1,000 bank accounts (opened before the clock starts), then N deposit
commands spread over them at random (seeded), one event per command, synchronous=FULL,
a fresh temporary file for every run. Runs alternate A, B, C, A, B, C...:

- A (esactors): `open_system` + `system.aggregates(Account).ask(...)` with the demo's
  bank `Account`, 1,000 commands in flight (one task each, pulling the next command).
- B (raw): the stdlib `sqlite3` module inserting N rows (already encoded) with
  `executemany`, 1,000 rows per transaction, into a file with the store's schema and
  PRAGMAs: the limit.
- C (peer): the `eventsourcing` library with its SQLite persistence module; its
  `Application.deposit` gets the account from the repository, calls a decorated method
  and saves it. It is synchronous, so a thread pool drives it (`--peer-workers`).
  Skipped, with a message, when the `bench` extra is not installed.

    python -m bench.compare --runs 5 --commands 20000 --peer-workers 8

With `--db postgresql://...` the same workload runs on that PostgreSQL server instead,
alternating A, C1, C8, A, C1, C8...: A is esactors' PostgreSQL store (synchronous=FULL:
`synchronous_commit=on`), each run in a fresh schema of its own; C1 and C8 are the peer
with the library's PostgreSQL module (psycopg 3, `synchronous_commit` on too) driven by
1 and `--peer-workers` threads, each run in fresh tables (a schema of their own); every
schema is dropped after its run. There is no raw side; the ratio is A against the
peer's faster setting (by median).

    python -m bench.compare --db postgresql://postgres@127.0.0.1/test --runs 3
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import anyio
import structlog

from actors import open_system
from bench.store_append import RawRun, Workload, machine, raw_rows, run_raw
from demo._backend import backend_of, redacted, scratch_schema
from demo.bank import Account, Deposit, OpenAccount

ACCOUNTS = 1_000
IN_FLIGHT = 1_000


def make_plan(commands: int, seed: int) -> list[tuple[int, int]]:
    """(account index, amount in cents) for every command, spread at random."""
    rng = random.Random(seed)
    return [(rng.randrange(ACCOUNTS), rng.randint(1, 10_000)) for _ in range(commands)]


def account_id(index: int) -> str:
    return f"acc-{index}"


async def run_esactors(path: Path | str, plan: Sequence[tuple[int, int]]) -> float:
    """Commands per second through `ask`, `IN_FLIGHT` at once."""
    async with open_system(path, synchronous="FULL") as system:
        router = system.aggregates(Account)
        ids = [account_id(i) for i in range(ACCOUNTS)]
        opening = iter(ids)

        async def open_some() -> None:
            for a in opening:
                await router.ask(a, OpenAccount(a, f"owner-{a}"))

        async with anyio.create_task_group() as tg:  # not timed
            for _ in range(IN_FLIGHT):
                tg.start_soon(open_some)

        commands = iter([(ids[i], Deposit(ids[i], amount)) for i, amount in plan])

        async def sender() -> None:
            ask = router.ask
            for a, command in commands:
                await ask(a, command)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(IN_FLIGHT):
                tg.start_soon(sender)
        seconds = time.perf_counter() - started
        events = await system.store.last_position()
    if events != ACCOUNTS + len(plan):
        raise RuntimeError(f"esactors committed {events} events, expected {ACCOUNTS + len(plan)}")
    return len(plan) / seconds


async def run_esactors_postgres(url: str, plan: Sequence[tuple[int, int]]) -> float:
    """`run_esactors` on the PostgreSQL server `url` names, in a fresh schema (dropped
    after)."""
    async with scratch_schema(url, "compare_esactors") as fresh:
        return await run_esactors(fresh, plan)


def load_peer_postgres() -> ModuleType | None:
    """The peer's PostgreSQL side, or None (with a message) when the `bench` extra
    (eventsourcing, psycopg) is missing."""
    try:
        from bench import _peer_postgres  # optional: only with the bench extra
    except ImportError as error:
        print(
            f"C (peer) skipped: eventsourcing or psycopg is not installed ({error});"
            " install them with: pip install -e '.[bench]'"
        )
        return None
    return _peer_postgres


def load_peer() -> ModuleType | None:
    """The peer side's module, or None (with a message) when `eventsourcing` is missing."""
    try:
        from bench import _peer  # optional: only with the bench extra
    except ImportError as error:
        print(
            f"C (peer) skipped: the eventsourcing library is not installed ({error});"
            " install it with: pip install -e '.[bench]'"
        )
        return None
    return _peer


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="A/B/C rounds (medians)")
    parser.add_argument("--commands", type=int, default=20_000, help="commands (rows) per run")
    parser.add_argument(
        "--peer-workers", type=int, default=8, help="threads driving the peer library"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the accounts and amounts")
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    parser.add_argument(
        "--db",
        default=None,
        help="a postgresql:// URL: compare on that server (fresh schemas, dropped after)",
    )
    args = parser.parse_args(argv)
    for name in ("runs", "commands", "peer_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.db is not None and backend_of(args.db) != "postgresql":
        parser.error(
            "--db takes a postgresql:// URL (the SQLite comparison uses temporary files: see --dir)"
        )
    return args


def _rate(value: float | None) -> str:
    return f"{value:>11,.0f}" if value is not None else f"{'skipped':>11}"


def _server_version(url: str) -> str:
    async def ask() -> str:
        import asyncpg  # the PostgreSQL store's driver, there whenever it runs

        conn = await asyncpg.connect(url.split("?", 1)[0])
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    return anyio.run(ask)


def main_postgres(args: argparse.Namespace) -> int:
    """A (esactors) against C1 / C8 (the peer on 1 and `--peer-workers` threads) on the
    PostgreSQL server `args.db`, alternating, each run on fresh tables."""
    url: str = args.db
    info = machine()
    peer = load_peer_postgres()
    plan = make_plan(args.commands, args.seed)
    threads = sorted({1, args.peer_workers})
    print(
        f"machine: {info['cores']} cores, {info['cpu']}, {info['platform']},"
        f" Python {info['python']}; PostgreSQL {_server_version(url)} at {redacted(url)}"
    )
    print(
        f"workload: {ACCOUNTS} accounts, {args.commands} deposits at random, 1 event each,"
        f" synchronous_commit=on; A: esactors, {IN_FLIGHT} in flight; C: eventsourcing"
        f" (eventsourcing.postgres), {' and '.join(map(str, threads))} threads"
    )
    names = [f"C{n} peer" for n in threads]
    print(f"{'run':>6}  {'A esactors':>11}  " + "  ".join(f"{n:>11}" for n in names) + "  A/C")
    a_runs: list[float] = []
    c_runs: dict[int, list[float]] = {n: [] for n in threads}
    for run in range(1, args.runs + 1):
        a = anyio.run(run_esactors_postgres, url, plan)
        a_runs.append(a)
        cs: dict[int, float] = {}
        if peer is not None:
            for n in threads:
                cs[n] = len(plan) / peer.run_peer_deposits_postgres(url, ACCOUNTS, plan, n)
                c_runs[n].append(cs[n])
        best = max(cs.values()) if cs else None
        ratio = f"{a / best:>5.2f}" if best is not None else f"{'-':>5}"
        row = "  ".join(_rate(cs.get(n)) for n in threads)
        print(f"{run:>6}  {_rate(a)}  {row}  {ratio}", flush=True)
    a_med = statistics.median(a_runs)
    medians = {n: statistics.median(v) for n, v in c_runs.items() if v}
    row = "  ".join(_rate(medians.get(n)) for n in threads)
    if not medians:
        print(f"{'median':>6}  {_rate(a_med)}  {row}      -")
        print("esactors/peer: not measured (peer skipped)")
        return 0
    fastest = max(medians, key=lambda n: medians[n])
    print(f"{'median':>6}  {_rate(a_med)}  {row}  {a_med / medians[fastest]:>5.2f}")
    print(
        f"esactors/peer {a_med / medians[fastest]:.2f}  (against the peer's faster setting:"
        f" {fastest} thread{'s' if fastest > 1 else ''}; "
        + ", ".join(f"{n} thread{'s' if n > 1 else ''} {medians[n]:,.0f}/s" for n in threads)
        + ")"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.db is not None:
        return main_postgres(args)
    info = machine()
    peer = load_peer()
    plan = make_plan(args.commands, args.seed)
    # B inserts the same number of rows, one event each, with the store's own encoding.
    workload = Workload(
        events=args.commands,
        streams=ACCOUNTS,
        callers=ACCOUNTS,
        events_per_append=1,
        synchronous="FULL",
    )
    rows = raw_rows(workload)
    print(
        f"machine: {info['cores']} cores, {info['cpu']}, {info['platform']},"
        f" Python {info['python']}, SQLite {info['sqlite']}"
    )
    print(
        f"workload: {ACCOUNTS} accounts, {args.commands} deposits at random, 1 event each,"
        f" synchronous=FULL; A: {IN_FLIGHT} in flight; B: executemany, 1,000 rows per"
        f" transaction; C: eventsourcing, {args.peer_workers} threads"
    )
    header = (
        f"{'run':>6}  {'A esactors':>11}  {'B raw':>11}  {'C peer':>11}  {'A/B':>5}  {'A/C':>6}"
    )
    print(header)
    a_runs: list[float] = []
    b_runs: list[float] = []
    c_runs: list[float] = []
    settings: tuple[str, int] | None = None
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
            a = anyio.run(run_esactors, Path(tmp) / "a.db", plan)
        with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
            b: RawRun = run_raw(Path(tmp) / "b.db", workload, rows)
        c: float | None = None
        if peer is not None:
            with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
                seconds, mode, level = peer.run_peer_deposits(
                    Path(tmp) / "c.db", ACCOUNTS, plan, args.peer_workers
                )
            c = len(plan) / seconds
            settings = (mode, level)
            c_runs.append(c)
        a_runs.append(a)
        b_runs.append(b.events_per_second)
        a_c = f"{a / c:>6.1f}" if c is not None else f"{'-':>6}"
        print(
            f"{run:>6}  {_rate(a)}  {_rate(b.events_per_second)}  {_rate(c)}"
            f"  {a / b.events_per_second:>5.2f}  {a_c}",
            flush=True,
        )
    a_med = statistics.median(a_runs)
    b_med = statistics.median(b_runs)
    c_med = statistics.median(c_runs) if c_runs else None
    a_c = f"{a_med / c_med:>6.1f}" if c_med is not None else f"{'-':>6}"
    print(
        f"{'median':>6}  {_rate(a_med)}  {_rate(b_med)}  {_rate(c_med)}  {a_med / b_med:>5.2f}  {a_c}"
    )
    print(f"esactors/raw {a_med / b_med:.2f}", end="")
    if c_med is not None and settings is not None:
        levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        print(
            f"  esactors/peer {a_med / c_med:.1f}  (peer: {args.peer_workers} threads,"
            f" journal_mode={settings[0]}, synchronous={levels.get(settings[1], settings[1])})"
        )
    else:
        print("  esactors/peer: not measured (peer skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
