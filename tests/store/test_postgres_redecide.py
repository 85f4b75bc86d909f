"""An append another process passed, decided again by PostgreSQL's writer before it
sends its batch (`queue_append(..., redecide)`): on the events the other processes
committed, read up to where their notifications said, so that it commits on the
stream's latest version instead of coming back as a conflict. And one its batch refused
all the same (the other committed after the writer looked): decided again on the events
it missed and sent in the next batch, with the appends chained to it, up to `_RETRIES`
times, before its caller gets the conflict.

Two stores on one schema stand for two processes: `other` appends, and `store`, which
listens, gets the events its append missed before its batch is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from store import NO_STREAM, ChainBroken, ConcurrencyError, RecordedEvent, StoreUnavailable
from store._postgres import PostgresEventStore, open_postgres_store
from tests.store._events import Deposited, make_registry
from tests.store.test_postgres_notify import _listening
from tests.store.test_redecide import Recorder, _queue, _sum_plus

TIMEOUT = 30.0


@pytest.fixture
async def two(postgres_url: str) -> AsyncIterator[tuple[PostgresEventStore, PostgresEventStore]]:
    async with (
        open_postgres_store(postgres_url, registry=make_registry()) as store,
        open_postgres_store(postgres_url, registry=make_registry()) as other,
    ):
        yield store, other


async def _heard(store: PostgresEventStore, position: int) -> None:
    """Wait for `store`'s listener to hear another store's commit up to `position`."""
    with anyio.fail_after(TIMEOUT):
        while store.others_head < position:
            await store._listener.changed().wait()


async def test_the_missed_events_decide_the_append_again(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    store, other = two
    await _listening(store)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    theirs = await other.append("s", [Deposited(10), Deposited(20)], expected_version=1)
    await _heard(store, theirs.last_position)
    seen: list[tuple[int, object]] = []
    store.add_commit_listener(lambda events: seen.extend((e.version, e.event) for e in events))
    redecide = _sum_plus(5)
    with anyio.fail_after(TIMEOUT):
        result = await _queue(store, [Deposited(5)], 1, redecide).future
    assert redecide.calls == [([(2, Deposited(10)), (3, Deposited(20))], 3)]
    assert (result.first_version, result.last_version) == (4, 4)
    stored = await store.read_stream("s")
    assert [e.event for e in stored] == [Deposited(1), Deposited(10), Deposited(20), Deposited(35)]
    assert seen == [(4, Deposited(35))]  # the commit listeners get the new events


async def test_a_commit_not_heard_of_is_refused_then_decided_again_for_the_next_batch(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """Without a notification of the other's commit (the store never listened), the
    batch goes as it was and its statement refuses the append; the writer then reads
    what it missed, decides it again and sends it in its next batch."""
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    redecide = _sum_plus(5)
    item = _queue(store, [Deposited(5)], 1, redecide)
    with anyio.fail_after(TIMEOUT):
        result = await item.future
    assert redecide.calls == [([(2, Deposited(10))], 2)]
    assert (result.first_version, result.last_version, item.retried) == (3, 3, 1)
    stored = await store.read_stream("s")
    assert [e.event for e in stored] == [Deposited(1), Deposited(10), Deposited(15)]
    assert store.statistics().rejected == 0


async def _rider_during_the_read(
    two: tuple[PostgresEventStore, PostgresEventStore],
    monkeypatch: pytest.MonkeyPatch,
    first: tuple[list[Any], Any],
    rider: tuple[int, Any],
) -> tuple[Any, list[Any]]:
    """Stream `s` at version 1, another store's deposit makes it 2; then an append of
    `first` (events, redecision) expecting 1 is queued, and refused; while the writer
    reads what it missed, a rider chained to it is queued: a deposit of 7 with `rider`
    (expected version, redecision). The first append, and a list holding the rider
    once queued."""
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    read_streams = store._read_streams
    queued = _queue(store, first[0], 1, first[1])
    riders: list[Any] = []

    async def rider_meanwhile(ranges: list[tuple[str, int, int]]) -> Any:
        riders.append(_queue(store, [Deposited(7)], rider[0], rider[1], after=queued))
        return await read_streams(ranges)

    monkeypatch.setattr(store, "_read_streams", rider_meanwhile)
    return queued, riders


async def test_an_append_chained_to_a_refused_one_meanwhile_is_decided_on_what_it_now_leaves(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rider queued while the writer decides a refused append again (chained to it,
    decided on what it was first decided to leave) goes in the same next batch: it is
    decided again on what that append now leaves before the batch is sent."""
    store = two[0]
    first_redecide, rider_redecide = _sum_plus(5), _sum_plus(7)
    first, riders = await _rider_during_the_read(
        two, monkeypatch, ([Deposited(5)], first_redecide), (2, rider_redecide)
    )
    with anyio.fail_after(TIMEOUT):
        ours = await first.future
        theirs = await riders[0].future
    assert first_redecide.calls == [([(2, Deposited(10))], 2)]
    assert rider_redecide.calls == [([], 3)]
    assert (ours.last_version, theirs.first_version) == (3, 4)
    assert riders[0].rebased
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(15),
        Deposited(7),
    ]


async def test_a_rider_on_a_state_that_never_was_is_broken_though_the_versions_line_up(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided again to one event instead of two, the refused append ends at the very
    version its rider expects: the rider, which declines to be decided again, gets
    `ChainBroken` rather than committing a decision made on a state that never was."""
    store = two[0]
    first_redecide = Recorder(lambda missed, version: [Deposited(50)])
    declines = Recorder(lambda missed, version: None)
    first, riders = await _rider_during_the_read(
        two, monkeypatch, ([Deposited(5), Deposited(6)], first_redecide), (3, declines)
    )
    with anyio.fail_after(TIMEOUT):
        ours = await first.future
        with pytest.raises(ChainBroken):
            await riders[0].future
    assert ours.last_version == 3  # what the rider expected
    assert declines.calls == [([], 3)]
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(50),
    ]


async def test_a_refused_append_is_decided_again_at_most_retries_times(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process appends again each time the writer reads what the append
    missed: each next batch refuses it again, and after `_RETRIES` tries its caller
    gets the conflict, naming the stream's version then."""
    from store import _postgres

    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    read_streams = store._read_streams

    async def raced(ranges: list[tuple[str, int, int]]) -> Any:
        found = await read_streams(ranges)
        await other.append("s", [Deposited(100)], expected_version=ranges[0][2])
        return found

    monkeypatch.setattr(store, "_read_streams", raced)
    redecide = _sum_plus(5)
    item = _queue(store, [Deposited(5)], 1, redecide)
    with anyio.fail_after(TIMEOUT), pytest.raises(ConcurrencyError) as refused:
        await item.future
    tries = _postgres._RETRIES
    assert len(redecide.calls) == item.retried == tries
    assert redecide.calls[0] == ([(2, Deposited(10))], 2)
    assert redecide.calls[1:] == [([(v, Deposited(100))], v) for v in range(3, tries + 2)]
    assert (refused.value.expected, refused.value.actual) == (tries + 1, tries + 2)
    assert store.statistics().rejected == 1
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        *[Deposited(100)] * tries,
    ]


async def test_a_refused_append_whose_missed_events_cannot_be_read_gets_its_conflict(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)

    async def unavailable(*args: object) -> None:
        raise StoreUnavailable("the server went away")

    monkeypatch.setattr(store, "_read_streams", unavailable)
    redecide = _sum_plus(5)
    with anyio.fail_after(TIMEOUT), pytest.raises(ConcurrencyError):
        await _queue(store, [Deposited(5)], 1, redecide).future
    assert redecide.calls == []
    assert len(await store.read_stream("s")) == 2


async def test_a_refused_append_whose_caller_gave_up_is_withdrawn(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the writer read what it missed: neither decided again nor sent,
    and the writer goes on with the next append."""
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    read_streams = store._read_streams
    redecide = _sum_plus(5)
    item = _queue(store, [Deposited(5)], 1, redecide)

    async def abandoned(ranges: list[tuple[str, int, int]]) -> Any:
        item.future.cancel()
        return await read_streams(ranges)

    monkeypatch.setattr(store, "_read_streams", abandoned)
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await item.future
        after = await store.append("s", [Deposited(7)], expected_version=2)
    assert redecide.calls == []
    assert item.retried == 0
    assert after.last_version == 3
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(7),
    ]


async def test_an_append_that_others_of_its_batch_are_chained_to_is_left_as_it_was(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """Its follower was decided on the state it was first decided to leave: decided
    again before the batch, it could end at the very version the follower expects,
    which would then commit a decision made on a state that never was. Both go as they
    were, and the batch refuses them: a conflict, and a broken chain. Then the writer
    decides the first again on what it missed, and the follower on what the first now
    leaves, and sends both in its next batch."""
    store, other = two
    await _listening(store)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    theirs = await other.append("s", [Deposited(10)], expected_version=1)
    await _heard(store, theirs.last_position)
    # Decided again to one event, the first would end at 3: the version the follower,
    # decided on the two events it was first decided to, expects.
    first_redecide = Recorder(lambda missed, version: [Deposited(50)])
    follower_redecide = _sum_plus(7)
    first = _queue(store, [Deposited(5), Deposited(6)], 1, first_redecide)
    follower = _queue(store, [Deposited(7)], 3, follower_redecide, after=first)
    with anyio.fail_after(TIMEOUT):
        ours = await first.future
        after = await follower.future
    # Decided after the refusal only: on the missed event, then on what the first left.
    assert first_redecide.calls == [([(2, Deposited(10))], 2)]
    assert follower_redecide.calls == [([], 3)]
    assert (ours.last_version, after.first_version, after.last_version) == (3, 4, 4)
    assert (first.retried, follower.retried) == (1, 1)
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(50),
        Deposited(7),
    ]


async def test_a_follower_that_declines_gets_its_broken_chain(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """The first is decided again after the refusal and commits; its follower, which
    declines to be decided again on what the first now leaves, gets `ChainBroken`."""
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    first_redecide = _sum_plus(5)
    declines = Recorder(lambda missed, version: None)
    first = _queue(store, [Deposited(5)], 1, first_redecide)
    follower = _queue(store, [Deposited(7)], 2, declines, after=first)
    with anyio.fail_after(TIMEOUT):
        ours = await first.future
        with pytest.raises(ChainBroken):
            await follower.future
    assert ours.last_version == 3
    assert declines.calls == [([], 3)]
    assert store.statistics().rejected == 1
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(15),
    ]


async def test_an_append_chained_to_one_decided_again_in_an_earlier_batch_is_broken(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """The follower was decided on what the first was first decided to leave, which
    never committed: PostgreSQL's writer does not decide it again (SQLite's does), so
    its chain breaks and its caller decides it again on the committed state."""
    store, other = two
    await _listening(store)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    theirs = await other.append("s", [Deposited(10)], expected_version=1)
    await _heard(store, theirs.last_position)
    first_redecide, follower_redecide = _sum_plus(5), _sum_plus(7)
    first = _queue(store, [Deposited(5)], 1, first_redecide)
    await anyio.lowlevel.checkpoint()  # the writer takes `first` into a batch
    assert first.batch >= 0
    follower = _queue(store, [Deposited(7)], 2, follower_redecide, after=first)
    with anyio.fail_after(TIMEOUT):
        result = await first.future
        with pytest.raises(ChainBroken):
            await follower.future
    assert first.rebased
    assert (result.first_version, result.last_version) == (3, 3)
    assert follower_redecide.calls == []
    assert [e.event for e in await store.read_stream("s")] == [
        Deposited(1),
        Deposited(10),
        Deposited(15),
    ]


async def test_a_read_that_fails_leaves_the_batch_as_it_was(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's look fails: the batch goes as it was and is refused; the append is
    then decided again from its refusal, on the events it missed read by stream."""
    store, other = two
    await _listening(store)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    theirs = await other.append("s", [Deposited(10)], expected_version=1)
    await _heard(store, theirs.last_position)

    async def unavailable(*args: object) -> None:
        raise StoreUnavailable("the server went away")

    monkeypatch.setattr(store, "_read_all", unavailable)
    redecide: Recorder = _sum_plus(5)
    item = _queue(store, [Deposited(5)], 1, redecide)
    with anyio.fail_after(TIMEOUT):
        result = await item.future
    assert redecide.calls == [([(2, Deposited(10))], 2)]
    assert (result.last_version, item.retried) == (3, 1)


async def test_what_the_follower_read_is_not_read_again(
    two: tuple[PostgresEventStore, PostgresEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bus's follower reads other processes' commits as soon as they are notified
    (`read_log`): the writer decides again on those events, and reads only what they do
    not cover."""
    store, other = two
    await _listening(store)
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    first = await other.append("s", [Deposited(10)], expected_version=1)
    await _heard(store, first.last_position)
    follower = await store.read_log(
        from_position=2,
        to_position=first.last_position,
        limit=100,
        event_types=store.registry.tags(),
    )
    assert [e.version for e in follower] == [2]
    second = await other.append("s", [Deposited(20)], expected_version=2)
    await _heard(store, second.last_position)
    read_all = store._read_all
    reads: list[tuple[int, int]] = []

    async def counted(low: int, high: int, *args: Any) -> list[RecordedEvent]:
        reads.append((low, high))
        return await read_all(low, high, *args)

    monkeypatch.setattr(store, "_read_all", counted)
    redecide = _sum_plus(5)
    with anyio.fail_after(TIMEOUT):
        result = await _queue(store, [Deposited(5)], 1, redecide).future
    assert redecide.calls == [([(2, Deposited(10)), (3, Deposited(20))], 3)]
    assert result.last_version == 4
    assert reads == [(3, 3)]  # only what the follower had not read


async def test_the_follower_reads_kept_are_bounded(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """The writer looks at most `_AHEAD_LIMIT` positions back: the follower's pages are
    kept up to that many events (and `_LOG_PAGES_KEPT` pages), the last ones."""
    from store import _postgres

    store, _other = two

    def page(first: int, last: int) -> list[RecordedEvent]:
        return [
            RecordedEvent("s", p, p, "Deposited", 1, Deposited(p), {}, 0.0)
            for p in range(first, last + 1)
        ]

    limit = _postgres._AHEAD_LIMIT
    tags = store.registry.tags()
    store._keep_log_read(page(1, 3 * limit), 3 * limit, tags)  # a long catch-up page
    position = 3 * limit
    for _ in range(_postgres._LOG_PAGES_KEPT + 5):  # short pages, and empty ones
        store._keep_log_read(page(position + 1, position + 10), position + 10, tags)
        store._keep_log_read([], position + 20, tags)
        position += 20
    kept = [e for _covered, events, _tags in store._log_reads for e in events]
    assert len(store._log_reads) <= _postgres._LOG_PAGES_KEPT
    assert store._log_kept == len(kept) <= limit
    events, after = store._from_log(position - 39, position, tags)
    assert [e.position for e in events] == [
        *range(position - 39, position - 29),
        *range(position - 19, position - 9),
    ]
    assert after == position + 1
