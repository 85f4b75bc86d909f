"""Argument errors: their tree, events and snapshots that would not read back, bad
checkpoints among other work, `check_stream_id`, and the options' ranges."""

from __future__ import annotations

import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import store as store_package
from store import (
    ANY,
    NO_STREAM,
    AppendResult,
    InvalidAppend,
    InvalidArgument,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidReadArgument,
    InvalidSnapshot,
    InvalidStoreOption,
    InvalidStreamId,
    NaiveDatetime,
    SQLiteEventStore,
    StoreError,
    open_store,
)
from store._options import Writer
from tests.store._events import Deposited, Noted, Opened, make_registry
from tests.store._helpers import writer_held

# -- the tree -----------------------------------------------------------------------------


def test_argument_errors_share_a_base_and_append_errors_sit_below_it() -> None:
    appends_only = (
        "InvalidExpectedVersion",
        "UnregisteredEventType",
        "InvalidEvent",
        "EventTooLarge",
        "TooManyEvents",
    )
    for name in appends_only:
        assert issubclass(getattr(store_package, name), InvalidAppend), name
    for name in ("InvalidStreamId", "NaiveDatetime", "InvalidReadArgument", "InvalidSnapshot"):
        cls = getattr(store_package, name)
        assert issubclass(cls, InvalidArgument), name
        assert not issubclass(cls, InvalidAppend), name
    for name in ("InvalidCheckpoint", "InvalidStoreOption"):
        assert not issubclass(getattr(store_package, name), InvalidAppend), name
    assert issubclass(InvalidAppend, InvalidArgument)
    assert issubclass(InvalidArgument, StoreError)
    assert issubclass(InvalidArgument, ValueError)


ERRORS = [
    InvalidStreamId("a\x00b", "it contains control, format or separator characters"),
    NaiveDatetime("read_stream_until('a')", datetime(2030, 1, 1)),
    InvalidReadArgument("read_all", "limit", 0, "a positive int"),
    InvalidSnapshot("s", "its version must be an int", "count"),
    InvalidCheckpoint("p", "its position must be an int"),
    InvalidStoreOption("max_read_limit", 0, "an int from 1 to 2**62"),
    InvalidStoreOption("max_read_limt", 5, "synchronous, busy_timeout, ...", unknown=True),
    InvalidEvent("s", "test.deposited", Deposited, "$.amount", "Expected `int` - at `$.amount`"),
    InvalidExpectedVersion("s", "1"),
    store_package.UnregisteredEventType("s", Noted),
    store_package.EventTooLarge("s", "test.noted", 200, 100),
    store_package.TooManyEvents("s", 4, 3),
    store_package.ReadTooLarge("s", 1, 5),
    store_package.IdempotencyConflict("c", "s", "t"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_message_and_attributes(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


# -- events that would not read back ------------------------------------------------------


class Line(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class Ordered(msgspec.Struct, frozen=True, tag="test.ordered"):
    lines: list[Line]
    note: str | None = None


BAD_EVENTS = [
    pytest.param(Deposited(1.5), "amount", "$.amount", "float", id="float-for-int"),  # type: ignore[arg-type]
    pytest.param(Deposited(True), "amount", "$.amount", "bool", id="bool-for-int"),
    pytest.param(Deposited(None), "amount", "$.amount", "None", id="none-for-int"),  # type: ignore[arg-type]
    pytest.param(Deposited("5"), "amount", "$.amount", "str", id="str-for-int"),  # type: ignore[arg-type]
    pytest.param(Noted(None), "text", "$.text", "None", id="none-for-str"),  # type: ignore[arg-type]
    pytest.param(Opened(3), "owner", "$.owner", "int", id="int-for-str"),  # type: ignore[arg-type]
    pytest.param(
        Ordered([Line("a", 1), Line("b", 2.5)]),  # type: ignore[arg-type]
        "lines",
        "$.lines[1].quantity",
        "float",
        id="nested",
    ),
]


@pytest.mark.parametrize(("event", "field", "path", "got"), BAD_EVENTS)
async def test_an_event_that_would_not_read_back_is_refused_at_append(
    store: SQLiteEventStore, event: msgspec.Struct, field: str, path: str, got: str
) -> None:
    store.registry.register(Ordered)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    with pytest.raises(InvalidEvent) as caught:
        await store.append("s", [Deposited(2), event], expected_version=1)
    error = caught.value
    tag = type(event).__struct_config__.tag
    assert (error.stream_id, error.event_type, error.event_class) == ("s", tag, type(event))
    assert (error.field, error.path) == (field, path)
    assert got in error.reason
    message = str(error)
    assert all(part in message for part in ("'s'", repr(tag), type(event).__qualname__, got))
    assert repr(path.removeprefix("$.")) in message
    # nothing of that append was written, and every reader still reads the stream
    assert [e.event for e in await store.read_stream("s")] == [Deposited(1)]
    assert len(await store.read_all()) == 1
    assert (await store.append("s", [Deposited(2)], expected_version=1)).last_version == 2


async def test_values_that_decode_as_their_declared_types_are_accepted(
    store: SQLiteEventStore,
) -> None:
    store.registry.register(Ordered)
    events = [Ordered([Line("a", 1)]), Ordered([], note="x"), Deposited(-(2**63)), Noted("")]
    await store.append("s", events, expected_version=NO_STREAM)
    assert [e.event for e in await store.read_stream("s")] == events


async def test_an_invalid_event_fails_alone_not_the_batch_it_would_have_joined(
    store: SQLiteEventStore,
) -> None:
    outcomes: dict[str, object] = {}

    async def append(stream_id: str, event: msgspec.Struct) -> None:
        try:
            outcomes[stream_id] = await store.append(stream_id, [event], expected_version=ANY)
        except InvalidEvent as exc:
            outcomes[stream_id] = exc

    batches = store.statistics().batches
    async with anyio.create_task_group() as tg, writer_held(store) as held:
        tg.start_soon(append, "a", Deposited(1))
        tg.start_soon(append, "bad", Deposited(1.5))  # type: ignore[arg-type]
        tg.start_soon(append, "b", Deposited(2))
        await anyio.wait_all_tasks_blocked()
    assert store.statistics().batches - batches in held  # the hold's, then a and b as one
    assert isinstance(outcomes.pop("bad"), InvalidEvent)
    assert [
        (r.stream_id, r.last_position) for r in outcomes.values() if isinstance(r, AppendResult)
    ] == [
        ("a", 1),
        ("b", 2),
    ]
    assert [(e.stream_id, e.event) for e in await store.read_all()] == [
        ("a", Deposited(1)),
        ("b", Deposited(2)),
    ]


# -- snapshots that would not load back ---------------------------------------------------


class Tally(msgspec.Struct, frozen=True):
    count: int
    names: list[str] = []


@pytest.mark.parametrize(
    ("state", "field"),
    [(Tally(1.5), "count"), (Tally(None), "count"), (Tally(1, ["a", 2]), "names")],  # type: ignore[arg-type, list-item]
    ids=["float-for-int", "none-for-int", "int-in-list-of-str"],
)
async def test_a_snapshot_that_would_not_load_back_is_refused(
    store: SQLiteEventStore, state: Tally, field: str
) -> None:
    await store.save_snapshot("s", 1, Tally(1))
    with pytest.raises(InvalidSnapshot) as caught:
        await store.save_snapshot("s", 2, state)
    error = caught.value
    assert (error.stream_id, error.field) == ("s", field)
    assert all(part in str(error) for part in ("'s'", "Tally", "would not load back"))
    snapshot = await store.load_snapshot("s", Tally)  # the older one is kept
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (1, Tally(1))


# -- checkpoints among other work ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "position"), [("p\udc80", 1), ("p", 2**64)], ids=["lone-surrogate", "over-int64"]
)
async def test_a_bad_checkpoint_fails_alone_not_the_appends_beside_it(
    store: SQLiteEventStore, name: str, position: int
) -> None:
    outcomes: dict[str, object] = {}

    async def append(stream_id: str) -> None:
        result = await store.append(stream_id, [Deposited(1)], expected_version=ANY)
        outcomes[stream_id] = result.last_position

    async def checkpoint() -> None:
        try:
            await store.save_checkpoint(name, position)
        except InvalidCheckpoint as exc:
            outcomes["checkpoint"] = exc

    async with anyio.create_task_group() as tg, writer_held(store):
        tg.start_soon(append, "a")
        tg.start_soon(checkpoint)
        tg.start_soon(append, "b")
        await anyio.wait_all_tasks_blocked()
    error = outcomes.pop("checkpoint")
    assert isinstance(error, InvalidCheckpoint)
    assert error.name == name
    assert outcomes == {"a": 1, "b": 2}
    assert await store.load_checkpoint("p") == 0


@pytest.mark.parametrize("name", ["", None, 7, "p\udc80"])
async def test_load_checkpoint_refuses_a_name_no_checkpoint_can_have(
    store: SQLiteEventStore, name: Any
) -> None:
    with pytest.raises(InvalidCheckpoint) as caught:
        await store.load_checkpoint(name)
    assert caught.value.name == name


@pytest.mark.parametrize("command_id", ["", "c" * 257, None, 5, "c\udc80"])
async def test_find_command_refuses_an_id_no_append_can_have(
    store: SQLiteEventStore, command_id: Any
) -> None:
    with pytest.raises(InvalidReadArgument) as caught:
        await store.find_command(command_id)
    assert (caught.value.argument, caught.value.value) == ("command_id", command_id)
    assert await store.find_command("c" * 256) is None


# -- check_stream_id ----------------------------------------------------------------------


async def test_check_stream_id_applies_the_stores_own_limit(tmp_path: Path) -> None:
    async with open_store(tmp_path / "e.db", max_stream_id_bytes=8) as small:
        small.check_stream_id("a" * 8)
        with pytest.raises(InvalidStreamId) as caught:
            small.check_stream_id("a" * 9)
        assert "9 bytes" in str(caught.value)
        assert "max_stream_id_bytes" in str(caught.value)
    async with open_store(tmp_path / "f.db") as default:
        default.check_stream_id("a" * 9)
        default.check_stream_id("a" * 256)
        with pytest.raises(InvalidStreamId, match="257 bytes"):
            default.check_stream_id("a" * 257)


async def test_check_stream_id_is_a_lookup_for_an_id_seen_before(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.check_stream_id("account-a")

    def full_check(self: SQLiteEventStore, stream_id: object) -> None:
        raise AssertionError(f"checked {stream_id!r} again")

    monkeypatch.setattr(type(store), "_check_stream_id", full_check)
    store.check_stream_id("account-a")  # seen: no full check
    with pytest.raises(AssertionError):
        store.check_stream_id("account-b")


# -- options: 1 and the largest value of each work, the ranges are named ----------------

INT_OPTIONS = (
    "busy_retries",
    "max_event_bytes",
    "max_events_per_append",
    "max_stream_id_bytes",
    "max_pending_appends",
    "max_batch_events",
    "max_read_limit",
)


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_every_option_at_its_largest_value_works(tmp_path: Path, writer: Writer) -> None:
    largest: dict[str, Any] = dict.fromkeys(INT_OPTIONS, 2**62)
    async with open_store(
        tmp_path / "e.db",
        registry=make_registry(),
        writer=writer,
        busy_timeout=2_147_483,
        **largest,
    ) as big:
        results = [
            await big.append(f"s{i}", [Deposited(i)], expected_version=ANY) for i in range(3)
        ]
        assert [r.last_position for r in results] == [1, 2, 3]
        assert [e.event for e in await big.read_stream("s1")] == [Deposited(1)]
        assert len(await big.read_stream_until("s2", 2**40)) == 1
        assert len(await big.read_all()) == 3
        assert len(await big.read_all(limit=2**62)) == 3


async def test_every_option_at_its_smallest_value_works(tmp_path: Path) -> None:
    smallest: dict[str, Any] = dict.fromkeys(INT_OPTIONS, 1)
    smallest["max_event_bytes"] = 64  # 1 works too, but refuses every event (tested below)
    smallest["max_stream_id_bytes"] = 2
    async with open_store(
        tmp_path / "e.db", registry=make_registry(), busy_timeout=0.001, **smallest
    ) as tiny:

        async def append(stream_id: str) -> None:
            await tiny.append(stream_id, [Deposited(1)], expected_version=NO_STREAM)

        async with anyio.create_task_group() as tg:
            for stream_id in ("a", "b", "c"):
                tg.start_soon(append, stream_id)
        assert [e.version for e in await tiny.read_stream("a")] == [1]
        assert [e.stream_id for e in await tiny.read_all(limit=5)] == ["a"]  # pages of 1
        with pytest.raises(store_package.TooManyEvents):
            await tiny.append("a", [Deposited(1)] * 2, expected_version=1)
        with pytest.raises(InvalidStreamId, match="max_stream_id_bytes"):
            await tiny.append("abc", [Deposited(1)], expected_version=ANY)
    async with open_store(tmp_path / "f.db", registry=make_registry(), max_event_bytes=1) as one:
        with pytest.raises(store_package.EventTooLarge):
            await one.append("a", [Deposited(1)], expected_version=ANY)


def test_an_option_error_names_its_range() -> None:
    with pytest.raises(InvalidStoreOption) as caught:
        store_package.StoreOptions(max_read_limit=0)
    assert caught.value.allowed in str(caught.value)
    assert "2**62" in caught.value.allowed
    with pytest.raises(InvalidStoreOption) as timeout:
        store_package.StoreOptions(busy_timeout=3_000_000)
    assert "0.001" in str(timeout.value)
    assert "2,147,483" in str(timeout.value)
    with pytest.raises(InvalidStoreOption, match="'thread' or 'process'"):
        store_package.StoreOptions(writer="fork")  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
