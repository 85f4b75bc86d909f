"""esactors side by side with raw sqlite3 and with a peer library, on one workload.

The workload: 1,000 bank accounts (opened before the clock starts), then N deposit
commands spread over them at random (seeded), one event per command, synchronous=FULL,
a fresh temporary file for every run. Runs alternate A, B, C1, C8, A, B, C1, C8...:

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

It prints each round, then the medians, the CPU time per command of each side (this
process, every thread; for A the store's writer thread included), and A against the
peer's faster setting by median (and per round against that round's faster peer), and
whether that meets the floor (25x on SQLite, 20x on PostgreSQL).

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
from dataclasses import dataclass, field
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
SQLITE_FLOOR = 25.0  # esactors against the peer's faster setting, on SQLite
POSTGRES_FLOOR = 20.0  # and on PostgreSQL


def make_plan(commands: int, seed: int) -> list[tuple[int, int]]:
    """(account index, amount in cents) for every command, spread at random."""
    rng = random.Random(seed)
    return [(rng.randrange(ACCOUNTS), rng.randint(1, 10_000)) for _ in range(commands)]


def account_id(index: int) -> str:
    return f"acc-{index}"


async def run_esactors(path: Path | str, plan: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """The seconds the commands of `plan` took through `ask`, `IN_FLIGHT` at once, and
    the process's CPU seconds meanwhile (every thread: the store's writer included)."""
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

        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for _ in range(IN_FLIGHT):
                tg.start_soon(sender)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        events = await system.store.last_position()
    if events != ACCOUNTS + len(plan):
        raise RuntimeError(f"esactors committed {events} events, expected {ACCOUNTS + len(plan)}")
    return seconds, cpu


async def run_esactors_postgres(url: str, plan: Sequence[tuple[int, int]]) -> tuple[float, float]:
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


@dataclass
class _Side:
    """One side's runs: commands (rows) per second and CPU µs per command (row)."""

    name: str
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def add(self, commands: int, seconds: float, cpu_seconds: float) -> float:
        rate = commands / seconds
        self.rates.append(rate)
        self.cpu_us.append(cpu_seconds * 1e6 / commands)
        return rate

    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def _print_medians(
    a: _Side, others: Sequence[_Side], peers: dict[int, _Side], floor: float
) -> None:
    """The medians row, CPU per command, and A against the peer's faster setting, with
    whether that meets `floor` (the ratio of medians)."""
    a_med = a.median()
    assert a_med is not None
    cells = "  ".join(_rate(side.median()) for side in others)
    print(f"{'median':>6}  {_rate(a_med)}  {cells}")
    cpu = ", ".join(
        f"{side.name} {statistics.median(side.cpu_us):,.1f}" for side in (a, *others) if side.cpu_us
    )
    print(f"CPU µs per command (median; this process, every thread): {cpu}")
    measured = {n: side for n, side in peers.items() if side.rates}
    if not measured:
        print("esactors/peer: not measured (peer skipped)")
        return
    fastest = max(measured, key=lambda n: measured[n].median() or 0.0)
    best = measured[fastest].median()
    assert best is not None
    per_run = ", ".join(
        f"{x / max(side.rates[i] for side in measured.values()):.1f}" for i, x in enumerate(a.rates)
    )
    print(
        f"esactors/peer {a_med / best:.1f}x against the peer's faster setting"
        f" ({_threads(fastest)}; "
        + ", ".join(f"{_threads(n)} {side.median():,.0f}/s" for n, side in measured.items())
        + f"); per round against that round's faster peer: {per_run}"
    )
    met = "met" if a_med / best >= floor else "not met"
    print(f"floor: esactors/peer >= {floor:g}x: {met}")


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
    a = _Side("A")
    peers = {n: _Side(f"C{n}") for n in threads}
    print(f"{'run':>6}  {'A esactors':>11}  " + "  ".join(f"{f'C{n} peer':>11}" for n in threads))
    for run in range(1, args.runs + 1):
        rate = a.add(len(plan), *anyio.run(run_esactors_postgres, url, plan))
        cells = []
        for n in threads:
            if peer is None:
                cells.append(_rate(None))
                continue
            cells.append(
                _rate(
                    peers[n].add(
                        len(plan), *peer.run_peer_deposits_postgres(url, ACCOUNTS, plan, n)
                    )
                )
            )
        print(f"{run:>6}  {_rate(rate)}  {'  '.join(cells)}", flush=True)
    _print_medians(a, list(peers.values()), peers, POSTGRES_FLOOR)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.db is not None:
        return main_postgres(args)
    info = machine()
    peer = load_peer()
    plan = make_plan(args.commands, args.seed)
    threads = sorted({1, args.peer_workers})
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
        f" transaction; C: eventsourcing, {' and '.join(map(str, threads))} threads"
    )
    a, b = _Side("A"), _Side("B")
    peers = {n: _Side(f"C{n}") for n in threads}
    names = "  ".join(f"{f'C{n} peer':>11}" for n in threads)
    print(f"{'run':>6}  {'A esactors':>11}  {'B raw':>11}  {names}  {'A/B':>5}")
    settings: tuple[str, int] | None = None
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
            rate = a.add(len(plan), *anyio.run(run_esactors, Path(tmp) / "a.db", plan))
        with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
            raw: RawRun = run_raw(Path(tmp) / "b.db", workload, rows)
        b.rates.append(raw.events_per_second)
        b.cpu_us.append(raw.cpu_us_per_event)
        cells = []
        for n in threads:
            if peer is None:
                cells.append(_rate(None))
                continue
            with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dir) as tmp:
                seconds, cpu, mode, level = peer.run_peer_deposits(
                    Path(tmp) / "c.db", ACCOUNTS, plan, n
                )
            settings = (mode, level)
            cells.append(_rate(peers[n].add(len(plan), seconds, cpu)))
        print(
            f"{run:>6}  {_rate(rate)}  {_rate(raw.events_per_second)}  {'  '.join(cells)}"
            f"  {rate / raw.events_per_second:>5.2f}",
            flush=True,
        )
    _print_medians(a, [b, *peers.values()], peers, SQLITE_FLOOR)
    a_med, b_med = a.median(), b.median()
    assert a_med is not None
    assert b_med is not None
    print(f"esactors/raw {a_med / b_med:.2f}", end="")
    if settings is not None:
        levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        print(
            f"  (peer: journal_mode={settings[0]},"
            f" synchronous={levels.get(settings[1], settings[1])})"
        )
    else:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
