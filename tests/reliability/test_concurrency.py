"""Optimistic concurrency: many writers on one stream in one process (OCC-1), two and
four OS processes on one file with hot and cold aggregates (OCC-2, with the plain-BEGIN
control). One stale append in a group commit (OCC-5) is checked with the store's own
tests, in tests/store/test_concurrency.py."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import open_system
from store import ANY, ConcurrencyError, EventRegistry, open_store
from store._sqlite import SQLiteEventStore
from tests.actors.domain import Counter as CounterAggregate
from tests.actors.domain import Increment
from tests.reliability._report import ROOT, Report, size, time_limit
from tests.reliability.oracle import integrity, log_gaps
from tests.store._events import Deposited

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]


async def _read_then_append(path: Path, tasks: int, rounds: int) -> dict[str, Any]:
    """`tasks` writers each read the version of one hot stream and append at it,
    `rounds` times, counting conflicts; each success is checked to have landed right
    after the version its writer read."""
    successes = conflicts = stale_accepted = 0
    async with open_store(path, registry=EventRegistry([Deposited])) as store:

        async def writer(index: int) -> None:
            nonlocal successes, conflicts, stale_accepted
            for n in range(rounds):
                version = await store.stream_version("hot")
                try:
                    result = await store.append(
                        "hot", [Deposited(amount=index * rounds + n)], expected_version=version
                    )
                except ConcurrencyError:
                    conflicts += 1
                else:
                    successes += 1
                    # Anywhere else, it overwrote a decision taken on a state it never saw.
                    stale_accepted += result.first_version != version + 1

        async with anyio.create_task_group() as tg:
            for index in range(tasks):
                tg.start_soon(writer, index)
        final = await store.stream_version("hot")
        stored = [e.version for e in await store.read_stream("hot")]
    return {
        "level": "store",
        "attempts": tasks * rounds,
        "successes": successes,
        "conflicts": conflicts,
        "lost_updates": stale_accepted + successes - final,
        "duplicate_versions": len(stored) - len(set(stored)),
        "contiguous": stored == list(range(1, final + 1)),
    }


def check_read_then_append(figures: dict[str, Any]) -> list[str]:
    """Violations of OCC-1 (store): an append accepted on a stale version (a lost
    update), a duplicate or missing version, an attempt neither accepted nor refused, or
    no race at all (no conflict: the check would prove nothing)."""
    found: list[str] = []
    if figures["lost_updates"]:
        found.append(f"lost updates {figures['lost_updates']}")
    if figures["duplicate_versions"] or not figures["contiguous"]:
        found.append(f"versions: {figures['duplicate_versions']} duplicates, or a gap")
    if figures["successes"] + figures["conflicts"] != figures["attempts"]:
        found.append("an attempt was neither accepted nor refused")
    if not figures["conflicts"]:
        found.append("no conflict: the writers never raced")
    return found


async def test_occ1_racing_read_then_append_on_one_stream(tmp_path: Path, report: Report) -> None:
    figures = await _read_then_append(tmp_path / "occ.db", size(8, 32), size(200, 500))
    report.record("OCC-1", **{k: v for k, v in figures.items() if k != "contiguous"})
    assert check_read_then_append(figures) == []


async def test_occ1_the_checker_catches_a_store_that_ignores_the_expected_version(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: every append is taken as if expected_version were ANY.
    append = SQLiteEventStore.append

    async def blind(self: Any, stream_id: str, events: Any, **kw: Any) -> Any:
        kw["expected_version"] = ANY
        return await append(self, stream_id, events, **kw)

    monkeypatch.setattr(SQLiteEventStore, "append", blind)
    violations = check_read_then_append(await _read_then_append(tmp_path / "occ.db", 8, 200))
    report.record("OCC-1", broken_variant="expected version ignored", caught=len(violations))
    assert any(v.startswith("lost updates") for v in violations)


async def test_occ1_actor_serialises_increments_on_one_aggregate(
    tmp_path: Path, report: Report
) -> None:
    clients, per_client = 32, size(50, 1_000)
    async with open_system(tmp_path / "actor.db") as system:
        counters = system.aggregates(CounterAggregate)

        async def client() -> None:
            for _ in range(per_client):
                await counters.ask("one", Increment(by=1))

        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client)
        value = (await counters.state("one")).value
        conflicts = system.statistics().conflicts
    report.record(
        "OCC-1",
        level="actor",
        asks=clients * per_client,
        final_counter=value,
        lost_updates=clients * per_client - value,
        conflicts=conflicts,
    )
    assert value == clients * per_client
    assert conflicts == 0


async def run_processes(db: Path, processes: int, commands: int, broken: bool) -> list[Any]:
    argv = [sys.executable, "-m", "tests.reliability._occ_child", str(db)]
    summaries = []
    with anyio.fail_after(240):
        children = [
            await anyio.open_process(
                [*argv, f"p{i}", str(commands), *(["--broken"] if broken else [])], cwd=ROOT
            )
            for i in range(processes)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert await _line(child.stdout) == "ready"
            for child in children:  # all ready: release them at once
                assert child.stdin is not None
                await child.stdin.send(b"go\n")
            for child in children:
                assert child.stdout is not None
                summaries.append(json.loads(await _line(child.stdout)))
                assert await child.wait() == 0
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                await child.aclose()
    return summaries


async def _line(stream: anyio.abc.ByteReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive()
    return data.decode().strip()


def lost_updates(summaries: list[Any], db: Path) -> dict[str, int]:
    """Counters whose stored increments differ from the acknowledged ones across all
    processes (an errored command's outcome is unknown: it may be stored or not)."""
    import sqlite3

    acked: Counter[str] = Counter()
    for summary in summaries:
        acked.update(summary["acked"])
    unknown = sum(sum(s["errors"].values()) for s in summaries)
    with sqlite3.connect(db) as conn:
        stored = dict(
            conn.execute(
                "SELECT substr(stream_id, 9), count(*) FROM events"
                " WHERE stream_id LIKE 'counter-%' GROUP BY stream_id"
            ).fetchall()
        )
    conn.close()
    lost = sum(max(0, n - stored.get(k, 0)) for k, n in acked.items())
    extra = sum(max(0, n - acked.get(k, 0)) for k, n in stored.items())
    return {"lost": lost, "unacked_stored": extra, "unknown": unknown}


@pytest.mark.parametrize("processes", [2, 4])
async def test_occ2_processes_sharing_one_file_lose_no_update(
    tmp_path: Path, processes: int, report: Report
) -> None:
    db = tmp_path / "shared.db"
    commands = size(800, 8_000)
    summaries = await run_processes(db, processes, commands, broken=False)
    found = lost_updates(summaries, db)
    errors: Counter[str] = Counter()
    for summary in summaries:
        errors.update(summary["errors"])
    report.record(
        "OCC-2",
        processes=processes,
        acked=sum(sum(s["acked"].values()) for s in summaries),
        lost_updates=found["lost"],
        conflicts=sum(s["conflicts"] for s in summaries),
        redecisions=sum(s["redecisions"] for s in summaries),
        retries_exhausted=sum(s["gave_up"] for s in summaries),
        busy_surfaced=errors["StoreUnavailable"],
        errors=sum(errors.values()),
    )
    assert found["lost"] == 0
    assert found["unacked_stored"] == 0  # gave-up commands wrote nothing
    assert errors == Counter()  # no "database is locked", no StoreUnavailable
    assert log_gaps(db) == []
    assert integrity(db) == []
    # the processes did race: the loser decided again by the store's writer, or refused
    assert sum(s["conflicts"] + s["redecisions"] for s in summaries) > 0


async def test_occ2_the_checker_sees_busy_errors_with_a_plain_begin(
    tmp_path: Path, report: Report
) -> None:
    db = tmp_path / "broken.db"
    summaries = await run_processes(db, 4, size(800, 8_000), broken=True)
    errors: Counter[str] = Counter()
    for summary in summaries:
        errors.update(summary["errors"])
    report.record("OCC-2", broken_variant="plain BEGIN", busy_surfaced=sum(errors.values()))
    assert sum(errors.values()) > 0, "a deferred BEGIN should surface SQLITE_BUSY"
