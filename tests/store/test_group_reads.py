"""`read_streams`: several streams' pages in one query, as `read_stream` reads them."""

from __future__ import annotations

import pytest

from store import ANY, InvalidReadArgument, InvalidStreamId, SQLiteEventStore
from store._calls import MAX_GROUP_READ
from tests.store._events import Noted


async def test_each_stream_gets_the_page_read_stream_gives(store: SQLiteEventStore) -> None:
    lengths = {"g-0": 0, "g-1": 1, "g-3": 3, "g-7": 7, "g-9": 9}
    for stream_id, length in lengths.items():
        for n in range(length):
            await store.append(stream_id, [Noted(f"{stream_id}:{n}")], expected_version=ANY)
    starts = [("g-7", 1), ("g-0", 1), ("g-9", 4), ("g-1", 2), ("g-3", 1), ("g-missing", 1)]
    got = await store.read_streams(starts, limit=4)
    assert len(got) == len(starts)
    for (stream_id, start), page in zip(starts, got, strict=True):
        alone = await store.read_stream(stream_id, from_version=start, limit=4)
        assert page == alone
    first, third = got[0], got[2]
    assert isinstance(first, list)
    assert isinstance(third, list)
    assert [e.version for e in first] == [1, 2, 3, 4]  # a full page: read on from 5
    assert [e.version for e in third] == [4, 5, 6, 7]
    assert got[1] == got[3] == got[5] == []
    assert await store.read_streams([], limit=4) == []


async def test_read_streams_checks_its_arguments(store: SQLiteEventStore) -> None:
    with pytest.raises(InvalidReadArgument, match="each stream at most once"):
        await store.read_streams([("a", 1), ("a", 2)], limit=10)
    with pytest.raises(InvalidReadArgument, match=f"at most {MAX_GROUP_READ}"):
        await store.read_streams([(f"s-{n}", 1) for n in range(MAX_GROUP_READ + 1)], limit=1)
    with pytest.raises(InvalidReadArgument, match="limit"):
        await store.read_streams([("a", 1)], limit=0)
    with pytest.raises(InvalidReadArgument, match="from_version"):
        await store.read_streams([("a", "1")], limit=1)  # type: ignore[list-item]
    with pytest.raises(InvalidStreamId):
        await store.read_streams([("", 1)], limit=1)
