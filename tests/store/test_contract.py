"""The store's contract, run against a file store and an in-memory store alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
import pytest
import structlog

from store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ConcurrencyError,
    EventRegistry,
    IdempotencyConflict,
    InvalidExpectedVersion,
    InvalidReadArgument,
    RecordedEvent,
    SQLiteEventStore,
    UnknownEventType,
    open_store,
)
from store import _postgres_writer as postgres_writer_module
from store import _sqlite_batch as batch_module
from store._groupcommit import GroupCommitStore
from store._options import Writer
from store._postgres import PostgresEventStore
from tests.store._events import Deposited, Noted, Opened, make_registry
from tests.store._helpers import read_everything, writer_held

# -- round trips --------------------------------------------------------------------------


async def test_appended_events_read_back_with_their_versions_positions_and_metadata(
    store: SQLiteEventStore,
) -> None:
    result = await store.append(
        "account-1",
        [Opened("ada"), Deposited(10), Noted("ünïcødé ✓")],
        expected_version=NO_STREAM,
        command_id="cmd-1",
        metadata={"correlation_id": "c-1"},
    )
    assert result == AppendResult("account-1", 1, 3, 1, 3)
    events = await store.read_stream("account-1")
    assert [e.event for e in events] == [Opened("ada"), Deposited(10), Noted("ünïcødé ✓")]
    assert [(e.version, e.position) for e in events] == [(1, 1), (2, 2), (3, 3)]
    assert {e.event_type for e in events} == {"test.opened", "test.deposited", "test.noted"}
    assert all(e.metadata == {"correlation_id": "c-1"} for e in events)
    assert all(e.command_id == "cmd-1" and e.schema_version == 1 for e in events)
    assert await store.read_all() == events
    assert await store.stream_version("account-1") == 3
    assert await store.stream_version("account-2") == 0
    assert await store.last_position() == 3


async def test_a_second_append_continues_the_stream_and_the_global_log(
    store: SQLiteEventStore,
) -> None:
    await store.append("a", [Deposited(1)], expected_version=NO_STREAM)
    await store.append("b", [Deposited(2)], expected_version=NO_STREAM)
    second = await store.append("a", [Deposited(3), Deposited(4)], expected_version=1)
    assert second == AppendResult("a", 2, 3, 3, 4)
    assert [(e.stream_id, e.version, e.position) for e in await store.read_all()] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("a", 2, 3),
        ("a", 3, 4),
    ]


async def test_read_stream_slices_by_version_and_limit(store: SQLiteEventStore) -> None:
    await store.append("s", [Deposited(i) for i in range(1, 11)], expected_version=NO_STREAM)
    assert [e.version for e in await store.read_stream("s", from_version=4, to_version=6)] == [
        4,
        5,
        6,
    ]
    assert [e.version for e in await store.read_stream("s", from_version=8, limit=2)] == [8, 9]
    assert await store.read_stream("s", from_version=11) == []
    assert await store.read_stream("s", from_version=5, to_version=4) == []
    assert await store.read_stream("missing") == []


# -- expected versions --------------------------------------------------------------------

EXISTING = 2  # the version of the stream the table's "existing" cases append to


@pytest.mark.parametrize(
    ("exists", "expected", "accepted"),
    [
        pytest.param(False, NO_STREAM, True, id="NO_STREAM-on-missing"),
        pytest.param(True, NO_STREAM, False, id="NO_STREAM-on-existing"),
        pytest.param(False, ANY, True, id="ANY-on-missing"),
        pytest.param(True, ANY, True, id="ANY-on-existing"),
        pytest.param(True, EXISTING, True, id="exact-v"),
        pytest.param(True, EXISTING - 1, False, id="v-minus-1"),
        pytest.param(True, EXISTING + 1, False, id="v-plus-1"),
        pytest.param(False, 1, False, id="v1-on-missing"),
        pytest.param(False, STREAM_EXISTS, False, id="STREAM_EXISTS-on-missing"),
        pytest.param(True, STREAM_EXISTS, True, id="STREAM_EXISTS-on-existing"),
    ],
)
async def test_expected_version_rules(
    store: SQLiteEventStore, exists: bool, expected: int, accepted: bool
) -> None:
    await store.append("other", [Noted("x")], expected_version=NO_STREAM)
    if exists:
        await store.append("s", [Deposited(1), Deposited(2)], expected_version=NO_STREAM)
    current = EXISTING if exists else 0
    before = await store.last_position()
    if accepted:
        result = await store.append("s", [Deposited(3)], expected_version=expected)
        assert (result.first_version, result.first_position) == (current + 1, before + 1)
        assert await store.stream_version("s") == current + 1
    else:
        with pytest.raises(ConcurrencyError) as caught:
            await store.append("s", [Deposited(3)], expected_version=expected)
        error = caught.value
        assert (error.stream_id, error.expected, error.actual) == ("s", expected, current)
        assert "'s'" in str(error)
        assert f"version {current}" in str(error)
        assert await store.stream_version("s") == current
        assert await store.last_position() == before
        assert store.statistics().rejected == 1


@pytest.mark.parametrize("expected", ["1", 1.0, True, None, -3, 2.5])
async def test_expected_version_of_a_wrong_type_is_refused(
    store: SQLiteEventStore, expected: object
) -> None:
    with pytest.raises(InvalidExpectedVersion) as caught:
        await store.append("s", [Deposited(1)], expected_version=expected)  # type: ignore[arg-type]  # the bad input under test
    assert caught.value.expected is expected
    assert "'s'" in str(caught.value)
    assert repr(expected) in str(caught.value)
    assert await store.last_position() == 0
    assert (await store.append("s", [Deposited(1)], expected_version=NO_STREAM)).last_version == 1


# -- idempotent command ids ---------------------------------------------------------------


async def test_a_retried_command_id_returns_the_first_result_and_writes_nothing(
    store: SQLiteEventStore,
) -> None:
    first = await store.append("s", [Deposited(5)], expected_version=NO_STREAM, command_id="c1")
    await store.append("s", [Deposited(6)], expected_version=1)
    # The retry's expected version is stale now; the command id answers it regardless.
    retry = await store.append("s", [Deposited(5)], expected_version=NO_STREAM, command_id="c1")
    assert retry == msgspec.structs.replace(first, duplicate=True)
    assert not first.duplicate
    assert [e.event for e in await store.read_stream("s")] == [Deposited(5), Deposited(6)]
    assert await store.find_command("c1") == retry
    assert await store.find_command("unknown") is None
    stats = store.statistics()
    assert (stats.appends, stats.events, stats.rejected) == (2, 2, 0)


async def test_a_command_id_reused_with_other_events_is_a_conflict(
    store: SQLiteEventStore,
) -> None:
    await store.append("s", [Deposited(5)], expected_version=NO_STREAM, command_id="c1")
    with pytest.raises(IdempotencyConflict) as caught:
        await store.append("s", [Deposited(6)], expected_version=ANY, command_id="c1")
    assert (caught.value.command_id, caught.value.stream_id) == ("c1", "s")
    assert "'c1'" in str(caught.value)
    assert "different events" in str(caught.value)
    assert await store.stream_version("s") == 1


async def test_a_command_id_reused_on_another_stream_is_a_conflict(
    store: SQLiteEventStore,
) -> None:
    await store.append("s", [Deposited(5)], expected_version=NO_STREAM, command_id="c1")
    with pytest.raises(IdempotencyConflict) as caught:
        await store.append("t", [Deposited(5)], expected_version=ANY, command_id="c1")
    assert caught.value.recorded_stream_id == "s"
    assert "'t'" in str(caught.value)
    assert "'s'" in str(caught.value)
    assert await store.stream_version("t") == 0
    assert await store.last_position() == 1


async def test_the_same_command_id_twice_in_one_batch_commits_once(
    store: SQLiteEventStore,
) -> None:
    results: dict[str, AppendResult | Exception] = {}

    async def append(key: str, stream_id: str, amount: int) -> None:
        try:
            results[key] = await store.append(
                stream_id, [Deposited(amount)], expected_version=ANY, command_id="c1"
            )
        except IdempotencyConflict as exc:
            results[key] = exc

    batches = store.statistics().batches
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, writer_held(store) as held:
            for key, stream_id, amount in (
                ("first", "s", 1),
                ("retry", "s", 1),
                ("other-events", "s", 2),
                ("other-stream", "t", 1),
            ):
                tg.start_soon(append, key, stream_id, amount)
                await anyio.wait_all_tasks_blocked()  # queued in this order
    assert (store.statistics().batches - batches) in held  # the hold's, then the four
    first = results["first"]
    assert isinstance(first, AppendResult)
    assert not first.duplicate
    assert results["retry"] == msgspec.structs.replace(first, duplicate=True)
    assert isinstance(results["other-events"], IdempotencyConflict)
    assert isinstance(results["other-stream"], IdempotencyConflict)
    assert [(e.stream_id, e.event) for e in await store.read_all()] == [("s", Deposited(1))]


# -- time travel --------------------------------------------------------------------------


class _Clock:
    """Stands in for the `time` module inside the store: `time()` is set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.perf_counter = time.perf_counter
        self.monotonic = time.monotonic
        self.sleep = time.sleep

    def time(self) -> float:
        return self.now


async def test_read_stream_until_returns_the_stream_as_it_stood_at_a_moment(
    store: GroupCommitStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(1000.0)
    if isinstance(store, PostgresEventStore):
        monkeypatch.setattr(postgres_writer_module, "time", clock)
    elif isinstance(store, SQLiteEventStore) and store._process is not None:
        pytest.skip("recorded_at is stamped in the writer process, out of monkeypatch's reach")
    monkeypatch.setattr(batch_module, "time", clock)
    for moment, amount in ((1000.0, 1), (2000.0, 2), (3000.0, 3), (2500.0, 4)):
        clock.now = moment
        await store.append("s", [Deposited(amount)], expected_version=ANY)

    async def amounts(at: datetime | float) -> list[int]:
        return [e.event.amount for e in await store.read_stream_until("s", at)]

    assert await amounts(999.0) == []
    assert await amounts(1000.0) == [1]
    assert await amounts(1999.5) == [1]
    assert await amounts(2000.0) == [1, 2]
    assert await amounts(datetime.fromtimestamp(2000.0, UTC)) == [1, 2]
    # A clock that went back does not make a hole: the answer is a prefix of the stream.
    assert await amounts(2600.0) == [1, 2]
    assert await amounts(datetime.fromtimestamp(10_000.0, UTC)) == [1, 2, 3, 4]
    assert await amounts(10_000.0) == [1, 2, 3, 4]
    assert [e.version for e in await store.read_stream_until("s", 10_000.0, limit=2)] == [1, 2]
    events = await store.read_stream("s")
    assert [e.recorded_at for e in events] == [1000.0, 2000.0, 3000.0, 2500.0]
    assert events[1].recorded_datetime == datetime.fromtimestamp(2000.0, UTC)


async def test_read_stream_to_version_is_time_travel_by_version(store: SQLiteEventStore) -> None:
    await store.append("s", [Deposited(i) for i in range(1, 6)], expected_version=NO_STREAM)
    assert [e.event.amount for e in await store.read_stream("s", to_version=3)] == [1, 2, 3]
    assert await store.read_stream("s", to_version=0) == []


# -- snapshots ----------------------------------------------------------------------------


class Balance(msgspec.Struct, frozen=True):
    total: int
    owner: str


class OtherState(msgspec.Struct, frozen=True):
    total: int
    owner: str


async def test_a_snapshot_loads_back_for_its_type_and_schema_version_only(
    store: SQLiteEventStore,
) -> None:
    assert await store.load_snapshot("s", Balance) is None
    await store.save_snapshot("s", 7, Balance(70, "ada"), schema_version=3)
    snapshot = await store.load_snapshot("s", Balance, schema_version=3)
    assert snapshot is not None
    assert (snapshot.stream_id, snapshot.version, snapshot.state) == ("s", 7, Balance(70, "ada"))
    assert snapshot.schema_version == 3
    assert await store.load_snapshot("s", Balance, schema_version=2) is None
    assert await store.load_snapshot("s", Balance) is None
    assert await store.load_snapshot("s", OtherState, schema_version=3) is None
    assert await store.load_snapshot("t", Balance, schema_version=3) is None


async def test_the_newest_snapshot_wins_and_an_older_save_does_not_overwrite_it(
    store: SQLiteEventStore,
) -> None:
    await store.save_snapshot("s", 5, Balance(5, "ada"))
    await store.save_snapshot("s", 10, Balance(10, "ada"))
    await store.save_snapshot("s", 3, Balance(3, "ada"))
    snapshot = await store.load_snapshot("s", Balance)
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (10, Balance(10, "ada"))


# -- positions ----------------------------------------------------------------------------


async def test_positions_are_contiguous_and_follow_commit_order(store: SQLiteEventStore) -> None:
    results: list[AppendResult] = []

    async def writer(n: int) -> None:
        for i in range(10):
            events = [Deposited(i)] * (1 + i % 3)
            result = await store.append(f"s-{n % 4}", events, expected_version=ANY)
            results.append(result)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(writer, n)
    everything = await read_everything(store)
    assert [e.position for e in everything] == list(range(1, len(everything) + 1))
    assert len(everything) == sum(r.last_position - r.first_position + 1 for r in results)
    # Each append is one contiguous range, and results resolve in commit order.
    for result in results:
        span = everything[result.first_position - 1 : result.last_position]
        assert {e.stream_id for e in span} == {result.stream_id}
        assert [e.version for e in span] == list(
            range(result.first_version, result.last_version + 1)
        )
    for stream_id in {e.stream_id for e in everything}:
        versions = [e.version for e in everything if e.stream_id == stream_id]
        assert versions == list(range(1, len(versions) + 1))
    assert store.statistics().last_position == everything[-1].position


# -- the global log -----------------------------------------------------------------------


async def test_read_all_pages_cover_the_log_exactly_once(store: SQLiteEventStore) -> None:
    for n in range(25):
        await store.append(f"s-{n % 3}", [Deposited(n)], expected_version=ANY)
    pages: list[list[RecordedEvent]] = []
    position = 0
    while page := await store.read_all(from_position=position, limit=7):
        pages.append(page)
        position = page[-1].position + 1
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [e.event.amount for p in pages for e in p] == list(range(25))
    bounded = await store.read_all(from_position=5, to_position=9)
    assert [e.position for e in bounded] == [5, 6, 7, 8, 9]


async def test_read_all_filters_by_event_type(store: SQLiteEventStore) -> None:
    await store.append("a", [Opened("ada"), Deposited(1), Noted("n")], expected_version=ANY)
    await store.append("b", [Deposited(2), Opened("bob")], expected_version=ANY)
    opened = await store.read_all(event_types=["test.opened"])
    assert [(e.stream_id, e.event) for e in opened] == [("a", Opened("ada")), ("b", Opened("bob"))]
    both = await store.read_all(event_types=("test.opened", "test.noted"), limit=2)
    assert [e.position for e in both] == [1, 3]
    assert await store.read_all(event_types=[]) == []
    tags = (t for t in ["test.noted"])  # any iterable of tags, read once
    assert [e.position for e in await store.read_all(event_types=tags)] == [3]  # type: ignore[arg-type]  # a generator, not a Sequence
    assert await store.read_all(event_types=["no.such.type"]) == []


PREFIX_STREAMS = (
    "a%b-1",
    "axb-1",
    "a_b-1",
    "acb-1",
    "a*b-1",
    "a?b-1",
    "a[b]-1",
    "ab-1",
    "Ab-1",
    "a\\b-1",
    "äb-1",
    "a%",
)


@pytest.mark.parametrize("prefix", ["a%", "a_", "a*", "a?", "a[", "a\\", "a", "A", "ä", "%", "_"])
async def test_read_all_stream_prefix_is_a_literal_prefix(
    store: SQLiteEventStore, prefix: str
) -> None:
    for stream_id in PREFIX_STREAMS:
        await store.append(stream_id, [Deposited(1), Opened("x")], expected_version=NO_STREAM)
    found = await store.read_all(stream_prefix=prefix)
    expected = sorted(
        (i * 2 + 1 + k, s)
        for i, s in enumerate(PREFIX_STREAMS)
        if s.startswith(prefix)
        for k in (0, 1)
    )
    assert [(e.position, e.stream_id) for e in found] == expected
    typed = await store.read_all(stream_prefix=prefix, event_types=["test.opened"])
    assert [e.position for e in typed] == [p for p, _ in expected if p % 2 == 0]


# -- checkpoints --------------------------------------------------------------------------


async def test_checkpoints_save_and_load(store: SQLiteEventStore) -> None:
    assert await store.load_checkpoint("projection") == 0
    await store.save_checkpoint("projection", 41)
    await store.save_checkpoint("other", 7)
    assert await store.load_checkpoint("projection") == 41
    await store.save_checkpoint("projection", 42)
    assert (await store.load_checkpoint("projection"), await store.load_checkpoint("other")) == (
        42,
        7,
    )


# -- commit listeners ---------------------------------------------------------------------


async def test_commit_listeners_see_every_committed_event_in_position_order(
    store_path: str,
    store_writer: Writer,
) -> None:
    seen: list[RecordedEvent] = []
    removed: list[RecordedEvent] = []

    def failing(events: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("listener bug")

    with structlog.testing.capture_logs() as logs:
        async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
            store.add_commit_listener(failing)
            store.add_commit_listener(seen.extend)
            remove = store.add_commit_listener(removed.extend)
            await store.append("first", [Noted("x")], expected_version=NO_STREAM)
            remove()

            async def writer(n: int) -> None:
                for i in range(5):
                    await store.append(
                        f"s-{n}", [Deposited(i), Deposited(-i)], expected_version=ANY
                    )

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for n in range(6):
                        tg.start_soon(writer, n)
            with pytest.raises(ConcurrencyError):
                await store.append("first", [Noted("y")], expected_version=NO_STREAM)
            stored = await read_everything(store)
    assert seen == stored
    assert [e.position for e in seen] == list(range(1, 62))
    assert [e.stream_id for e in removed] == ["first"]
    failures = [entry for entry in logs if entry["event"] == "store.listener_failed"]
    assert failures
    assert all(entry["log_level"] == "error" for entry in failures)


# -- statistics and reopening -------------------------------------------------------------


async def test_statistics_count_appends_events_rejections_and_batches(
    store: SQLiteEventStore,
) -> None:
    await store.append("s", [Deposited(1), Deposited(2)], expected_version=NO_STREAM)
    await store.append("s", [Deposited(3)], expected_version=2, command_id="c")
    await store.append("s", [Deposited(3)], expected_version=2, command_id="c")  # duplicate
    with pytest.raises(ConcurrencyError):
        await store.append("s", [Deposited(4)], expected_version=1)
    stats = store.statistics()
    assert (stats.appends, stats.events, stats.rejected, stats.batches) == (2, 3, 1, 2)
    assert (stats.events_per_batch, stats.appends_per_batch) == (1.5, 1.0)
    assert (stats.pending, stats.last_position) == (0, 3)
    assert stats.commit_ms_max >= stats.commit_ms_mean > 0


async def test_reopening_a_file_keeps_everything_and_positions_continue(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=make_registry()) as store:
        await store.append("s", [Opened("ada"), Deposited(1)], expected_version=NO_STREAM)
        await store.append("t", [Opened("bob")], expected_version=NO_STREAM, command_id="c")
        await store.save_snapshot("s", 2, Balance(1, "ada"))
        await store.save_checkpoint("p", 3)
        before = await store.read_all()
    async with open_store(path, registry=make_registry()) as store:
        assert await store.read_all() == before
        assert store.statistics().last_position == 3
        assert await store.load_checkpoint("p") == 3
        snapshot = await store.load_snapshot("s", Balance)
        assert snapshot is not None
        assert snapshot.state == Balance(1, "ada")
        again = await store.append("t", [Opened("bob")], expected_version=0, command_id="c")
        assert again.duplicate
        result = await store.append("s", [Deposited(2)], expected_version=2)
        assert (result.first_version, result.first_position) == (3, 4)
        with pytest.raises(ConcurrencyError):
            await store.append("t", [Noted("late")], expected_version=NO_STREAM)


# -- upcasting and aliases ----------------------------------------------------------------


class AmountV1(msgspec.Struct, frozen=True, tag="test.amount"):
    cents: int


class AmountV2(msgspec.Struct, frozen=True, tag="test.amount"):
    amount: int
    currency: str


class OldName(msgspec.Struct, frozen=True, tag="test.old-name"):
    owner: str


class NewName(msgspec.Struct, frozen=True, tag="test.new-name"):
    owner: str


async def test_old_event_shapes_are_upcast_and_renamed_tags_aliased(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=EventRegistry([AmountV1, OldName])) as store:
        await store.append("s", [AmountV1(150), OldName("ada")], expected_version=NO_STREAM)

    registry = EventRegistry()
    registry.register(AmountV2, schema_version=2)
    registry.register(NewName)

    @registry.upcaster("test.amount", 1)
    def cents_to_amount(payload: dict[str, object]) -> dict[str, object]:
        return {"amount": payload["cents"], "currency": "EUR"}

    async with open_store(path, registry=registry) as store:
        with pytest.raises(UnknownEventType) as caught:
            await store.read_stream("s")
        assert (caught.value.version, caught.value.event_type) == (2, "test.old-name")
        registry.alias("test.old-name", NewName)
        events = await store.read_stream("s")
        assert [e.event for e in events] == [AmountV2(150, "EUR"), NewName("ada")]
        # The record keeps what is stored: the old tag and shape version.
        assert [(e.event_type, e.schema_version) for e in events] == [
            ("test.amount", 1),
            ("test.old-name", 1),
        ]
        await store.append("s", [AmountV2(7, "USD")], expected_version=2)
        latest = await store.read_all(from_position=3)
        assert [(e.event, e.schema_version) for e in latest] == [(AmountV2(7, "USD"), 2)]


async def test_read_log_reads_what_read_all_reads_on_a_lane_of_its_own(
    store: GroupCommitStore,
) -> None:
    for n in range(1, 7):
        await store.append(f"s-{n % 2}", [Deposited(n), Noted("x")], expected_version=ANY)
    tags = ["test.deposited"]
    for low, high, limit in ((1, 12, 100), (3, 9, 2), (5, 5, 10), (13, 20, 10)):
        expected = await store.read_all(
            from_position=low, to_position=high, limit=limit, event_types=tags
        )
        got = await store.read_log(
            from_position=low, to_position=high, limit=limit, event_types=tags
        )
        assert got == expected
    everything = await store.read_log(from_position=0, to_position=12, limit=100)
    assert [e.position for e in everything] == list(range(1, 13))
    with pytest.raises(InvalidReadArgument, match="read_log"):
        await store.read_log(from_position=1, to_position="5", limit=10)  # type: ignore[arg-type]
    with pytest.raises(InvalidReadArgument, match="read_log"):
        await store.read_log(from_position=1, to_position=5, limit=0)
