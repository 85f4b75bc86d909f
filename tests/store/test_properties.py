"""Property tests: the codec round-trips generated events, and the store behaves like a
plain in-memory model of streams under random operations."""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial

import msgspec
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ConcurrencyError,
    EventRegistry,
    SQLiteEventStore,
    open_store,
)
from tests.store._events import Deposited, make_registry

# -- codec round trip ---------------------------------------------------------------------


class Address(msgspec.Struct, frozen=True):
    street: str
    postcode: str | None = None


class Customer(msgspec.Struct, frozen=True, tag="prop.customer"):
    name: str
    age: int
    address: Address
    tags: tuple[str, ...] = ()
    note: str | None = None


class Reading(msgspec.Struct, frozen=True, tag="prop.reading"):
    value: float
    big: int
    flag: bool
    raw: bytes


class Basket(msgspec.Struct, frozen=True, tag="prop.basket"):
    items: tuple[Address, ...]
    counts: dict[str, int]
    owner: Customer | None = None


texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
addresses = st.builds(Address, street=texts, postcode=st.none() | texts)
customers = st.builds(
    Customer,
    name=texts,
    age=ints,
    address=addresses,
    tags=st.lists(texts, max_size=3).map(tuple),
    note=st.none() | texts,
)
events = st.one_of(
    customers,
    st.builds(
        Reading,
        value=st.floats(allow_nan=False),
        big=ints,
        flag=st.booleans(),
        raw=st.binary(max_size=40),
    ),
    st.builds(
        Basket,
        items=st.lists(addresses, max_size=3).map(tuple),
        counts=st.dictionaries(texts, ints, max_size=3),
        owner=st.none() | customers,
    ),
)


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(events, min_size=1, max_size=4), stream_id=texts.filter(str.isprintable))
async def test_generated_events_round_trip_through_the_store(
    batch: list[msgspec.Struct], stream_id: str
) -> None:
    stream_id = "s-" + stream_id
    registry = EventRegistry([Customer, Reading, Basket])
    assert all(registry.encode(e) == registry.encode(e) for e in batch)  # deterministic
    async with open_store(":memory:", registry=registry) as store:
        await store.append(stream_id, batch, expected_version=NO_STREAM)
        read = await store.read_stream(stream_id)
        assert [e.event for e in read] == batch
        assert [type(e.event) for e in read] == [type(e) for e in batch]
        assert [e.event for e in await store.read_all()] == batch


# -- the store against a model ------------------------------------------------------------

STREAMS = ("a", "b", "c")
expected_versions = st.one_of(st.sampled_from([NO_STREAM, ANY, STREAM_EXISTS]), st.integers(0, 6))


class StoreMachine(RuleBasedStateMachine):
    """Random appends and reads against a list-of-events model.

    Hypothesis drives the machine synchronously; the store runs on an event loop in a
    blocking portal's thread, opened and closed by one task there (its task group must
    be entered and left in the same task), and every rule calls into it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._resources = ExitStack()
        self.portal: BlockingPortal = self._resources.enter_context(
            start_blocking_portal("asyncio")
        )
        self.store: SQLiteEventStore = self._resources.enter_context(
            self.portal.wrap_async_context_manager(open_store(":memory:", registry=make_registry()))
        )
        self.streams: dict[str, list[int]] = {s: [] for s in STREAMS}
        self.log: list[tuple[str, int, int]] = []  # (stream, version, amount) by position
        self.commands: dict[str, tuple[str, list[int], AppendResult]] = {}
        self.next_amount = 0

    def teardown(self) -> None:
        self._resources.close()

    def _amounts(self, count: int) -> list[int]:
        self.next_amount += count
        return list(range(self.next_amount - count, self.next_amount))

    @rule(
        stream_id=st.sampled_from(STREAMS),
        count=st.integers(1, 3),
        expected=expected_versions,
        with_command_id=st.booleans(),
    )
    def append(self, stream_id: str, count: int, expected: int, with_command_id: bool) -> None:
        current = len(self.streams[stream_id])
        accepted = expected == ANY or expected == current or (expected == STREAM_EXISTS and current)
        amounts = self._amounts(count)
        command_id = f"cmd-{len(self.commands)}" if with_command_id else None
        call = partial(
            self.store.append,
            stream_id,
            [Deposited(a) for a in amounts],
            expected_version=expected,
            command_id=command_id,
        )
        if not accepted:
            with pytest.raises(ConcurrencyError) as caught:
                self.portal.call(call)
            error = caught.value
            assert (error.stream_id, error.expected, error.actual) == (stream_id, expected, current)
            return
        result = self.portal.call(call)
        first_position = len(self.log) + 1
        assert result == AppendResult(
            stream_id, current + 1, current + count, first_position, first_position + count - 1
        )
        for i, amount in enumerate(amounts, 1):
            self.streams[stream_id].append(amount)
            self.log.append((stream_id, current + i, amount))
        if command_id is not None:
            self.commands[command_id] = (stream_id, amounts, result)

    @precondition(lambda self: self.commands)
    @rule(data=st.data())
    def retry_a_command(self, data: st.DataObject) -> None:
        command_id = data.draw(st.sampled_from(sorted(self.commands)))
        stream_id, amounts, first = self.commands[command_id]
        call = partial(
            self.store.append,
            stream_id,
            [Deposited(a) for a in amounts],
            expected_version=data.draw(expected_versions),
            command_id=command_id,
        )
        assert self.portal.call(call) == msgspec.structs.replace(first, duplicate=True)

    @rule(
        stream_id=st.sampled_from(STREAMS),
        from_version=st.integers(1, 8),
        to_version=st.none() | st.integers(0, 8),
        limit=st.none() | st.integers(1, 4),
    )
    def read_stream(
        self, stream_id: str, from_version: int, to_version: int | None, limit: int | None
    ) -> None:
        call = partial(
            self.store.read_stream,
            stream_id,
            from_version=from_version,
            to_version=to_version,
            limit=limit,
        )
        read = self.portal.call(call)
        model = self.streams[stream_id]
        high = len(model) if to_version is None else min(to_version, len(model))
        versions = list(range(from_version, high + 1))[:limit]
        assert [(e.version, e.event.amount) for e in read] == [(v, model[v - 1]) for v in versions]

    @rule(from_position=st.integers(0, 30), limit=st.integers(1, 7))
    def read_all(self, from_position: int, limit: int) -> None:
        read = self.portal.call(
            partial(self.store.read_all, from_position=from_position, limit=limit)
        )
        start = max(from_position, 1)
        expected = self.log[start - 1 : start - 1 + limit]
        assert [(e.stream_id, e.version, e.event.amount) for e in read] == expected
        assert [e.position for e in read] == list(range(start, start + len(expected)))

    @invariant()
    def versions_and_last_position_match_the_model(self) -> None:
        for stream_id, model in self.streams.items():
            assert self.portal.call(self.store.stream_version, stream_id) == len(model)
        assert self.portal.call(self.store.last_position) == len(self.log)


TestStoreAgainstModel = StoreMachine.TestCase
TestStoreAgainstModel.settings = settings(max_examples=50, stateful_step_count=25, deadline=None)
