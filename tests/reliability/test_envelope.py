"""Performance envelope: a large aggregate loads in pages (PERF-1); the WAL stays bounded
while a long reader holds a snapshot, and shrinks when the store closes (ENV-3)."""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
from pathlib import Path

import anyio

from actors import open_system
from store import ANY, open_store
from tests.actors.domain import Counter, CounterState, Increment, Incremented
from tests.reliability._report import Report, size


class SnapCounter(Counter):
    """The same streams as `Counter`, with a snapshot every 1,000 events."""

    category = "counter"
    snapshot_every = 1_000


async def _cold_load(
    path: Path, aggregate: type[Counter], page: int
) -> tuple[CounterState, float, int]:
    async with open_system(path, load_page_size=page) as system:
        counters = system.aggregates(aggregate)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            state = await counters.state("big")
            elapsed = (time.perf_counter() - started) * 1e3
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return state, elapsed, peak


async def test_perf1_large_aggregate_load(tmp_path: Path, report: Report) -> None:
    events = size(20_000, 100_000)
    path = tmp_path / "big.db"
    async with open_store(path, synchronous="NORMAL") as store:
        store.registry.register(Incremented)
        for start in range(0, events - 1, 1_000):
            count = min(1_000, events - 1 - start)
            await store.append("counter-big", [Incremented(by=1)] * count, expected_version=ANY)
    async with open_system(path) as system:  # one more command takes the snapshot
        snaps = system.aggregates(SnapCounter)
        assert (await snaps.ask("big", Increment(by=1))).version == events
        await snaps.state("big")  # after the command: its snapshot is saved after the reply
        assert system.statistics().snapshots == 1
    async with open_store(path) as store:  # events after the snapshot
        store.registry.register(Incremented)
        await store.append("counter-big", [Incremented(by=2)] * 500, expected_version=events)

    plain, plain_ms, paged_peak = await _cold_load(path, Counter, 1_000)
    snapped, snap_ms, snap_peak = await _cold_load(path, SnapCounter, 1_000)
    whole, _, whole_peak = await _cold_load(path, Counter, events + 500)
    report.record(
        "PERF-1",
        events=events + 500,
        load_ms_no_snapshot=round(plain_ms, 1),
        load_ms_with_snapshot=round(snap_ms, 1),
        peak_kib_paged_1000=paged_peak // 1024,
        peak_kib_with_snapshot=snap_peak // 1024,
        peak_kib_one_page=whole_peak // 1024,
    )
    assert plain == snapped == whole
    assert plain.value == events + 1_000
    # O(page), not O(stream): paging by 1,000 holds far less than reading it all at once
    assert paged_peak * 4 < whole_peak


WAL_LIMIT = 64 * 2**20  # the store's journal_size_limit


def _wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_env3_wal_growth_bounded(tmp_path: Path, report: Report) -> None:
    appends = size(10_000, 100_000)
    writers = 50
    path = tmp_path / "wal.db"
    max_wal = 0
    async with open_store(path, synchronous="NORMAL") as store:
        store.registry.register(Incremented)
        await store.append("counter-0", [Incremented(by=1)], expected_version=ANY)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            held = reader.execute("SELECT count(*) FROM events").fetchone()[0]

            async def writer(index: int) -> None:
                nonlocal max_wal
                for n in range(appends // writers):
                    await store.append(
                        f"counter-{index}", [Incremented(by=1)], expected_version=ANY
                    )
                    if n % 50 == 0:
                        max_wal = max(max_wal, _wal_size(path))

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for index in range(writers):
                        tg.start_soon(writer, index)
            # the long reader still sees its snapshot: the WAL could not be recycled
            still = reader.execute("SELECT count(*) FROM events").fetchone()[0]
            wal_with_reader = _wal_size(path)
        finally:
            reader.execute("COMMIT")
            reader.close()
        # the reader is gone: the next automatic checkpoint can run to the end
        for _ in range(200):
            await store.append("counter-0", [Incremented(by=1)], expected_version=ANY)
        max_wal = max(max_wal, _wal_size(path))
        with sqlite3.connect(path) as check:
            busy, log, checkpointed = check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        check.close()
        # the next write starts the WAL over and cuts the file to journal_size_limit
        await store.append("counter-0", [Incremented(by=1)], expected_version=ANY)
        wal_open = _wal_size(path)
    wal_after_close = _wal_size(path)
    report.record(
        "ENV-3",
        appends=appends,
        max_wal_mib=round(max_wal / 2**20, 2),
        wal_with_reader_mib=round(wal_with_reader / 2**20, 2),
        wal_after_reader_mib=round(wal_open / 2**20, 2),
        wal_after_close_bytes=wal_after_close,
    )
    assert (held, still) == (1, 1)
    assert busy == 0
    assert log == checkpointed  # every frame could be folded back once the reader left
    assert max_wal < size(64, 512) * 2**20
    assert wal_open <= WAL_LIMIT
    assert wal_after_close == 0  # closing truncates the WAL
