"""Performance envelope: a large aggregate loads in pages (PERF-1); the WAL stays bounded
while a long reader holds a snapshot, and shrinks when the store closes (ENV-3)."""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import open_system
from store import ANY, _sqlite_connect, open_store
from tests._events import Opened
from tests.actors.domain import Counter, CounterState, Increment, Incremented
from tests.reliability._report import Report, size


class SnapCounter(Counter):
    """The same streams as `Counter`, with a snapshot every 1,000 events."""

    category = "counter"
    snapshot_every = 1_000


async def _cold_load(
    path: Path, aggregate: type[Counter], page: int
) -> tuple[CounterState, float, int]:
    # A page over the store's max_read_limit (100,000) needs a store that serves it.
    async with open_system(path, load_page_size=page, max_read_limit=max(page, 100_000)) as system:
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
_PAYLOAD = "w" * 8_192  # 8 KiB per event, so the WAL passes the limit at CI sizes too


def _wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _wal_run(path: Path, appends: int) -> dict[str, Any]:
    """50 writers append 8 KiB events while a reader holds a snapshot open; then the
    reader leaves, a checkpoint runs, more appends follow and the store closes. The
    WAL's size is taken at each step."""
    writers = 50
    max_wal = 0
    async with open_store(path, synchronous="NORMAL") as store:
        store.registry.register(Opened)
        event = Opened(owner=_PAYLOAD)
        await store.append("wal-0", [event], expected_version=ANY)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            held = reader.execute("SELECT count(*) FROM events").fetchone()[0]

            async def writer(index: int) -> None:
                nonlocal max_wal
                for n in range(appends // writers):
                    await store.append(f"wal-{index}", [event], expected_version=ANY)
                    if n % 50 == 0:
                        max_wal = max(max_wal, _wal_size(path))

            with anyio.fail_after(300):
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
            await store.append("wal-0", [event], expected_version=ANY)
        max_wal = max(max_wal, _wal_size(path))
        with sqlite3.connect(path) as check:
            busy, log, checkpointed = check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        check.close()
        # the next write starts the WAL over and cuts the file to journal_size_limit
        await store.append("wal-0", [event], expected_version=ANY)
        wal_after_reader = _wal_size(path)
    return {
        "appends": appends,
        "event_bytes": len(_PAYLOAD),
        "reader_kept_its_snapshot": (held, still) == (1, 1),
        "checkpoint_busy": busy,
        "frames_not_checkpointed": log - checkpointed,
        "max_wal_mib": round(max_wal / 2**20, 2),
        "wal_with_reader_mib": round(wal_with_reader / 2**20, 2),
        "wal_after_reader_mib": round(wal_after_reader / 2**20, 2),
        "wal_after_close_bytes": _wal_size(path),
    }


def check_wal(figures: dict[str, Any]) -> list[str]:
    """Violations of ENV-3: once the long reader left, a checkpoint folds every frame
    back, the next write cuts the WAL to the limit, and closing truncates it."""
    found: list[str] = []
    if figures["checkpoint_busy"] or figures["frames_not_checkpointed"]:
        found.append(
            f"the checkpoint left {figures['frames_not_checkpointed']} frames"
            f" (busy {figures['checkpoint_busy']})"
        )
    if figures["wal_after_reader_mib"] * 2**20 > WAL_LIMIT:
        found.append(
            f"the WAL kept {figures['wal_after_reader_mib']} MiB after the reader left,"
            f" over the {WAL_LIMIT // 2**20} MiB limit"
        )
    if figures["wal_after_close_bytes"]:
        found.append(f"{figures['wal_after_close_bytes']} bytes of WAL left after close")
    return found


async def test_env3_wal_growth_bounded(tmp_path: Path, report: Report) -> None:
    figures = await _wal_run(tmp_path / "wal.db", size(10_000, 50_000))
    report.record("ENV-3", **figures)
    assert figures["reader_kept_its_snapshot"]
    # the reader made the WAL grow past the limit, so cutting it back is put to the test
    assert figures["wal_with_reader_mib"] * 2**20 > WAL_LIMIT
    assert check_wal(figures) == []


async def test_env3_checker_catches_a_wal_left_at_its_peak(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: the store's connections without journal_size_limit.
    configure = _sqlite_connect._configure

    def no_size_limit(conn: sqlite3.Connection, options: Any, memory: bool) -> None:
        configure(conn, options, memory)
        conn.execute("PRAGMA journal_size_limit = -1")

    monkeypatch.setattr(_sqlite_connect, "_configure", no_size_limit)
    figures = await _wal_run(tmp_path / "wal.db", 10_000)
    violations = check_wal(figures)
    report.record("ENV-3", broken_variant="no journal_size_limit", caught=len(violations))
    assert any("after the reader left" in v for v in violations)
