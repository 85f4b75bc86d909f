"""Every demo event and command survives the store's codec unchanged."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Command, Event
from demo.bank import Account, AccountCommand, Transfer, TransferCommand
from demo.shop import Inventory, InventoryCommand, Order, OrderCommand, OrderLine
from store import EventRegistry

EVENT_TYPES: tuple[type[Event], ...] = (
    *Account.event_types,
    *Transfer.event_types,
    *Order.event_types,
    *Inventory.event_types,
)
registry = EventRegistry(EVENT_TYPES)


def test_every_aggregate_declares_its_events_and_tags_are_unique() -> None:
    assert len(EVENT_TYPES) == 9 + 3 + 7 + 3
    tags = [tp.__struct_config__.tag for tp in EVENT_TYPES]
    assert len(set(tags)) == len(tags)


INT64 = st.integers(-(2**63), 2**63 - 1)  # what an event field can hold
LINES = st.lists(st.builds(OrderLine, st.text(max_size=8), INT64, INT64), max_size=4).map(tuple)


def structs(tp: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    """Instances of `tp` with 64-bit ints (events never carry more: the aggregates
    bound amounts, quantities and prices) and order lines where lines go."""
    kwargs: dict[str, st.SearchStrategy[object]] = {}
    for field in msgspec.structs.fields(tp):
        if field.type is int:
            kwargs[field.name] = INT64
        elif field.type == tuple[OrderLine, ...]:
            kwargs[field.name] = LINES
    return st.builds(tp, **kwargs)


@settings(deadline=None, max_examples=30)
@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda tp: tp.__name__)
@given(data=st.data())
def test_events_round_trip_through_the_codec(event_type: type[Event], data: st.DataObject) -> None:
    event = data.draw(structs(event_type))
    encoded = registry.encode(event)
    assert encoded is not None
    tag, schema_version, payload = encoded
    assert registry.decode(tag, schema_version, payload) == event


COMMANDS = AccountCommand | TransferCommand | OrderCommand | InventoryCommand
command_decoder = msgspec.json.Decoder(COMMANDS)


@settings(deadline=None, max_examples=30)
@pytest.mark.parametrize(
    "command_type",
    [tp for tp in (Command.__subclasses__()) if tp.__module__.startswith("demo.")],
    ids=lambda tp: tp.__name__,
)
@given(data=st.data())
def test_commands_round_trip_as_json_by_their_tag(
    command_type: type[Command], data: st.DataObject
) -> None:
    command = data.draw(structs(command_type))
    assert command_decoder.decode(msgspec.json.encode(command)) == command
