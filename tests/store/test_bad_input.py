"""Bad input: each is refused with its own typed error naming what was wrong, nothing
is written, and the store goes on working."""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import structlog

from store import (
    ANY,
    NO_STREAM,
    CorruptEvent,
    EventDecodeError,
    EventRegistry,
    EventTooLarge,
    InvalidAppend,
    InvalidArgument,
    InvalidCheckpoint,
    InvalidReadArgument,
    InvalidSnapshot,
    InvalidStoreOption,
    InvalidStreamId,
    NaiveDatetime,
    ReadTooLarge,
    SQLiteEventStore,
    StoreOptions,
    TooManyEvents,
    UnknownEventType,
    UnregisteredEventType,
    open_store,
)
from store._options import Writer
from tests.store._events import Deposited, Noted, Opened, Unregistered, Untagged, make_registry


@pytest.fixture
async def small_store(store_path: str, store_writer: Writer) -> AsyncIterator[SQLiteEventStore]:
    """A store with small limits and one event already in it."""
    async with open_store(
        store_path,
        registry=make_registry(),
        max_event_bytes=100,
        max_events_per_append=3,
        max_stream_id_bytes=16,
        writer=store_writer,
    ) as store:
        await store.append("existing", [Opened("ada")], expected_version=NO_STREAM)
        yield store


async def assert_unchanged_and_working(store: SQLiteEventStore) -> None:
    """Nothing but the fixture's one event is stored, and appends still work."""
    assert [(e.stream_id, e.position) for e in await store.read_all()] == [("existing", 1)]
    result = await store.append("existing", [Deposited(1)], expected_version=1)
    assert (result.last_version, result.last_position) == (2, 2)


class Holder(msgspec.Struct, frozen=True, tag="test.holder"):
    value: Any


# -- refused appends ----------------------------------------------------------------------


async def test_an_unregistered_event_type_is_refused_at_append(
    small_store: SQLiteEventStore,
) -> None:
    for event in (Unregistered(1), Untagged(1)):
        with pytest.raises(UnregisteredEventType) as caught:
            await small_store.append("s", [Deposited(1), event], expected_version=ANY)
        assert caught.value.event_type is type(event)
        assert type(event).__qualname__ in str(caught.value)
        assert "'s'" in str(caught.value)
    await assert_unchanged_and_working(small_store)


async def test_an_event_over_max_event_bytes_is_refused(small_store: SQLiteEventStore) -> None:
    with pytest.raises(EventTooLarge) as caught:
        await small_store.append("s", [Noted("ok"), Noted("x" * 200)], expected_version=ANY)
    error = caught.value
    assert (error.stream_id, error.event_type, error.limit) == ("s", "test.noted", 100)
    assert error.size > 200
    assert all(part in str(error) for part in ("'s'", "'test.noted'", str(error.size), "100"))
    await assert_unchanged_and_working(small_store)


async def test_an_append_over_max_events_per_append_is_refused(
    small_store: SQLiteEventStore,
) -> None:
    with pytest.raises(TooManyEvents) as caught:
        await small_store.append("s", [Deposited(i) for i in range(4)], expected_version=ANY)
    assert (caught.value.stream_id, caught.value.count, caught.value.limit) == ("s", 4, 3)
    assert "'s'" in str(caught.value)
    assert "4 events" in str(caught.value)
    await assert_unchanged_and_working(small_store)


async def test_an_empty_append_is_refused(small_store: SQLiteEventStore) -> None:
    with pytest.raises(InvalidAppend, match="'s' carries no events"):
        await small_store.append("s", [], expected_version=ANY)
    await assert_unchanged_and_working(small_store)


@pytest.mark.parametrize(
    ("value", "named"),
    [(2**64, "ints"), (-(2**63) - 1, "ints"), ("\ud800", "surrogates"), (object(), "object")],
    ids=["int-over-u64", "int-under-i64", "lone-surrogate", "object"],
)
async def test_an_event_that_cannot_be_encoded_is_refused(
    store_path: str, store_writer: Writer, value: object, named: str
) -> None:
    registry = make_registry()
    registry.register(Holder)
    async with open_store(store_path, registry=registry, writer=store_writer) as store:
        with pytest.raises(InvalidAppend) as caught:
            await store.append("s", [Holder(value)], expected_version=ANY)
        assert "Holder" in str(caught.value)
        assert "'s'" in str(caught.value)
        assert named in str(caught.value)
        assert await store.last_position() == 0
        assert (await store.append("s", [Holder(2**64 - 1)], expected_version=0)).last_version == 1
        assert [e.event for e in await store.read_stream("s")] == [Holder(2**64 - 1)]


@pytest.mark.parametrize(
    ("metadata", "named"),
    [({"key": 1}, "'key'"), ({1: "value"}, "1"), ({"a": "b", "c": None}, "'c'")],
)
async def test_metadata_must_map_str_to_str(
    small_store: SQLiteEventStore, metadata: dict[Any, Any], named: str
) -> None:
    with pytest.raises(InvalidAppend) as caught:
        await small_store.append("s", [Deposited(1)], expected_version=ANY, metadata=metadata)
    assert named in str(caught.value)
    assert "'s'" in str(caught.value)
    await assert_unchanged_and_working(small_store)


@pytest.mark.parametrize("command_id", ["", "c" * 257, 5, b"c", "c\udc80"])
async def test_a_bad_command_id_is_refused(small_store: SQLiteEventStore, command_id: Any) -> None:
    with pytest.raises(InvalidAppend) as caught:
        await small_store.append("s", [Deposited(1)], expected_version=ANY, command_id=command_id)
    assert "command_id" in str(caught.value)
    assert "'s'" in str(caught.value)
    await assert_unchanged_and_working(small_store)


async def test_a_bad_command_id_fails_alone_not_the_batch_it_would_have_joined(
    small_store: SQLiteEventStore,
) -> None:
    outcomes: dict[str, object] = {}

    async def append(name: str, command_id: str) -> None:
        try:
            result = await small_store.append(
                name, [Deposited(1)], expected_version=ANY, command_id=command_id
            )
            outcomes[name] = result.last_version
        except InvalidAppend as exc:
            outcomes[name] = type(exc).__name__

    async with anyio.create_task_group() as tg:
        tg.start_soon(append, "a", "ok-a")
        tg.start_soon(append, "bad", "c\udc80")  # a lone surrogate cannot be stored
        tg.start_soon(append, "b", "ok-b")
    assert outcomes == {"a": 1, "bad": "InvalidAppend", "b": 1}


# -- stream ids ---------------------------------------------------------------------------

BAD_STREAM_IDS = [
    pytest.param("", "empty", id="empty"),
    pytest.param("   ", "blank", id="blank"),
    pytest.param("\t\n", "blank", id="whitespace"),
    pytest.param("a" * 17, "17 bytes", id="too-long"),
    pytest.param("a" * 10_000, "10000 bytes", id="10000-characters"),
    pytest.param("ä" * 9, "18 bytes", id="too-long-in-utf8"),
    pytest.param("a\nb", "control", id="newline"),
    pytest.param("a\x00b", "control", id="nul"),
    pytest.param("a\x1bb", "control", id="escape"),
    pytest.param("a\u200bb", "format", id="zero-width-space"),
    pytest.param("a\ud800", "surrogate", id="lone-surrogate"),
    pytest.param(42, "str", id="int"),
    pytest.param(None, "str", id="none"),
    pytest.param(b"bytes", "str", id="bytes"),
]


@pytest.mark.parametrize(("stream_id", "reason"), BAD_STREAM_IDS)
async def test_a_bad_stream_id_is_refused_everywhere(
    small_store: SQLiteEventStore, stream_id: Any, reason: str
) -> None:
    with pytest.raises(InvalidStreamId) as checked:
        small_store.check_stream_id(stream_id)
    assert checked.value.stream_id == stream_id
    assert reason in str(checked.value)
    attempts: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: small_store.append(stream_id, [Deposited(1)], expected_version=ANY),
        lambda: small_store.read_stream(stream_id),
        lambda: small_store.read_stream(stream_id, limit=5),
        lambda: small_store.read_stream_until(stream_id, 0.0),
        lambda: small_store.stream_version(stream_id),
        lambda: small_store.save_snapshot(stream_id, 1, Deposited(1)),
        lambda: small_store.load_snapshot(stream_id, Deposited),
    )
    for attempt in attempts:
        with pytest.raises(InvalidStreamId) as caught:
            await attempt()
        assert caught.value.stream_id == stream_id
        assert reason in str(caught.value)
        assert "invalid stream id" in str(caught.value)
        # an argument error of reads and appends alike, not an append's
        assert isinstance(caught.value, InvalidArgument)
        assert not isinstance(caught.value, InvalidAppend)
    await assert_unchanged_and_working(small_store)


SQL_LOOKING_IDS = [
    "'; DROP TABLE events; --",
    '" OR 1=1 --',
    "x') ; DELETE FROM events WHERE ('1'='1",
    "%_*?[]\\",
    "🙂 ünïcode",
]


async def test_sql_looking_stream_ids_are_stored_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE canary (x)")
    conn.close()
    async with open_store(path, registry=make_registry()) as store:
        for stream_id in SQL_LOOKING_IDS:
            await store.append(stream_id, [Noted(stream_id)], expected_version=NO_STREAM)
            await store.save_snapshot(stream_id, 1, Noted(stream_id))
        read = [(e.stream_id, e.event.text) for e in await store.read_all()]
        assert read == [(s, s) for s in SQL_LOOKING_IDS]
        for stream_id in SQL_LOOKING_IDS:
            assert [e.stream_id for e in await store.read_stream(stream_id)] == [stream_id]
            assert await store.stream_version(stream_id) == 1
            assert [e.stream_id for e in await store.read_all(stream_prefix=stream_id)] == [
                stream_id
            ]
    with sqlite3.connect(path) as conn:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        raw = [r[0] for r in conn.execute("SELECT stream_id FROM events ORDER BY position")]
    conn.close()
    assert [t for t in tables if not t.startswith("sqlite_autoindex")] == [
        "canary",
        "checkpoints",
        "commands",
        "events",
        "leases",
        "snapshots",
    ]
    assert [s.encode() for s in raw] == [s.encode() for s in SQL_LOOKING_IDS]


# -- reads, snapshots, checkpoints, options ------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, "5", 1.5, True])
async def test_a_read_limit_must_be_a_positive_int(
    small_store: SQLiteEventStore, limit: Any
) -> None:
    attempts: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: small_store.read_stream("existing", limit=limit),
        lambda: small_store.read_all(limit=limit),
    )
    for attempt in attempts:
        with pytest.raises(InvalidReadArgument) as caught:
            await attempt()
        assert repr(limit) in str(caught.value)
        assert (caught.value.argument, caught.value.value) == ("limit", limit)
        assert not isinstance(caught.value, InvalidAppend)
    await assert_unchanged_and_working(small_store)


async def test_a_whole_stream_read_over_the_read_limit_is_refused_not_shortened(
    store_path: str,
    store_writer: Writer,
) -> None:
    async with open_store(
        store_path, registry=make_registry(), max_read_limit=5, writer=store_writer
    ) as store:
        await store.append("long", [Deposited(i) for i in range(6)], expected_version=NO_STREAM)
        with pytest.raises(ReadTooLarge) as caught:
            await store.read_stream("long")
        error = caught.value
        assert (error.stream_id, error.from_version, error.limit) == ("long", 1, 5)
        assert "max_read_limit" in str(error)
        with pytest.raises(ReadTooLarge):
            await store.read_stream_until("long", time.time() + 60)
        # at the limit, from a later version, or paged: served whole
        assert len(await store.read_stream("long", from_version=2)) == 5
        assert [e.version for e in await store.read_stream("long", limit=4)] == [1, 2, 3, 4]
        assert len(await store.read_stream("long", limit=50)) == 5  # an explicit page is capped


@pytest.mark.parametrize(
    ("name", "position", "named"),
    [
        ("", 1, "''"),
        (None, 1, "None"),
        ("p", -1, "-1"),
        ("p", "3", "'3'"),
        ("p", True, "True"),
        ("p", 2**64, str(2**64)),
        ("p\udc80", 1, "surrogate"),
    ],
)
async def test_a_bad_checkpoint_is_refused(
    small_store: SQLiteEventStore, name: Any, position: Any, named: str
) -> None:
    with pytest.raises(InvalidCheckpoint) as caught:
        await small_store.save_checkpoint(name, position)
    assert named in str(caught.value)
    assert "checkpoint" in str(caught.value)
    assert caught.value.name == name
    assert not isinstance(caught.value, InvalidAppend)
    await small_store.save_checkpoint("p", 1)
    assert await small_store.load_checkpoint("p") == 1


@pytest.mark.parametrize(
    ("version", "schema_version", "named"),
    [
        (-1, 1, "-1"),
        ("2", 1, "'2'"),
        (1.0, 1, "1.0"),
        (2**64, 1, str(2**64)),
        (1, 0, "schema_version"),
        (1, 2**64, "schema_version"),
    ],
)
async def test_a_bad_snapshot_version_is_refused(
    small_store: SQLiteEventStore, version: Any, schema_version: Any, named: str
) -> None:
    with pytest.raises(InvalidSnapshot) as caught:
        await small_store.save_snapshot("s", version, Deposited(1), schema_version=schema_version)
    assert named in str(caught.value)
    assert "'s'" in str(caught.value)
    assert caught.value.stream_id == "s"
    assert not isinstance(caught.value, InvalidAppend)
    assert await small_store.load_snapshot("s", Deposited) is None


INT_OPTIONS = (
    "busy_retries",
    "max_event_bytes",
    "max_events_per_append",
    "max_stream_id_bytes",
    "max_pending_appends",
    "max_batch_events",
    "max_read_limit",
)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"synchronous": "OFF"}, "synchronous"),
        ({"max_event_bytes": 0}, "max_event_bytes"),
        ({"max_events_per_append": -1}, "max_events_per_append"),
        ({"max_stream_id_bytes": 1.5}, "max_stream_id_bytes"),
        ({"max_pending_appends": "10"}, "max_pending_appends"),
        ({"max_batch_events": True}, "max_batch_events"),
        ({"max_read_limit": None}, "max_read_limit"),
        ({"busy_retries": 0}, "busy_retries"),
        ({"busy_timeout": 0}, "busy_timeout"),
        ({"busy_timeout": -1.0}, "busy_timeout"),
        ({"busy_timeout": float("nan")}, "busy_timeout"),
        ({"busy_timeout": float("inf")}, "busy_timeout"),
        ({"busy_timeout": "5"}, "busy_timeout"),
        ({"busy_timeout": 0.0001}, "busy_timeout"),  # SQLite would round it to no wait
        ({"busy_timeout": 2_147_484}, "busy_timeout"),  # would wrap: no wait at all
        ({"busy_timeout": 1e300}, "busy_timeout"),
        ({"writer": "fork"}, "writer"),
        ({"loop_reads": 1}, "loop_reads"),
        ({"loop_reads": "no"}, "loop_reads"),
        *(({name: 2**62 + 1}, name) for name in INT_OPTIONS),
        *(({name: 2**64}, name) for name in INT_OPTIONS),
    ],
)
async def test_bad_store_options_are_refused_before_anything_is_opened(
    tmp_path: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidStoreOption, match=named) as caught:
        StoreOptions(**options)
    ((option, value),) = options.items()
    assert (caught.value.name, caught.value.value) == (option, value)
    assert isinstance(caught.value, ValueError)  # what callers caught before
    with pytest.raises(InvalidStoreOption, match=named):
        async with open_store(tmp_path / "events.db", **options):
            pass
    assert os.listdir(tmp_path) == []


async def test_an_unknown_store_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreOption, match="max_events_per_apend"):
        async with open_store(tmp_path / "events.db", max_events_per_apend=3):  # type: ignore[call-arg]
            pass
    assert os.listdir(tmp_path) == []


# -- damaged rows -------------------------------------------------------------------------


async def _file_with_two_events(path: Path) -> None:
    async with open_store(path, registry=make_registry()) as store:
        await store.append("s", [Opened("ada"), Deposited(5)], expected_version=NO_STREAM)


def _update(path: Path, sql: str, params: tuple[Any, ...]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)
    conn.close()


async def _read_errors(path: Path) -> list[Exception]:
    """What read_stream and read_all raise on the file (each must raise)."""
    errors: list[Exception] = []
    async with open_store(path, registry=make_registry()) as store:
        attempts: tuple[Callable[[], Awaitable[object]], ...] = (
            lambda: store.read_stream("s"),
            lambda: store.read_all(),
        )
        for attempt in attempts:
            try:
                await attempt()
            except Exception as exc:  # noqa: BLE001 - collected for the assertions
                errors.append(exc)
        # the rows before the damaged one still read, and the store still appends
        assert [e.event for e in await store.read_stream("s", to_version=1)] == [Opened("ada")]
        await store.append("t", [Noted("still works")], expected_version=NO_STREAM)
    return errors


async def test_an_unknown_stored_event_type_names_stream_version_and_tag(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _file_with_two_events(path)
    _update(path, "UPDATE events SET event_type = ? WHERE version = 2", ("test.mystery",))
    errors = await _read_errors(path)
    assert len(errors) == 2
    for error in errors:
        assert isinstance(error, UnknownEventType)
        assert (error.stream_id, error.version, error.event_type) == ("s", 2, "test.mystery")
        assert all(part in str(error) for part in ("'s'", "version 2", "'test.mystery'"))


async def test_an_undecodable_payload_is_a_corrupt_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _file_with_two_events(path)
    garbage = b"\xc1\xc1\xc1"  # 0xc1 is never used in msgpack
    _update(
        path,
        "UPDATE events SET data = ?, checksum = ? WHERE version = 2",
        (garbage, zlib.crc32(garbage)),
    )
    errors = await _read_errors(path)
    assert len(errors) == 2
    for error in errors:
        assert isinstance(error, CorruptEvent)
        assert (error.stream_id, error.version, error.event_type) == ("s", 2, "test.deposited")
        assert all(part in str(error) for part in ("'s'", "version 2", "corrupt"))


async def test_a_payload_that_fails_its_checksum_is_a_corrupt_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _file_with_two_events(path)
    # Same length, one byte changed: msgpack for Deposited(5) still decodes (as 6).
    with sqlite3.connect(path) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE version = 2").fetchone()
        flipped = data[:-1] + bytes([data[-1] ^ 0x03])
        conn.execute("UPDATE events SET data = ? WHERE version = 2", (flipped,))
    conn.close()
    errors = await _read_errors(path)
    assert len(errors) == 2
    for error in errors:
        assert isinstance(error, CorruptEvent)
        assert (error.stream_id, error.version) == ("s", 2)
        assert "checksum" in str(error)
        assert "'s'" in str(error)
        assert "version 2" in str(error)


# -- read arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"from_version": "1"}, "from_version"),
        ({"to_version": 2.0}, "to_version"),
        ({"from_version": None}, "from_version"),
    ],
)
async def test_read_stream_bounds_must_be_ints(
    small_store: SQLiteEventStore, arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidReadArgument, match=named) as caught:
        await small_store.read_stream("existing", **arguments)
    assert caught.value.argument == named
    assert caught.value.call == "read_stream('existing')"


async def test_read_bounds_beyond_sqlite_integers_are_clamped(
    small_store: SQLiteEventStore,
) -> None:
    assert len(await small_store.read_stream("existing", to_version=2**80)) == 1
    assert await small_store.read_stream("existing", from_version=2**80) == []
    assert len(await small_store.read_all(from_position=-(2**80), to_position=2**80)) == 1


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"from_position": "0"}, "from_position"),
        ({"to_position": 1.5}, "to_position"),
        ({"event_types": "test.opened"}, "event_types"),
        ({"event_types": ["test.opened", 3]}, "event_types"),
        ({"event_types": 5}, "event_types"),
        ({"event_types": ["test.\udc80"]}, "event_types"),
        ({"stream_prefix": 3}, "stream_prefix"),
        ({"stream_prefix": "a\ud800"}, "stream_prefix"),
    ],
)
async def test_read_all_arguments_are_checked(
    small_store: SQLiteEventStore, arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidReadArgument, match=named) as caught:
        await small_store.read_all(**arguments)
    assert caught.value.argument == named
    assert not isinstance(caught.value, InvalidAppend)


async def test_read_stream_until_refuses_a_naive_datetime(small_store: SQLiteEventStore) -> None:
    naive = datetime(2030, 1, 1)  # no tzinfo: the bad input under test
    with pytest.raises(NaiveDatetime) as caught:
        await small_store.read_stream_until("existing", naive)
    error = caught.value
    assert (error.what, error.value) == ("read_stream_until('existing')", naive)
    assert all(part in str(error) for part in ("'existing'", "naive", "datetime.now(UTC)"))
    assert isinstance(error, InvalidArgument)
    assert isinstance(error, ValueError)
    assert not isinstance(error, InvalidAppend)


@pytest.mark.parametrize(
    ("at", "named"),
    [
        (float("nan"), "nan"),
        ("2030-01-01", "'2030-01-01'"),
        (None, "None"),
        (True, "True"),
    ],
)
async def test_read_stream_until_needs_an_aware_moment(
    small_store: SQLiteEventStore, at: Any, named: str
) -> None:
    with pytest.raises(InvalidReadArgument, match=named) as caught:
        await small_store.read_stream_until("existing", at)
    assert "'existing'" in str(caught.value)
    assert caught.value.argument == "at"
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    assert len(await small_store.read_stream_until("existing", aware)) == 1


# -- failing upcasters --------------------------------------------------------------------


class PointV1(msgspec.Struct, frozen=True, tag="test.point"):
    x: int


class PointV2(msgspec.Struct, frozen=True, tag="test.point"):
    x: int
    y: int


def _missing_key(payload: dict[str, Any]) -> dict[str, Any]:
    return {"x": payload["x"], "y": payload["no-such-field"]}


def _returns_none(payload: dict[str, Any]) -> dict[str, Any]:
    return None  # type: ignore[return-value]  # the upcaster bug under test


@pytest.mark.parametrize(
    ("upcaster", "named"), [(_missing_key, "KeyError"), (_returns_none, "NoneType")]
)
async def test_a_failing_upcaster_is_reported_with_the_stream_and_version(
    tmp_path: Path, upcaster: Callable[[dict[str, Any]], dict[str, Any]], named: str
) -> None:
    path = tmp_path / "events.db"
    async with open_store(path, registry=EventRegistry([PointV1])) as store:
        await store.append("p", [PointV1(1), PointV1(2)], expected_version=NO_STREAM)
    registry = EventRegistry()
    registry.register(PointV2, schema_version=2)
    registry.upcaster("test.point", 1, upcaster)
    async with open_store(path, registry=registry) as store:
        with pytest.raises(EventDecodeError) as caught:
            await store.read_stream("p")
    error = caught.value
    assert not isinstance(error, UnknownEventType)  # the upcaster exists; it is wrong
    assert (error.stream_id, error.version, error.event_type) == ("p", 1, "test.point")
    assert all(part in str(error) for part in ("'p'", "version 1", "upcaster", named))


# -- snapshots ----------------------------------------------------------------------------


class Tally(msgspec.Struct, frozen=True):
    count: int


async def test_a_snapshot_state_that_cannot_be_encoded_is_refused(
    small_store: SQLiteEventStore,
) -> None:
    with pytest.raises(InvalidSnapshot) as caught:
        await small_store.save_snapshot("s", 1, Holder(object()))
    assert all(part in str(caught.value) for part in ("Holder", "'s'", "snapshot"))
    assert await small_store.load_snapshot("s", Holder) is None


@pytest.mark.parametrize("damage", ["checksum", "payload"])
async def test_a_damaged_snapshot_is_ignored_with_a_warning(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "events.db"
    async with open_store(path) as store:
        await store.save_snapshot("s", 3, Tally(3))
    if damage == "checksum":
        _update(path, "UPDATE snapshots SET checksum = checksum + 1", ())
    else:
        garbage = b"\xc1"
        _update(path, "UPDATE snapshots SET data = ?, checksum = ?", (garbage, zlib.crc32(garbage)))
    with structlog.testing.capture_logs() as logs:
        async with open_store(path) as store:
            assert await store.load_snapshot("s", Tally) is None
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["stream_id"], e["version"]) for e in warnings] == [("s", 3)]
