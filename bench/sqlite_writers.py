"""What a second writer costs SQLite itself: one connection against two taking turns.

SQLite drops a connection's whole page cache when it begins a transaction after another
connection has written to the file. Two processes on one store therefore start every
batch transaction with an empty cache and read again every page it touches: with
appends to many streams, one index page per stream. This benchmark measures that cost
alone, without esactors' runtime: on the store's schema and settings (`synchronous`
NORMAL, so the disk's flush does not blur it; the WAL checkpointed every 10
transactions, outside the timing), one thread appends `--streams` events, one to each
of as many streams, per transaction, either always on one connection or on two in
turn. Both run in one thread, one after the other, so only the cache differs. Each
round runs both ways, alternating which goes first; the table gives the CPU time of a
transaction each way, their ratio and the difference per row. The file grows from
round to round, and each transaction with it: compare the two ways within a round.

    python -m bench.sqlite_writers
    python -m bench.sqlite_writers --streams 1000 --transactions 60 --rounds 5 --mmap
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Sequence
from typing import Any

from store import StoreOptions
from store._schema import migrate
from store._sqlite_connect import _configure
from store._sqlite_rows import _INSERT_PLAIN_EVENTS, RowInserter

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_writers", description=__doc__)
    parser.add_argument("--streams", type=int, default=1_000, help="appends per transaction")
    parser.add_argument("--transactions", type=int, default=60, help="per way per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=100, help="events per stream first")
    parser.add_argument(
        "--mmap", action="store_true", help="both connections map the file (256 MiB)"
    )
    return parser


class _Log:
    """The file and what the benchmark appended to it: each stream's version, the last
    position."""

    def __init__(self, streams: int) -> None:
        self.versions = {f"account-{i:05d}": 0 for i in range(streams)}
        self.position = 0
        self.rows = RowInserter()
        self.payload = b"\x81\xa6amount\x05"  # a small msgpack map, as a deposit's
        self.checksum = zlib.crc32(self.payload)

    def transaction(self, conn: sqlite3.Connection, rng: random.Random) -> float:
        """Append one event to each stream, in a random order, in one transaction on
        `conn`; the CPU seconds it took this thread."""
        flat: list[Any] = []
        now = time.time()
        for stream in rng.sample(list(self.versions), len(self.versions)):
            self.versions[stream] += 1
            self.position += 1
            version = self.versions[stream]
            flat += (self.position, stream, version, "bank.deposited", 1, self.payload)
            flat += (now, self.checksum)
        started = time.thread_time()
        conn.execute("BEGIN IMMEDIATE")
        self.rows._insert_rows(conn, _INSERT_PLAIN_EVENTS, 8, flat)
        conn.execute("COMMIT")
        return time.thread_time() - started


_CHECKPOINT_EVERY = 10
_MMAP = {False: "PRAGMA mmap_size = 0", True: "PRAGMA mmap_size = 268435456"}


def _connect(path: str, mmap: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _configure(conn, StoreOptions(synchronous="NORMAL"), memory=False)
    conn.execute(_MMAP[mmap])
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpointed between timings instead
    return conn


def _run(
    log: _Log, conns: Sequence[sqlite3.Connection], transactions: int, rng: random.Random
) -> float:
    """Milliseconds of CPU per transaction, the connections taking turns. The WAL is
    checkpointed every `_CHECKPOINT_EVERY` transactions, outside the timing: where a
    checkpoint falls would weigh more than what is measured."""
    spent = 0.0
    for n in range(transactions):
        spent += log.transaction(conns[n % len(conns)], rng)
        if n % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
            conns[0].execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return spent / transactions * 1000


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table; 0."""
    args = _parser().parse_args(argv)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="esactors-writers-") as tmp:
        path = os.path.join(tmp, "writers.db")
        one = _connect(path, args.mmap)
        migrate(one)
        other = _connect(path, args.mmap)
        log = _Log(args.streams)
        for _ in range(args.prefill):
            log.transaction(one, rng)
        print(
            f"# {args.streams:,} appends a transaction, one per stream, {args.transactions}"
            f" transactions per way per round, {args.prefill} events per stream first"
            f"{', the file mapped' if args.mmap else ''}; CPU ms per transaction"
        )
        print(f"{'round':>5} {'one conn':>9} {'two conns':>9} {'ratio':>6} {'+us/row':>8}")
        ones: list[float] = []
        twos: list[float] = []
        for n in range(1, args.rounds + 1):
            ways = [(one,), (one, other)]
            if n % 2 == 0:
                ways.reverse()
            spent = {len(way): _run(log, way, args.transactions, rng) for way in ways}
            a, b = spent[1], spent[2]
            ones.append(a)
            twos.append(b)
            extra = (b - a) * 1000 / args.streams
            print(f"{n:>5} {a:>9.2f} {b:>9.2f} {b / a:>6.2f} {extra:>8.2f}", flush=True)
        a, b = statistics.median(ones), statistics.median(twos)
        print(
            f"median one connection {a:.2f} ms, two in turn {b:.2f} ms: {b / a:.2f}x,"
            f" {(b - a) * 1000 / args.streams:.2f} us more per row"
        )
        one.close()
        other.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
