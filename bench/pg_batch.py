"""Throughput of the PostgreSQL batch append (`store._postgres_batch.write_batch`),
side by side with the fastest raw asyncpg insert of the same rows.

The batch side: one connection commits batches of A appends (1, 100, 1,000), each of E
events (1 or 5), one batch after the other, each append at the exact version of its
stream (every check passes), appends spread over `--streams` streams, with a
`StreamVersions` cache as the store's writer keeps. One batch is one statement, one round
trip, one commit. The raw side: the same rows (same columns, same
`events` table with its indexes) with asyncpg's COPY (`copy_records_to_table`) and with a
multi-row `INSERT ... SELECT FROM unnest(...)`, both in 1,000-row transactions; the raw
figure is the faster of the two. Every run uses a fresh schema, dropped after; runs
alternate all configurations and the raw inserts, so all see the machine at nearly the
same moment. Figures are medians over the runs; CPU is this (client) process's user +
system time per 1,000 events. No timing is asserted.

    python -m bench.pg_batch --events 20000 --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import msgspec

from bench.store_append import PG_COLUMNS as COLUMNS
from store._postgres_batch import StreamVersions, write_batch
from store._postgres_schema import migrate, quote_ident

RAW_TRANSACTION_ROWS = 1_000
BATCH_SIZES = (1, 100, 1_000)
EVENTS_PER_APPEND = (1, 5)


class Append(msgspec.Struct, frozen=True, gc=False):
    """An append as the store queues it (the `BatchAppend` protocol)."""

    stream_id: str
    expected: int
    rows: list[tuple[str, int, bytes, int]]
    metadata_bytes: bytes | None = None
    command_id: str | None = None
    digest: bytes | None = None


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    events: int
    commits: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def commits_per_second(self) -> float:
        return self.commits / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_seconds / self.events * 1000


def payload(n: int) -> bytes:
    """About 40 bytes, like a small msgpack-encoded event."""
    return b"\x93\xcd" + n.to_bytes(4, "big") + b"\xa3EUR\xb8reference-" + b"%014d" % n


def make_batches(batches: int, size: int, per_append: int, streams: int) -> list[list[Append]]:
    versions = [0] * streams
    out: list[list[Append]] = []
    n = 0
    for _ in range(batches):
        batch = []
        for _ in range(size):
            stream = n % streams
            rows = []
            for _ in range(per_append):
                data = payload(n)
                rows.append(("bench.deposited", 1, data, zlib.crc32(data)))
                n += 1
            batch.append(Append(f"account-{stream}", versions[stream], rows))
            versions[stream] += per_append
        out.append(batch)
    return out


def raw_rows(events: int, streams: int, recorded_at: float) -> list[tuple[Any, ...]]:
    """The rows `events` single-event appends over `streams` streams would store."""
    rows: list[tuple[Any, ...]] = []
    for n in range(events):
        data = payload(n)
        rows.append(
            (
                n + 1,
                f"account-{n % streams}",
                n // streams + 1,
                "bench.deposited",
                1,
                data,
                None,
                None,
                recorded_at,
                zlib.crc32(data),
            )
        )
    return rows


async def in_fresh_schema(
    url: str, work: Callable[[asyncpg.Connection, str], Coroutine[Any, Any, Run]]
) -> Run:
    schema = f"esactors_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, schema)
        return await work(conn, schema)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        await conn.close()


async def store_run(url: str, batches: int, size: int, per_append: int, streams: int) -> Run:
    work = make_batches(batches, size, per_append, streams)
    warmup = [Append("warmup", 0, [("bench.warmup", 1, b"", 0)])]

    async def go(conn: asyncpg.Connection, schema: str) -> Run:
        versions = StreamVersions()
        await write_batch(conn, schema, warmup, time.time(), versions=versions)  # prepares
        cpu, started = time.process_time(), time.perf_counter()
        for batch in work:
            result = await write_batch(conn, schema, batch, time.time(), versions=versions)
            if result.outcomes[-1].kind != 0:
                raise RuntimeError(f"an append was refused: {result.outcomes[-1]}")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Run(seconds, cpu, batches * size * per_append, batches)

    return await in_fresh_schema(url, go)


async def copy_run(url: str, rows: list[tuple[Any, ...]]) -> Run:
    async def go(conn: asyncpg.Connection, schema: str) -> Run:
        cpu, started = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), RAW_TRANSACTION_ROWS):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "events",
                    records=rows[start : start + RAW_TRANSACTION_ROWS],
                    columns=COLUMNS,
                    schema_name=schema,
                )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Run(seconds, cpu, len(rows), -(-len(rows) // RAW_TRANSACTION_ROWS))

    return await in_fresh_schema(url, go)


async def unnest_run(url: str, rows: list[tuple[Any, ...]]) -> Run:
    async def go(conn: asyncpg.Connection, schema: str) -> Run:
        insert = (
            f"INSERT INTO {quote_ident(schema)}.events ({', '.join(COLUMNS)})"  # noqa: S608
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],"
            " $5::bigint[], $6::bytea[], $7::bytea[], $8::text[], $9::float8[], $10::bigint[])"
        )
        await conn.execute(f"SELECT 1 FROM {quote_ident(schema)}.events LIMIT 0")  # noqa: S608
        cpu, started = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), RAW_TRANSACTION_ROWS):
            chunk = rows[start : start + RAW_TRANSACTION_ROWS]
            columns = [list(column) for column in zip(*chunk, strict=True)]
            await conn.execute(insert, *columns)  # autocommit: one transaction each
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Run(seconds, cpu, len(rows), -(-len(rows) // RAW_TRANSACTION_ROWS))

    return await in_fresh_schema(url, go)


def median_run(runs: list[Run]) -> dict[str, float]:
    return {
        "events_per_second": statistics.median(r.events_per_second for r in runs),
        "commits_per_second": statistics.median(r.commits_per_second for r in runs),
        "cpu_per_1000": statistics.median(r.cpu_per_1000 for r in runs),
    }


async def main(args: argparse.Namespace) -> None:
    configs = [(size, per) for size in BATCH_SIZES for per in EVENTS_PER_APPEND]
    results: dict[str, list[Run]] = {}
    rows = raw_rows(args.events, args.streams, time.time())
    conn = await asyncpg.connect(args.url)
    try:
        server = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    print(
        f"PostgreSQL {server} at {args.url} (synchronous_commit={sync}); client Python"
        f" {platform.python_version()} on {os.cpu_count()} CPUs; {args.runs} runs,"
        f" medians; {args.events} events per run ({args.max_batches} batches at most)"
    )
    for run in range(args.runs):
        order = configs if run % 2 == 0 else configs[::-1]
        results.setdefault("raw COPY", []).append(await copy_run(args.url, rows))
        for size, per in order:
            batches = max(1, min(args.max_batches, args.events // (size * per)))
            key = f"batch {size:>5} x {per} ev"
            results.setdefault(key, []).append(
                await store_run(args.url, batches, size, per, args.streams)
            )
        results.setdefault("raw INSERT unnest", []).append(await unnest_run(args.url, rows))
        print(f"  run {run + 1}/{args.runs} done", flush=True)
    raw = {k: median_run(v) for k, v in results.items() if k.startswith("raw")}
    raw_name, raw_best = max(raw.items(), key=lambda kv: kv[1]["events_per_second"])
    print(f"\nraw = {raw_name} (1,000-row transactions), the faster raw insert\n")
    print(f"{'':24} {'events/s':>10} {'commits/s':>10} {'CPU s/1k ev':>12} {'vs raw':>7}")
    for key, runs in results.items():
        m = median_run(runs)
        ratio = m["events_per_second"] / raw_best["events_per_second"]
        print(
            f"{key:24} {m['events_per_second']:>10,.0f} {m['commits_per_second']:>10,.1f}"
            f" {m['cpu_per_1000']:>12.4f} {ratio:>7.2f}"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "ESACTORS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument(
        "--max-batches", type=int, default=1_000, help="batches per run at most (small batches)"
    )
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    anyio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
