"""The store's contract under the plan's tables: expected versions and command ids
(OCC-3), the replay cases of Akka's JournalSpec and the concurrency cases of the
eventsourcing library's recorder tests (OCC-4)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyError,
    IdempotencyConflict,
    InvalidAppend,
    SQLiteEventStore,
    StoreError,
    open_store,
)
from tests.reliability._report import Report, size
from tests.store._events import Deposited, Noted, Unregistered, make_registry

Case = Callable[[SQLiteEventStore], Awaitable[object]]


async def _seed(store: SQLiteEventStore, stream: str, n: int) -> None:
    await store.append(stream, [Deposited(i) for i in range(n)], expected_version=NO_STREAM)


def _case(expected: int, seed: int, events: int = 1) -> Case:
    async def run(store: SQLiteEventStore) -> object:
        if seed:
            await _seed(store, "s", seed)
        result = await store.append(
            "s", [Deposited(100 + i) for i in range(events)], expected_version=expected
        )
        return (result.first_version, result.last_version)

    return run


async def _retry_same(store: SQLiteEventStore) -> object:
    first = await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    again = await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    assert again == msgspec.structs.replace(first, duplicate=True)
    return (again.duplicate, await store.stream_version("s"))


async def _retry_after_more(store: SQLiteEventStore) -> object:
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    await store.append("s", [Deposited(2)], expected_version=1)
    again = await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    return (again.duplicate, again.first_version, await store.stream_version("s"))


async def _retry_with_any(store: SQLiteEventStore) -> object:
    await store.append("s", [Deposited(1)], expected_version=ANY, command_id="c")
    again = await store.append("s", [Deposited(1)], expected_version=ANY, command_id="c")
    return (again.duplicate, await store.stream_version("s"))


async def _other_payload(store: SQLiteEventStore) -> object:
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    return await store.append("s", [Deposited(2)], expected_version=1, command_id="c")


async def _other_stream(store: SQLiteEventStore) -> object:
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    return await store.append("t", [Deposited(1)], expected_version=NO_STREAM, command_id="c")


async def _other_count(store: SQLiteEventStore) -> object:
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM, command_id="c")
    return await store.append(
        "s", [Deposited(1), Deposited(1)], expected_version=NO_STREAM, command_id="c"
    )


async def _empty(store: SQLiteEventStore) -> object:
    return await store.append("s", [], expected_version=ANY)


async def _bad_version(store: SQLiteEventStore) -> object:
    return await store.append("s", [Deposited(1)], expected_version=-5)


async def _stale_leaves_nothing(store: SQLiteEventStore) -> object:
    await _seed(store, "s", 2)
    with pytest.raises(ConcurrencyError):
        await store.append("s", [Deposited(9)], expected_version=1, command_id="x")
    # the failed command id is not burned: the right version now succeeds under it
    result = await store.append("s", [Deposited(9)], expected_version=2, command_id="x")
    return (result.duplicate, result.first_version)


TABLE: list[tuple[str, Case, object]] = [
    ("no_stream on missing", _case(NO_STREAM, 0), (1, 1)),
    ("no_stream on existing", _case(NO_STREAM, 2), ConcurrencyError),
    ("any on missing", _case(ANY, 0), (1, 1)),
    ("any on existing", _case(ANY, 3), (4, 4)),
    ("exact version", _case(3, 3), (4, 4)),
    ("exact, three events", _case(3, 3, 3), (4, 6)),
    ("v-1 (stale)", _case(2, 3), ConcurrencyError),
    ("v+1 (ahead)", _case(4, 3), ConcurrencyError),
    ("v-3 (long stale)", _case(2, 5), ConcurrencyError),
    ("exact 1 on missing", _case(1, 0), ConcurrencyError),
    ("stream_exists on missing", _case(STREAM_EXISTS, 0), ConcurrencyError),
    ("stream_exists on existing", _case(STREAM_EXISTS, 2), (3, 3)),
    ("empty batch", _empty, InvalidAppend),
    ("negative expected version", _bad_version, InvalidAppend),
    ("same id + payload retried", _retry_same, (True, 1)),
    ("same id retried after later appends", _retry_after_more, (True, 1, 2)),
    ("same id retried under ANY", _retry_with_any, (True, 1)),
    ("same id, other payload", _other_payload, IdempotencyConflict),
    ("same id, other event count", _other_count, IdempotencyConflict),
    ("same id, other stream", _other_stream, IdempotencyConflict),
    ("stale append does not burn its id", _stale_leaves_nothing, (False, 3)),
]


async def test_occ3_expected_version_and_idempotency_table(report: Report) -> None:
    failures: list[str] = []
    for name, case, expected in TABLE:
        async with open_store(":memory:", registry=make_registry()) as store:
            try:
                got: object = await case(store)
            except StoreError as exc:
                got = type(exc)
            ok = (
                issubclass(got, expected)
                if isinstance(got, type) and isinstance(expected, type)
                else got == expected
            )
            if not ok:
                failures.append(f"{name}: expected {expected!r}, got {got!r}")
    report.record("OCC-3", cases=len(TABLE), passing=len(TABLE) - len(failures))
    assert failures == []


# -- OCC-4: journal contract -------------------------------------------------------------


async def test_occ4_replay_bounds_as_in_journalspec(report: Report) -> None:
    async with open_store(":memory:", registry=make_registry()) as store:
        await _seed(store, "p", 5)

        async def versions(lo: int, hi: int | None = None, limit: int | None = None) -> list[int]:
            got = await store.read_stream("p", from_version=lo, to_version=hi, limit=limit)
            return [e.version for e in got]

        cases = {
            "all": (await versions(1), [1, 2, 3, 4, 5]),
            "lower bound": (await versions(2), [2, 3, 4, 5]),
            "upper bound": (await versions(1, 3), [1, 2, 3]),
            "both bounds": (await versions(2, 3), [2, 3]),
            "from == to": (await versions(3, 3), [3]),
            "from > to": (await versions(4, 3), []),
            "past the end": (await versions(6), []),
            "limit": (await versions(1, None, 2), [1, 2]),
            "to past the end": (await versions(4, 100), [4, 5]),
        }
        missing = await store.read_stream("none")
        highest_missing = await store.stream_version("none")
        highest = await store.stream_version("p")
    failures = [k for k, (got, want) in cases.items() if got != want]
    report.record("OCC-4", case="replay", cases=len(cases) + 2, failures=len(failures))
    assert failures == []
    assert (missing, highest_missing, highest) == ([], 0, 5)


async def test_occ4_a_bad_event_rejects_the_whole_append() -> None:
    async with open_store(":memory:", registry=make_registry()) as store:
        await _seed(store, "p", 1)
        bad: list[msgspec.Struct] = [Deposited(1), Unregistered(2), Noted("x")]
        with pytest.raises(InvalidAppend):
            await store.append("p", bad, expected_version=1)
        assert [e.version for e in await store.read_stream("p")] == [1]
        assert await store.last_position() == 1
        nxt = await store.append("p", [Noted("after")], expected_version=1)
        assert (nxt.first_version, nxt.first_position) == (2, 2)


async def test_occ4_concurrent_writers_and_polling_readers(tmp_path: Path, report: Report) -> None:
    writers, writes, per = 10, 100, size(10, 100)
    errors: list[BaseException] = []
    reads = 0
    async with open_store(str(tmp_path / "j.db"), registry=make_registry()) as store:
        done = anyio.Event()

        async def writer(n: int) -> None:
            for w in range(writes):
                await store.append(
                    f"w{n}-{w}", [Deposited(i) for i in range(per)], expected_version=NO_STREAM
                )

        async def reader() -> None:
            nonlocal reads
            while not done.is_set():
                try:
                    got = await store.read_all(from_position=0, limit=10)
                except Exception as exc:  # noqa: BLE001 - any reader error is a finding
                    errors.append(exc)
                    return
                assert len(got) <= 10
                reads += 1
                await anyio.lowlevel.checkpoint()

        started = time.perf_counter()
        with anyio.fail_after(120):
            async with anyio.create_task_group() as outer:
                outer.start_soon(reader)
                outer.start_soon(reader)
                async with anyio.create_task_group() as tg:
                    for n in range(writers):
                        tg.start_soon(writer, n)
                done.set()
        elapsed = time.perf_counter() - started
        total = await store.last_position()
    report.record(
        "OCC-4",
        case="writers+readers",
        events=total,
        reads=reads,
        errors=len(errors),
        events_per_s=round(total / elapsed),
    )
    assert errors == []
    assert total == writers * writes * per


def interleaving_violations(batches: list[list[int]]) -> list[str]:
    """Each append's positions form one contiguous block; no two blocks overlap."""
    problems: list[str] = []
    spans: list[tuple[int, int]] = []
    for positions in batches:
        if positions != list(range(positions[0], positions[0] + len(positions))):
            problems.append(f"append not contiguous: {positions[:5]}...")
        spans.append((positions[0], positions[-1]))
    spans.sort()
    for (_, hi), (lo, _) in itertools.pairwise(spans):
        if lo <= hi:
            problems.append(f"appends interleave at {lo}")
    return problems


def test_interleaving_checker_sees_interleaved_appends() -> None:
    assert interleaving_violations([[1, 3, 5], [2, 4, 6]])
    assert interleaving_violations([[1, 2, 3], [3, 4]])
    assert interleaving_violations([[1, 2], [3, 4]]) == []


async def test_occ4_racing_batches_never_interleave(tmp_path: Path, report: Report) -> None:
    batch, rounds = size(500, 2_000), size(4, 5)
    async with open_store(str(tmp_path / "n.db"), registry=make_registry()) as store:
        per = min(batch, store.options.max_events_per_append)
        results: list[list[int]] = []

        async def racer(name: str) -> None:
            for r in range(rounds):
                res = await store.append(
                    f"{name}-{r}", [Noted(str(i)) for i in range(per)], expected_version=NO_STREAM
                )
                events = await store.read_stream(f"{name}-{r}", limit=per)
                results.append([e.position for e in events])
                assert res.first_position == events[0].position

        started = time.perf_counter()
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(racer, "a")
                tg.start_soon(racer, "b")
        elapsed = time.perf_counter() - started
    violations = interleaving_violations(results)
    report.record(
        "OCC-4",
        case="non-interleaving",
        events=sum(map(len, results)),
        violations=len(violations),
        events_per_s=round(sum(map(len, results)) / elapsed),
    )
    assert violations == []
