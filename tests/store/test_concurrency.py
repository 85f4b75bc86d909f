"""Many writers at once: in one process, in one batch, and from two processes."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from store import (
    ANY,
    NO_STREAM,
    AppendResult,
    ConcurrencyError,
    SQLiteEventStore,
    StoreClosed,
    open_store,
)
from store._options import Writer
from store._sqlite_connect import _in_thread
from tests.store._events import Deposited, Noted, make_registry
from tests.store._helpers import read_everything, stored_rows, writer_held

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_racing_writers_on_one_stream_lose_cleanly_and_leave_no_gap(
    store: SQLiteEventStore,
) -> None:
    writers, appends_each = 32, 4
    attempts = conflicts = 0
    successes: list[AppendResult] = []
    losers: list[ConcurrencyError] = []

    async def writer(n: int) -> None:
        nonlocal attempts, conflicts
        done = 0
        while done < appends_each:
            version = await store.stream_version("race")
            attempts += 1
            try:
                result = await store.append(
                    "race", [Deposited(n * 100 + done)], expected_version=version
                )
            except ConcurrencyError as exc:
                conflicts += 1
                losers.append(exc)
                continue
            assert result.first_version == version + 1
            successes.append(result)
            done += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(writers):
                tg.start_soon(writer, n)
    total = writers * appends_each
    events = await store.read_stream("race")
    assert [e.version for e in events] == list(range(1, total + 1))
    assert sorted(r.first_version for r in successes) == list(range(1, total + 1))
    assert sorted(e.event.amount for e in events) == sorted(
        n * 100 + i for n in range(writers) for i in range(appends_each)
    )
    assert conflicts > 0
    assert len(successes) + conflicts == attempts
    assert len(losers) == conflicts == store.statistics().rejected
    assert all(exc.stream_id == "race" and exc.actual > exc.expected for exc in losers)
    assert await store.stream_version("race") == total


async def test_one_stale_append_in_a_batch_of_64_fails_alone(store: SQLiteEventStore) -> None:
    await store.append("stale", [Deposited(0)], expected_version=NO_STREAM)
    outcomes: dict[int, AppendResult | ConcurrencyError] = {}

    async def append(i: int, stream_id: str, expected: int) -> None:
        try:
            outcomes[i] = await store.append(
                stream_id, [Deposited(i), Deposited(-i)], expected_version=expected
            )
        except ConcurrencyError as exc:
            outcomes[i] = exc

    plan: list[tuple[str, int]] = []
    for i in range(64):
        if i == 41:
            plan.append(("stale", NO_STREAM))  # the stream is at version 1
        elif i % 8 == 0:
            plan.append(("chain", i // 8 * 2))  # consecutive appends to one stream
        else:
            plan.append((f"s-{i}", NO_STREAM))
    batches = store.statistics().batches
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, writer_held(store) as held:
            for i, (stream_id, expected) in enumerate(plan):
                tg.start_soon(append, i, stream_id, expected)
                await anyio.wait_all_tasks_blocked()  # queued in plan order
    assert (store.statistics().batches - batches) in held  # the hold's, then all 64
    stale = outcomes.pop(41)
    assert isinstance(stale, ConcurrencyError)
    assert (stale.stream_id, stale.expected, stale.actual) == ("stale", NO_STREAM, 1)
    assert {i: o for i, o in outcomes.items() if not isinstance(o, AppendResult)} == {}
    everything = await read_everything(store)
    assert [e.position for e in everything] == list(range(1, 2 + 63 * 2))
    assert [(e.stream_id, e.version) for e in everything[1:]] == [
        (stream_id, version)
        for i, (stream_id, expected) in enumerate(plan)
        if i != 41
        for version in (expected + 1, expected + 2)
    ]
    assert await store.stream_version("stale") == 1
    assert await store.stream_version("chain") == 16


@pytest.mark.parametrize("placeholders", [None, 25])
async def test_a_batch_of_mixed_appends_is_stored_row_for_row(
    store: SQLiteEventStore, placeholders: int | None
) -> None:
    """One batch of 1,200 rows in appends of every shape (plain, with metadata, with a
    command id), inserted as multi-row statements; with a low placeholder limit
    (25: two rows per statement at most) as well."""
    if placeholders is not None:
        if not isinstance(store, SQLiteEventStore):
            pytest.skip("SQLite's limit on bound parameters per statement")

        def limit(conn: sqlite3.Connection) -> None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, placeholders)

        await _in_thread(store._writer, limit)
    plan: list[tuple[str, list[Deposited], dict[str, str] | None, str | None]] = []
    for i in range(600):
        events = [Deposited(i * 10 + k) for k in range(1 + i % 3)]
        metadata = {"n": str(i)} if i % 5 == 1 else None
        command_id = f"c{i}" if i % 7 == 2 else None
        plan.append((f"s-{i % 150}", events, metadata, command_id))
    rows = sum(len(events) for _, events, _, _ in plan)
    assert rows == 1_200
    batches = store.statistics().batches
    results: dict[int, AppendResult] = {}

    async def append(i: int) -> None:
        stream_id, events, metadata, command_id = plan[i]
        results[i] = await store.append(
            stream_id, events, expected_version=ANY, metadata=metadata, command_id=command_id
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, writer_held(store) as held:
            for i in range(len(plan)):
                tg.start_soon(append, i)
            await anyio.wait_all_tasks_blocked()
    assert (store.statistics().batches - batches) in held  # the hold's, then all 600
    everything = await read_everything(store)
    assert [e.position for e in everything] == list(range(1, rows + 1))
    expected: list[tuple[str, int, Deposited, dict[str, str]]] = []
    versions: dict[str, int] = {}
    for stream_id, events, metadata, _ in plan:
        for event in events:
            versions[stream_id] = versions.get(stream_id, 0) + 1
            expected.append((stream_id, versions[stream_id], event, metadata or {}))
    assert [(e.stream_id, e.version, e.event, dict(e.metadata)) for e in everything] == expected
    for i, (stream_id, events, _, command_id) in enumerate(plan):
        if command_id is not None:  # the commands table took every id, with its result
            again = await store.append(
                stream_id, events, expected_version=ANY, command_id=command_id
            )
            assert again.duplicate
            assert again.first_position == results[i].first_position


@pytest.mark.slow
async def test_two_processes_appending_to_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"  # created by whichever child opens it first
    outputs: dict[str, str] = {}

    async def child(name: str, seed: int) -> None:
        done = await anyio.run_process(
            [sys.executable, "-m", "tests.store._child_writer", str(path), name, "3", str(seed)],
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs[name] = done.stdout.decode()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, "a", 1)
            tg.start_soon(child, "b", 2)

    acks: dict[str, list[dict[str, Any]]] = {}
    for name, output in outputs.items():
        records = [json.loads(line) for line in output.splitlines()]
        summary = records.pop()
        assert summary["summary"]
        assert summary["errors"] == {}, f"child {name} saw errors: {summary['errors']}"
        assert records, f"child {name} acknowledged nothing"
        acks[name] = records

    async with open_store(path, registry=make_registry()) as store:
        everything = await read_everything(store)
    by_position = {e.position: e for e in everything}
    assert [e.position for e in everything] == list(range(1, len(everything) + 1))
    acknowledged = 0
    for records in acks.values():
        for record in records:
            for i, marker in enumerate(record["markers"]):
                stored = by_position[record["first_position"] + i]
                assert (stored.stream_id, stored.version, stored.event) == (
                    record["stream_id"],
                    record["first_version"] + i,
                    Noted(marker),
                )
                acknowledged += 1
    assert acknowledged == len(everything)  # nothing stored that was not acknowledged
    for stream_id in {e.stream_id for e in everything}:
        versions = [e.version for e in everything if e.stream_id == stream_id]
        assert versions == list(range(1, len(versions) + 1))
    # The two processes really wrote at the same time: their positions interleave.
    spans = {name: [r["first_position"] for r in records] for name, records in acks.items()}
    assert min(spans["a"]) < max(spans["b"])
    assert min(spans["b"]) < max(spans["a"])


async def test_the_unique_constraint_is_the_final_guard_when_the_version_cache_is_wrong(
    store: SQLiteEventStore,
) -> None:
    if not isinstance(store, SQLiteEventStore):
        pytest.skip("the SQLite writer's version cache (PostgreSQL's: test_postgres_batch)")
    if store._process is not None:
        pytest.skip("the version cache lives in the writer process: see test_writer_process")
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    store._batch._versions["s"] = 0  # test-only: the writer's cache now believes 's' is new
    outcomes: dict[str, AppendResult | ConcurrencyError] = {}

    async def append(stream_id: str) -> None:
        try:
            outcomes[stream_id] = await store.append(
                stream_id, [Deposited(2), Deposited(3)], expected_version=NO_STREAM
            )
        except ConcurrencyError as exc:
            outcomes[stream_id] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, writer_held(store):
            for stream_id in ("t", "s", "u"):
                tg.start_soon(append, stream_id)
                await anyio.wait_all_tasks_blocked()
    refused = outcomes.pop("s")
    assert isinstance(refused, ConcurrencyError)
    assert (refused.expected, refused.actual) == (NO_STREAM, 1)
    assert outcomes == {
        "t": AppendResult("t", 1, 2, 2, 3),
        "u": AppendResult("u", 1, 2, 4, 5),
    }
    assert [(e.stream_id, e.version) for e in await read_everything(store)] == [
        ("s", 1),
        ("t", 1),
        ("t", 2),
        ("u", 1),
        ("u", 2),
    ]
    assert (await store.append("s", [Deposited(4)], expected_version=1)).last_version == 2


async def test_the_version_cache_follows_what_another_connection_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    registry = make_registry()
    async with (
        open_store(path, registry=registry) as mine,
        open_store(path, registry=registry) as theirs,
    ):
        assert isinstance(mine, SQLiteEventStore)
        for stream_id in ("moved", "kept"):
            await mine.append(stream_id, [Deposited(1)], expected_version=NO_STREAM)
        await theirs.append("moved", [Deposited(2), Deposited(3)], expected_version=1)
        await theirs.append("new", [Deposited(4)], expected_version=NO_STREAM)
        assert (await mine.append("kept", [Deposited(5)], expected_version=1)).last_version == 2
        # The writer refreshed what it knew from the other's events rather than forget
        # it (streams it never wrote are read when first appended to).
        assert mine._batch._versions == {"moved": 3, "kept": 2}
        # "moved" is at 3: an append expecting 1 is refused with the version it really
        # has, one expecting 3 goes in.
        with pytest.raises(ConcurrencyError) as refused:
            await mine.append("moved", [Deposited(6)], expected_version=1)
        assert (refused.value.expected, refused.value.actual) == (1, 3)
        assert (await mine.append("moved", [Deposited(7)], expected_version=3)).last_version == 4
        assert (await mine.append("new", [Deposited(8)], expected_version=1)).last_version == 2
    async with open_store(path, registry=registry) as store:
        everything = await read_everything(store)
    assert [e.position for e in everything] == list(range(1, 9))
    assert [(e.stream_id, e.version) for e in everything if e.stream_id == "moved"] == [
        ("moved", 1),
        ("moved", 2),
        ("moved", 3),
        ("moved", 4),
    ]


async def test_appends_beyond_max_pending_appends_wait_for_room(
    store_path: str, store_writer: Writer
) -> None:
    done: list[AppendResult] = []
    async with open_store(
        store_path, registry=make_registry(), max_pending_appends=4, writer=store_writer
    ) as store:

        async def append(i: int) -> None:
            done.append(await store.append(f"s-{i}", [Deposited(i)], expected_version=NO_STREAM))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg, writer_held(store):
                for i in range(6):
                    tg.start_soon(append, i)
                await anyio.wait_all_tasks_blocked()
                assert store.statistics().pending == 4  # two callers wait for room
                assert done == []
        assert sorted(r.stream_id for r in done) == [f"s-{i}" for i in range(6)]
        assert store.statistics().pending == 0


async def test_closing_commits_accepted_appends_and_refuses_those_waiting_for_room(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    close_requested = anyio.Event()
    refused_one = anyio.Event()
    outcomes: dict[int, AppendResult | StoreClosed] = {}

    async def run_store(*, task_status: anyio.abc.TaskStatus[SQLiteEventStore]) -> None:
        async with open_store(path, registry=make_registry(), max_pending_appends=2) as store:
            task_status.started(store)
            await close_requested.wait()

    async def append(store: SQLiteEventStore, i: int) -> None:
        try:
            outcomes[i] = await store.append(f"s-{i}", [Noted("x")], expected_version=NO_STREAM)
        except StoreClosed as exc:
            outcomes[i] = exc
            refused_one.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            store = await tg.start(run_store)
            async with writer_held(store):
                for i in range(3):
                    tg.start_soon(append, store, i)
                    await anyio.wait_all_tasks_blocked()
                assert store.statistics().pending == 2  # the third waits for room
                close_requested.set()  # the store starts closing while its writer is held
                await refused_one.wait()
    assert isinstance(outcomes.pop(2), StoreClosed)
    assert outcomes == {
        0: AppendResult("s-0", 1, 1, 1, 1),
        1: AppendResult("s-1", 1, 1, 2, 2),
    }
    assert stored_rows(str(path)) == [(1, "s-0", 1), (2, "s-1", 1)]
    with pytest.raises(StoreClosed):
        await store.append("s-3", [Noted("late")], expected_version=NO_STREAM)


async def test_the_postgresql_writer_commits_a_long_queue_in_halves(postgres_url: str) -> None:
    """So the server commits the second half while the event loop answers the first
    half's callers; a short queue goes whole."""
    async with open_store(postgres_url, registry=make_registry()) as store:

        async def append(i: int) -> None:
            await store.append(f"s-{i}", [Deposited(i)], expected_version=NO_STREAM)

        for queued, batches in ((40, 1), (100, 2)):
            before = store.statistics().batches
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg, writer_held(store):
                    for i in range(queued):
                        tg.start_soon(append, before * 1000 + i)
                    await anyio.wait_all_tasks_blocked()
            assert store.statistics().batches - before == 1 + batches  # the hold's, then
