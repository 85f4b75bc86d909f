"""Append throughput of the event store, side by side with raw sqlite3 (or asyncpg) inserts.

The store side is the command path: C concurrent callers, each owning a set of streams,
append E events per call to one of its streams at the version it knows (the expected
version check passes every time). The raw side is the limit: the stdlib `sqlite3`
module inserting the same rows (already encoded, with the store's INSERT statement) with
`executemany`, 1,000 rows per transaction, into a file with the same schema and PRAGMAs.
The store runs with each of its writers (the writer thread, the default, and the writer
process, `writer="process"`). Runs alternate thread, process, raw, thread, process,
raw... on fresh temporary files, so all see the same machine at nearly the same moment;
the ratio of the medians is the number to watch on a shared machine.

    python -m bench.store_append --events 200000 --streams 10000 --callers 1000 --runs 5

With `--db postgresql://...` it measures the PostgreSQL store instead, through
`open_store(url)` (the public path: the writer connection group-commits through the
batch function), with the same callers and workload, against the fastest raw asyncpg
insert of the same rows into the same `events` table (same columns, same indexes): COPY
(`copy_records_to_table`) and a multi-row `INSERT ... SELECT FROM unnest(...)`, both in
1,000-row transactions, on a connection with the store's `synchronous_commit`. Each run
(store, COPY, INSERT, alternating) works in a fresh schema, dropped after. The ratio is
the store's median over the faster raw median. CPU is this process's per event; with
the server on this machine, the server's too (every postgres process's CPU time over
the run, from /proc: other clients of the server count in it).

    python -m bench.store_append --db postgresql://postgres@127.0.0.1:5432/test \
        --events 100000 --streams 10000 --callers 1000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import msgspec
import structlog

from store import NO_STREAM, EventRegistry, StoreSettings, StoreStatistics, open_store
from store._options import StoreOptions, Synchronous, Writer
from store._schema import migrate
from store._sqlite_connect import _configure
from store._sqlite_rows import _INSERT_PLAIN_EVENT


class Deposited(msgspec.Struct, frozen=True, tag="bench.deposited"):
    """A small, typical event: a few fields, about 40 bytes encoded."""

    amount: int
    currency: str
    reference: str


RAW_TRANSACTION_ROWS = 1_000
WRITERS: tuple[Writer, ...] = ("thread", "process")
PG_COLUMNS = (
    "position",
    "stream_id",
    "version",
    "event_type",
    "schema_version",
    "data",
    "metadata",
    "command_id",
    "recorded_at",
    "checksum",
)
PG_RAW = ("COPY", "INSERT")


@dataclass(frozen=True)
class Workload:
    events: int
    streams: int
    callers: int
    events_per_append: int
    synchronous: Synchronous
    max_batch_events: int | None = None  # the store's option; None: its default

    def store_options(self) -> StoreSettings:
        """Options for `open_store` beyond the defaults."""
        if self.max_batch_events is None:
            return {}
        return {"max_batch_events": self.max_batch_events}


@dataclass(frozen=True)
class StoreRun:
    seconds: float
    events_per_second: float
    cpu_us_per_event: float
    batches: int
    events_per_batch: float
    appends_per_batch: float
    commit_ms_mean: float
    commit_ms_max: float


@dataclass(frozen=True)
class RawRun:
    seconds: float
    events_per_second: float
    cpu_us_per_event: float


def make_events(workload: Workload) -> list[Deposited]:
    per = workload.events_per_append
    return [
        Deposited(amount=i % 1000 + 1, currency="EUR", reference=f"ref-{i}") for i in range(per)
    ]


def stream_name(index: int) -> str:
    return f"account-{index}"


def plan(workload: Workload) -> list[list[int]]:
    """Appends per caller: a list of stream indexes, in the order the caller appends.

    Caller c owns streams c, c + C, c + 2C...; it cycles over them. Total appends are
    events / events_per_append, shared out as evenly as possible.
    """
    appends = workload.events // workload.events_per_append
    callers = workload.callers
    owned = [list(range(c, workload.streams, callers)) for c in range(callers)]
    out: list[list[int]] = []
    for c in range(callers):
        share = appends // callers + (1 if c < appends % callers else 0)
        mine = owned[c]
        out.append([mine[i % len(mine)] for i in range(share)])
    return out


async def run_store(path: Path, workload: Workload, writer: Writer = "thread") -> StoreRun:
    events = make_events(workload)
    schedule = plan(workload)
    # An aggregate actor knows its stream id; build them before the clock starts.
    names = [stream_name(index) for index in range(workload.streams)]
    registry = EventRegistry([Deposited])
    children = _children_cpu()
    settings = workload.store_options()
    settings["synchronous"] = workload.synchronous
    settings["writer"] = writer
    async with open_store(path, registry=registry, **settings) as store:

        async def caller(streams: Sequence[int]) -> None:
            versions: dict[int, int] = {}
            for index in streams:
                version = versions.get(index, NO_STREAM)
                result = await store.append(names[index], events, expected_version=version)
                versions[index] = result.last_version

        cpu = time.process_time()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for streams in schedule:
                tg.start_soon(caller, streams)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        stats: StoreStatistics = store.statistics()
    # The writer process's CPU time (its start included), once it has exited.
    cpu += _children_cpu() - children
    total = sum(len(s) for s in schedule) * workload.events_per_append
    if stats.events != total or stats.last_position != total:
        raise RuntimeError(f"store committed {stats.events} events, expected {total}")
    return StoreRun(
        seconds=seconds,
        events_per_second=total / seconds,
        cpu_us_per_event=cpu / total * 1e6,
        batches=stats.batches,
        events_per_batch=stats.events_per_batch,
        appends_per_batch=stats.appends_per_batch,
        commit_ms_mean=stats.commit_ms_mean,
        commit_ms_max=stats.commit_ms_max,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_rows(workload: Workload) -> list[tuple[object, ...]]:
    """The rows the store writes for the same workload, in the same order (pre-encoded).

    They have no metadata and no command id, so they are bound to the statement the
    store uses for such rows (the two NULL columns left to their default).
    """
    encoder = msgspec.msgpack.Encoder()
    encoded = [
        (e.__struct_config__.tag, 1, data, zlib.crc32(data))
        for e in make_events(workload)
        for data in (encoder.encode(e),)
    ]
    schedule = plan(workload)
    versions: dict[int, int] = {}
    rows: list[tuple[object, ...]] = []
    position = 0
    recorded_at = time.time()
    # Round-robin over callers approximates the store's interleaving; order does not
    # change the cost of the inserts much, but keep it realistic.
    longest = max(len(s) for s in schedule)
    for turn in range(longest):
        for streams in schedule:
            if turn >= len(streams):
                continue
            index = streams[turn]
            version = versions.get(index, 0)
            stream_id = stream_name(index)
            for tag, schema_version, data, crc in encoded:
                position += 1
                version += 1
                rows.append(
                    (position, stream_id, version, tag, schema_version, data, recorded_at, crc)
                )
            versions[index] = version
    return rows


def run_raw(path: Path, workload: Workload, rows: list[tuple[object, ...]]) -> RawRun:
    options = StoreOptions(synchronous="FULL" if workload.synchronous == "FULL" else "NORMAL")
    conn = sqlite3.connect(path, isolation_level=None, timeout=options.busy_timeout)
    try:
        _configure(conn, options, False)
        migrate(conn)
        cpu = time.process_time()
        started = time.perf_counter()
        for start in range(0, len(rows), RAW_TRANSACTION_ROWS):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT_PLAIN_EVENT, rows[start : start + RAW_TRANSACTION_ROWS])
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    if count != len(rows):
        raise RuntimeError(f"raw inserted {count} rows, expected {len(rows)}")
    return RawRun(
        seconds=seconds,
        events_per_second=len(rows) / seconds,
        cpu_us_per_event=cpu / len(rows) * 1e6,
    )


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--streams", type=int, default=10_000, help="distinct streams")
    parser.add_argument("--callers", type=int, default=1_000, help="concurrent appenders")
    parser.add_argument(
        "--runs", type=int, default=5, help="rounds: each writer, then raw, alternating"
    )
    parser.add_argument(
        "--events-per-append", type=int, default=1, help="events in each append call"
    )
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument(
        "--max-batch-events",
        type=int,
        default=None,
        help="the store's max_batch_events (default: the store's default)",
    )
    parser.add_argument(
        "--writer",
        choices=(*WRITERS, "both"),
        default="both",
        help="the store's writer (open_store's writer option); both: alternate them",
    )
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="a postgresql:// URL: measure the PostgreSQL store against raw asyncpg",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    for name in ("events", "streams", "callers", "runs", "events_per_append"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_batch_events is not None and args.max_batch_events < 1:
        parser.error("--max-batch-events must be >= 1")
    if args.callers > args.streams:
        parser.error("--callers must be <= --streams: every caller owns at least one stream")
    if args.events < args.events_per_append * args.callers:
        parser.error("--events must give every caller at least one append")
    return args


# -- PostgreSQL (--db) ---------------------------------------------------------------


def server_cpu() -> float | None:
    """CPU seconds of every postgres process on this machine (None: none readable)."""
    total = 0.0
    found = False
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(") ")
        if not name.endswith("(postgres"):
            continue
        fields = rest.split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        found = True
    return total if found else None


def fresh_schema() -> str:
    return f"esactors_bench_{uuid.uuid4().hex[:12]}"


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    from store._postgres_schema import quote_ident

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


async def run_pg_store(url: str, workload: Workload) -> tuple[StoreRun, float | None]:
    """The PostgreSQL store through `open_store`, in a fresh schema (dropped after)."""
    events = make_events(workload)
    schedule = plan(workload)
    names = [stream_name(index) for index in range(workload.streams)]
    registry = EventRegistry([Deposited])
    schema = fresh_schema()
    separator = "&" if "?" in url else "?"
    settings = workload.store_options()
    settings["synchronous"] = workload.synchronous
    try:
        async with open_store(
            f"{url}{separator}schema={schema}", registry=registry, **settings
        ) as store:

            async def caller(streams: Sequence[int]) -> None:
                versions: dict[int, int] = {}
                for index in streams:
                    version = versions.get(index, NO_STREAM)
                    result = await store.append(names[index], events, expected_version=version)
                    versions[index] = result.last_version

            server = server_cpu()
            cpu = time.process_time()
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for streams in schedule:
                    tg.start_soon(caller, streams)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            server_end = server_cpu()
            stats: StoreStatistics = store.statistics()
            stored = await store.last_position()
    finally:
        await drop_schema(url, schema)
    total = sum(len(s) for s in schedule) * workload.events_per_append
    if stats.events != total or stats.last_position != total or stored != total:
        raise RuntimeError(f"store committed {stats.events} events, expected {total}")
    server_us = None
    if server is not None and server_end is not None:
        server_us = (server_end - server) / total * 1e6
    run = StoreRun(
        seconds=seconds,
        events_per_second=total / seconds,
        cpu_us_per_event=cpu / total * 1e6,
        batches=stats.batches,
        events_per_batch=stats.events_per_batch,
        appends_per_batch=stats.appends_per_batch,
        commit_ms_mean=stats.commit_ms_mean,
        commit_ms_max=stats.commit_ms_max,
    )
    return run, server_us


def pg_raw_rows(workload: Workload) -> list[tuple[object, ...]]:
    """`raw_rows` with PostgreSQL's columns (`PG_COLUMNS`: metadata, command id NULL)."""
    return [
        (position, stream_id, version, tag, schema_version, data, None, None, at, crc)
        for position, stream_id, version, tag, schema_version, data, at, crc in raw_rows(workload)
    ]


async def run_pg_raw(
    url: str, workload: Workload, rows: list[tuple[object, ...]], method: str
) -> tuple[RawRun, float | None]:
    """The same rows with raw asyncpg (`method`: COPY or INSERT), in 1,000-row
    transactions, into a fresh schema with the store's tables (dropped after)."""
    import asyncpg

    from store._postgres_schema import migrate as pg_migrate
    from store._postgres_schema import quote_ident

    schema = fresh_schema()
    s = quote_ident(schema)
    sync = "on" if workload.synchronous == "FULL" else "off"
    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": sync})
    try:
        await pg_migrate(conn, schema)
        insert = (
            f"INSERT INTO {s}.events ({', '.join(PG_COLUMNS)})"  # noqa: S608
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],"
            " $5::bigint[], $6::bytea[], $7::bytea[], $8::text[], $9::float8[], $10::bigint[])"
        )
        if method == "INSERT":
            await conn.execute(insert, *([] for _ in PG_COLUMNS))  # prepared before the clock
        server = server_cpu()
        cpu = time.process_time()
        started = time.perf_counter()
        for start in range(0, len(rows), RAW_TRANSACTION_ROWS):
            chunk = rows[start : start + RAW_TRANSACTION_ROWS]
            if method == "COPY":
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "events", records=chunk, columns=PG_COLUMNS, schema_name=schema
                    )
            else:
                columns = [list(column) for column in zip(*chunk, strict=True)]
                await conn.execute(insert, *columns)  # autocommit: its own transaction
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server_end = server_cpu()
        count = await conn.fetchval(f"SELECT count(*) FROM {s}.events")  # noqa: S608
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        await conn.close()
    if count != len(rows):
        raise RuntimeError(f"raw {method} inserted {count} rows, expected {len(rows)}")
    server_us = None
    if server is not None and server_end is not None:
        server_us = (server_end - server) / len(rows) * 1e6
    run = RawRun(
        seconds=seconds,
        events_per_second=len(rows) / seconds,
        cpu_us_per_event=cpu / len(rows) * 1e6,
    )
    return run, server_us


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main_pg(args: argparse.Namespace, workload: Workload) -> int:
    """The PostgreSQL variant (`--db`): store, COPY, INSERT alternating, per run."""
    import asyncpg

    async def server_info() -> tuple[str, str]:
        conn = await asyncpg.connect(args.db)
        try:
            return str(await conn.fetchval("SHOW server_version")), str(
                await conn.fetchval("SHOW fsync")
            )
        finally:
            await conn.close()

    version, fsync = anyio.run(server_info)
    shown = args.db.split("@")[-1]
    quiet = args.json
    info = machine()
    if not quiet:
        print(
            f"machine: {info['cores']} cores, {info['cpu']}, {info['platform']},"
            f" Python {info['python']}; PostgreSQL {version} at {shown} (fsync={fsync})"
        )
        print(
            f"workload: {workload.events} events over {workload.streams} streams,"
            f" {workload.callers} callers, {workload.events_per_append} event(s) per append,"
            f" synchronous={workload.synchronous}, store options {workload.store_options()};"
            " store: open_store(url); raw: asyncpg COPY"
            f" and INSERT unnest, {RAW_TRANSACTION_ROWS} rows per transaction"
        )
        print(
            f"{'run':>3}  {'store ev/s':>11}  {'COPY ev/s':>11}  {'INSERT ev/s':>11}"
            f"  {'ratio':>6}  {'client CPU us/ev':>18}  {'server CPU us/ev':>18}"
            f"  {'ev/batch':>8}  {'commit ms':>9}"
        )
    rows = pg_raw_rows(workload)
    store_runs: list[StoreRun] = []
    raw_runs: dict[str, list[RawRun]] = {method: [] for method in PG_RAW}
    server: dict[str, list[float]] = {name: [] for name in ("store", *PG_RAW)}
    for run in range(1, args.runs + 1):
        order = PG_RAW if run % 2 else PG_RAW[::-1]
        s, s_server = anyio.run(run_pg_store, args.db, workload)
        this: dict[str, tuple[RawRun, float | None]] = {}
        for method in order:
            this[method] = anyio.run(run_pg_raw, args.db, workload, rows, method)
        store_runs.append(s)
        if s_server is not None:
            server["store"].append(s_server)
        for method, (r, r_server) in this.items():
            raw_runs[method].append(r)
            if r_server is not None:
                server[method].append(r_server)
        best = max(r.events_per_second for r, _ in this.values())
        if not quiet:
            copy, ins = this["COPY"], this["INSERT"]
            client = f"{s.cpu_us_per_event:.1f}/{copy[0].cpu_us_per_event:.1f}/{ins[0].cpu_us_per_event:.1f}"
            on_server = f"{_us(s_server)}/{_us(copy[1])}/{_us(ins[1])}"
            print(
                f"{run:>3}  {s.events_per_second:>11,.0f}  {copy[0].events_per_second:>11,.0f}"
                f"  {ins[0].events_per_second:>11,.0f}  {s.events_per_second / best:>6.2f}"
                f"  {client:>18}  {on_server:>18}  {s.events_per_batch:>8.1f}"
                f"  {s.commit_ms_mean:>9.2f}",
                flush=True,
            )
    store_median = statistics.median(s.events_per_second for s in store_runs)
    raw_medians = {
        method: statistics.median(r.events_per_second for r in runs)
        for method, runs in raw_runs.items()
    }
    fastest = max(raw_medians, key=lambda method: raw_medians[method])
    ratio = store_median / raw_medians[fastest]
    pair_ratio = statistics.median(
        s.events_per_second / max(raw_runs[m][i].events_per_second for m in PG_RAW)
        for i, s in enumerate(store_runs)
    )
    client_cpu = {
        "store": statistics.median(s.cpu_us_per_event for s in store_runs),
        **{m: statistics.median(r.cpu_us_per_event for r in runs) for m, runs in raw_runs.items()},
    }
    server_cpu_ = {
        name: statistics.median(values) if values else None for name, values in server.items()
    }
    summary = {
        "store_median_events_per_second": store_median,
        "raw_median_events_per_second": raw_medians,
        "fastest_raw": fastest,
        "ratio": ratio,
        "median_pair_ratio": pair_ratio,
        "client_cpu_us_per_event": client_cpu,
        "server_cpu_us_per_event": server_cpu_,
    }
    if quiet:
        document = {
            "machine": info,
            "postgres": {"version": version, "fsync": fsync},
            "workload": asdict(workload),
            "raw_transaction_rows": RAW_TRANSACTION_ROWS,
            "store": [asdict(s) for s in store_runs],
            "raw": {m: [asdict(r) for r in runs] for m, runs in raw_runs.items()},
            "summary": summary,
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    for method in PG_RAW:
        print(
            f"median  raw {method:<6} {raw_medians[method]:>9,.0f} ev/s"
            f"  client CPU {client_cpu[method]:.1f} us/ev"
            f"  server CPU {_us(server_cpu_[method])} us/ev"
        )
    print(
        f"median  store      {store_median:>9,.0f} ev/s  client CPU {client_cpu['store']:.1f}"
        f" us/ev  server CPU {_us(server_cpu_['store'])} us/ev"
    )
    print(
        f"ratio store/raw {fastest} (the faster raw) {ratio:.2f}"
        f"  (median of per-run ratios to that run's faster raw {pair_ratio:.2f})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # The store logs open/close at info; keep the figures readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workload = Workload(
        events=args.events,
        streams=args.streams,
        callers=args.callers,
        events_per_append=args.events_per_append,
        synchronous=args.synchronous,
        max_batch_events=args.max_batch_events,
    )
    if args.db is not None:
        return main_pg(args, workload)
    writers: tuple[Writer, ...] = WRITERS if args.writer == "both" else (args.writer,)
    quiet = args.json
    info = machine()
    if not quiet:
        print(
            f"machine: {info['cores']} cores, {info['cpu']}, {info['platform']},"
            f" Python {info['python']}, SQLite {info['sqlite']}"
        )
        print(
            f"workload: {workload.events} events over {workload.streams} streams,"
            f" {workload.callers} callers, {workload.events_per_append} event(s) per append,"
            f" synchronous={workload.synchronous}, store options {workload.store_options()};"
            " raw: executemany,"
            f" {RAW_TRANSACTION_ROWS} rows per transaction; store writer:"
            f" {' and '.join(writers)}"
        )
        print(
            f"{'run':>3}  {'writer':>7}  {'store ev/s':>11}  {'raw ev/s':>11}  {'ratio':>6}"
            f"  {'CPU us/ev':>13}  {'batches':>7}  {'ev/batch':>8}  {'commit ms':>9}"
            f"  {'max ms':>7}"
        )
    rows = raw_rows(workload)
    store_runs: dict[Writer, list[StoreRun]] = {writer: [] for writer in writers}
    raw_runs: list[RawRun] = []
    for run in range(1, args.runs + 1):
        this_run: dict[Writer, StoreRun] = {}
        for writer in writers:
            with tempfile.TemporaryDirectory(prefix="store-bench-", dir=args.dir) as tmp:
                this_run[writer] = anyio.run(run_store, Path(tmp) / "store.db", workload, writer)
        with tempfile.TemporaryDirectory(prefix="store-bench-", dir=args.dir) as tmp:
            r = run_raw(Path(tmp) / "raw.db", workload, rows)
        raw_runs.append(r)
        for writer, s in this_run.items():
            store_runs[writer].append(s)
            if not quiet:
                cpu = f"{s.cpu_us_per_event:.1f}/{r.cpu_us_per_event:.1f}"
                print(
                    f"{run:>3}  {writer:>7}  {s.events_per_second:>11,.0f}"
                    f"  {r.events_per_second:>11,.0f}"
                    f"  {s.events_per_second / r.events_per_second:>6.2f}  {cpu:>13}"
                    f"  {s.batches:>7}  {s.events_per_batch:>8.1f}  {s.commit_ms_mean:>9.2f}"
                    f"  {s.commit_ms_max:>7.1f}",
                    flush=True,
                )
    raw_median = statistics.median(r.events_per_second for r in raw_runs)
    raw_cpu = statistics.median(r.cpu_us_per_event for r in raw_runs)
    summaries: dict[Writer, dict[str, float]] = {}
    for writer, runs in store_runs.items():
        store_median = statistics.median(s.events_per_second for s in runs)
        summaries[writer] = {
            "store_median_events_per_second": store_median,
            "ratio": store_median / raw_median,
            "median_pair_ratio": statistics.median(
                s.events_per_second / r.events_per_second
                for s, r in zip(runs, raw_runs, strict=True)
            ),
            "store_median_cpu_us_per_event": statistics.median(s.cpu_us_per_event for s in runs),
        }
    if quiet:
        document = {
            "machine": info,
            "workload": asdict(workload),
            "raw_transaction_rows": RAW_TRANSACTION_ROWS,
            "store": {writer: [asdict(s) for s in runs] for writer, runs in store_runs.items()},
            "raw": [asdict(r) for r in raw_runs],
            "raw_median_events_per_second": raw_median,
            "raw_median_cpu_us_per_event": raw_cpu,
            "writers": summaries,
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print(f"median  raw {raw_median:,.0f} ev/s, CPU {raw_cpu:.1f} us per event")
        for writer, summary in summaries.items():
            print(
                f"median  store ({writer} writer)"
                f" {summary['store_median_events_per_second']:,.0f} ev/s"
                f"  ratio store/raw {summary['ratio']:.2f}"
                f"  (median of per-run ratios {summary['median_pair_ratio']:.2f})"
                f"  CPU {summary['store_median_cpu_us_per_event']:.1f} us per event"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
