"""An append another connection passed, decided again in the writer's transaction
(`queue_append(..., redecide)`, SQLite's thread writer).

Two stores on one file stand for two processes: `other` appends, and `store`, whose
append expected an older version, gets the events it missed inside its transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from store import (
    NO_STREAM,
    AppendResult,
    ChainBroken,
    ConcurrencyError,
    RecordedEvent,
    SQLiteEventStore,
    open_store,
)
from store._batch import _Append
from store._groupcommit import GroupCommitStore
from tests.store._events import Deposited, Noted, Unregistered, make_registry


class Recorder:
    """A `Redecision` that records its calls and answers with `answer(missed, version)`."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[list[tuple[int, object]], int]] = []

    def __call__(self, missed: list[RecordedEvent], version: int) -> Sequence[Any] | None:
        self.calls.append(([(r.version, r.event) for r in missed], version))
        result: Sequence[Any] | None = self.answer(missed, version)
        return result


def _sum_plus(amount: int) -> Recorder:
    """Decides a deposit of `amount` plus every deposit it missed."""
    return Recorder(lambda missed, _v: [Deposited(amount + sum(r.event.amount for r in missed))])


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[SQLiteEventStore, SQLiteEventStore]]:
    path = str(tmp_path / "events.db")
    async with (
        open_store(path, registry=make_registry()) as store,
        open_store(path, registry=make_registry()) as other,
    ):
        yield store, other


def _queue(
    store: GroupCommitStore,
    events: Sequence[Any],
    expected: int,
    redecide: Any,
    after: _Append | None = None,
) -> _Append:
    item = store.queue_append("s", events, expected, None, after, redecide)
    assert item is not None
    return item


async def test_the_missed_events_decide_the_append_again(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    store, other = two
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10), Deposited(20)], expected_version=1)
    seen: list[RecordedEvent] = []
    store.add_commit_listener(lambda events: seen.extend(events))
    redecide = _sum_plus(5)
    result = await _queue(store, [Deposited(5)], 1, redecide).future
    assert redecide.calls == [([(2, Deposited(10)), (3, Deposited(20))], 3)]
    assert (result.first_version, result.last_version) == (4, 4)
    assert not result.duplicate
    stored = await store.read_stream("s")
    assert [e.event for e in stored] == [Deposited(1), Deposited(10), Deposited(20), Deposited(35)]
    assert [(e.version, e.event) for e in seen] == [(4, Deposited(35))]  # the new events


async def test_an_append_decided_again_to_the_same_events_commits_them(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    """Deciding again gave the events it was first decided with (a deposit after
    another deposit): they commit on the new version, as they were encoded."""
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    redecide = Recorder(lambda missed, version: (Deposited(5),))
    result = await _queue(store, [Deposited(5)], NO_STREAM, redecide).future
    assert redecide.calls == [([(1, Deposited(10))], 1)]
    assert (result.first_version, result.last_version) == (2, 2)
    stored = await store.read_stream("s")
    assert [(e.version, e.event) for e in stored] == [(1, Deposited(10)), (2, Deposited(5))]


async def test_the_events_handed_on_are_the_ones_decided_again_on_without_a_read(
    two: tuple[SQLiteEventStore, SQLiteEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While something takes the other processes' commits (a system's bus), the writer
    decodes them once, hands them on and keeps them: an append that missed them is
    decided again on those, without reading them again. Without a taker it reads their
    versions only, and the redecision reads what it missed."""
    import store._sqlite_batch as batch

    store, other = two
    handed: list[tuple[int, int, list[int]]] = []
    remove = store.add_foreign_listener(
        lambda first, last, events: handed.append((first, last, [e.version for e in events]))
    )
    read_missed = batch._READ_MISSED
    monkeypatch.setattr(batch, "_READ_MISSED", "SELECT * FROM no_such_table")
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10), Deposited(20)], expected_version=1)
    redecide = _sum_plus(5)
    result = await _queue(store, [Deposited(5)], 1, redecide).future
    assert redecide.calls == [([(2, Deposited(10)), (3, Deposited(20))], 3)]
    assert result.last_version == 4
    await anyio.wait_all_tasks_blocked()  # the loop ran what the writer handed over
    assert handed == [(2, 3, [2, 3])]

    remove()
    monkeypatch.setattr(batch, "_READ_MISSED", read_missed)
    await other.append("s", [Deposited(30)], expected_version=4)
    redecide = _sum_plus(1)
    result = await _queue(store, [Deposited(1)], 4, redecide).future
    assert redecide.calls == [([(5, Deposited(30))], 5)]
    assert result.last_version == 6
    await anyio.wait_all_tasks_blocked()
    assert handed == [(2, 3, [2, 3])]  # nothing more handed on


async def test_the_commits_of_others_are_read_before_the_lock_and_the_rest_under_it(
    two: tuple[SQLiteEventStore, SQLiteEventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reads what the others committed before taking the write lock, and
    under the lock what they committed in between: both are handed on, in order and
    once each. The append is decided again before the lock on the first, and under it
    on the rest, going on from where it was."""
    store, other = two
    handed: list[tuple[int, int, list[int]]] = []
    store.add_foreign_listener(
        lambda first, last, events: handed.append((first, last, [e.version for e in events]))
    )
    await store.append("s", [Deposited(1)], expected_version=NO_STREAM)
    await other.append("s", [Deposited(10)], expected_version=1)
    loop = asyncio.get_running_loop()
    writer = store._batch
    begin = writer._begin
    meanwhile: list[AppendResult] = []
    decided_before_the_lock: list[object] = []
    missed_so_far: list[int] = []

    def decide(missed: list[RecordedEvent], version: int) -> list[Deposited]:
        # As a `Redecision` does: it goes on from the state it reached.
        missed_so_far.extend(r.event.amount for r in missed)
        return [Deposited(5 + sum(missed_so_far))]

    redecide = Recorder(decide)

    def begin_after_another_commit(conn: Any) -> None:
        # On the writer's thread, after its first look and before the lock: the other
        # store commits (its own writer thread, through the loop, which is free).
        if not meanwhile:
            decided_before_the_lock.extend(redecide.calls)
            appended = asyncio.run_coroutine_threadsafe(
                other.append("s", [Deposited(20)], expected_version=2), loop
            )
            meanwhile.append(appended.result(timeout=10))
        begin(conn)

    monkeypatch.setattr(writer, "_begin", begin_after_another_commit)
    result = await _queue(store, [Deposited(5)], 1, redecide).future
    assert meanwhile[0].last_version == 3
    assert decided_before_the_lock == [([(2, Deposited(10))], 2)]
    assert redecide.calls == [([(2, Deposited(10))], 2), ([(3, Deposited(20))], 3)]
    assert (result.first_version, result.last_version) == (4, 4)
    await anyio.wait_all_tasks_blocked()
    assert handed == [(2, 2, [2]), (3, 3, [3])]  # before the lock, then under it
    stored = await store.read_stream("s")
    assert [e.event for e in stored] == [Deposited(1), Deposited(10), Deposited(20), Deposited(35)]


async def test_an_append_still_on_the_latest_version_is_not_decided_again(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    store, _other = two
    redecide = _sum_plus(5)
    result = await _queue(store, [Deposited(5)], NO_STREAM, redecide).future
    assert result.first_version == 1
    assert redecide.calls == []


@pytest.mark.parametrize(
    "answer",
    [
        lambda missed, version: None,  # it declines (the command is refused there)
        lambda missed, version: [],  # it writes nothing there
        lambda missed, version: 1 / 0,  # domain code failed
        lambda missed, version: [Unregistered(1)],  # an event the store refuses
    ],
    ids=["declined", "no events", "raised", "unregistered"],
)
async def test_an_append_not_decided_again_is_refused_as_before(
    two: tuple[SQLiteEventStore, SQLiteEventStore], answer: Any
) -> None:
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    redecide = Recorder(answer)
    with pytest.raises(ConcurrencyError) as caught:
        await _queue(store, [Deposited(5)], NO_STREAM, redecide).future
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("s", 0, 1)
    assert len(redecide.calls) == 1
    assert [e.event for e in await store.read_stream("s")] == [Deposited(10)]


async def test_an_append_chained_to_one_decided_again_is_decided_on_what_it_left(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    """Both in one batch: the chained one gets no missed events and the version the
    first one's new events end at."""
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    first = _sum_plus(1)
    second = Recorder(lambda missed, version: [Noted(f"after {version}")])
    lead = _queue(store, [Deposited(1), Deposited(1)], NO_STREAM, first)
    rider = _queue(store, [Noted("after 2")], 2, second, after=lead)
    assert (await lead.future).last_version == 2
    assert (await rider.future).first_version == 3
    assert second.calls == [([], 2)]
    stored = [e.event for e in await store.read_stream("s")]
    assert stored == [Deposited(10), Deposited(11), Noted("after 2")]


async def test_a_chained_append_whose_versions_line_up_by_chance_is_not_taken_as_decided(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    """The first append decided two events on version 0; another process wrote one,
    and deciding again gave one: the stream is at 2, which the chained append expects,
    but it was decided on a state that never committed. Without a redecision of its
    own it is broken, not committed."""
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    lead = _queue(store, [Deposited(1), Deposited(1)], NO_STREAM, _sum_plus(1))
    rider = _queue(store, [Noted("decided on 2")], 2, None, after=lead)
    assert (await lead.future).last_version == 2
    with pytest.raises(ChainBroken):
        await rider.future
    assert await store.stream_version("s") == 2


async def test_an_append_chained_across_batches_to_one_decided_again_is_decided_again(
    two: tuple[SQLiteEventStore, SQLiteEventStore],
) -> None:
    """Its predecessor committed, decided again, in an earlier batch: what the chained
    append was decided on never committed. It is decided again on the version the
    predecessor ended at, with the events appended since (here another process's)."""
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    lead = _queue(store, [Deposited(1)], NO_STREAM, _sum_plus(1))
    result: AppendResult = await lead.future
    assert (result.first_version, result.last_version) == (2, 2)
    await other.append("s", [Deposited(100)], expected_version=2)
    rider_redecide = _sum_plus(1)
    rider = _queue(store, [Deposited(1)], 1, rider_redecide, after=lead)
    rode = await rider.future
    assert rider_redecide.calls == [([(3, Deposited(100))], 3)]
    assert (rode.first_version, rode.last_version) == (4, 4)
    stored = [e.event for e in await store.read_stream("s")]
    assert stored == [Deposited(10), Deposited(11), Deposited(100), Deposited(101)]


@pytest.mark.parametrize("redecide", [None, Recorder(lambda missed, version: None)])
async def test_an_append_chained_across_batches_not_decided_again_is_broken(
    two: tuple[SQLiteEventStore, SQLiteEventStore], redecide: Any
) -> None:
    """Even when the versions line up: the predecessor decided again wrote as many
    events as it was first decided with."""
    store, other = two
    await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
    lead = _queue(store, [Deposited(1)], NO_STREAM, _sum_plus(1))
    assert (await lead.future).last_version == 2
    rider = _queue(store, [Deposited(1)], 2, redecide, after=lead)
    with pytest.raises(ChainBroken):
        await rider.future
    assert await store.stream_version("s") == 2


async def test_the_process_writer_refuses_as_before(tmp_path: Path) -> None:
    """Domain code cannot run in the writer process: the append conflicts."""
    path = str(tmp_path / "events.db")
    async with (
        open_store(path, registry=make_registry(), writer="process") as store,
        open_store(path, registry=make_registry()) as other,
    ):
        await other.append("s", [Deposited(10)], expected_version=NO_STREAM)
        redecide = _sum_plus(5)
        item = store.queue_append("s", [Deposited(5)], NO_STREAM, None, None, redecide)
        assert item is not None
        with pytest.raises(ConcurrencyError):
            await item.future
        assert redecide.calls == []
