from __future__ import annotations

import msgspec

from store import NO_STREAM, EventRegistry, open_store


class Opened(msgspec.Struct, frozen=True, tag="test.opened"):
    owner: str


async def test_an_appended_event_reads_back_decoded() -> None:
    async with open_store(":memory:", registry=EventRegistry([Opened])) as store:
        result = await store.append("account-1", [Opened("ada")], expected_version=NO_STREAM)
        events = await store.read_stream("account-1")
    assert (result.first_version, result.last_position) == (1, 1)
    assert [e.event for e in events] == [Opened("ada")]
