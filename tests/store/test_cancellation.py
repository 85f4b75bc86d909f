"""Callers cancelled at random moments of a busy write load leave a consistent store."""

from __future__ import annotations

import random
from collections import Counter
from functools import partial

import anyio
import pytest
from anyio.lowlevel import checkpoint

from store import ANY, NO_STREAM, AppendResult, ConcurrencyError, SQLiteEventStore, faults
from tests.store._events import Noted
from tests.store._helpers import read_everything

STREAMS = tuple(f"busy-{n}" for n in range(6))
DEADLINES = (None, None, None, 0.0, 0.0001, 0.001, 0.005)


@pytest.mark.parametrize("seed", [7, 2026])
async def test_cancelled_callers_leave_every_acknowledged_append_and_a_working_store(
    store: SQLiteEventStore, seed: int
) -> None:
    rng = random.Random(seed)
    acknowledged: dict[str, AppendResult] = {}
    unknown: dict[str, str] = {}  # marker -> stream, for appends whose caller was cancelled
    conflicts = 0

    async def caller(task: int, rounds: int) -> None:
        nonlocal conflicts
        for n in range(rounds):
            stream_id = rng.choice(STREAMS)
            marker = f"{task}-{n}"
            with anyio.move_on_after(rng.choice(DEADLINES)) as scope:
                try:
                    unknown[marker] = stream_id
                    version = await store.stream_version(stream_id)
                    acknowledged[marker] = await store.append(
                        stream_id, [Noted(marker)], expected_version=version, command_id=marker
                    )
                    del unknown[marker]
                except ConcurrencyError:
                    conflicts += 1
                    del unknown[marker]
            if not scope.cancelled_caught:
                assert marker not in unknown

    async def cancelled_wholesale(first_task: int, after: int) -> None:
        """A group of callers whose whole scope is cancelled after `after` checkpoints."""
        async with anyio.create_task_group() as tg:
            for task in range(first_task, first_task + 8):
                tg.start_soon(caller, task, 1000)
            for _ in range(after):
                await checkpoint()
            tg.cancel_scope.cancel()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for task in range(32):
                tg.start_soon(caller, task, 12)
            for group in range(4):
                tg.start_soon(cancelled_wholesale, 100 + 10 * group, rng.randrange(5, 400))

    # An append whose caller was cancelled may still be queued for the writer: it
    # commits anyway (cancelling drops the reply, not the append). One more append,
    # queued after all of them, returns once every one of them has committed.
    barrier = await store.append("barrier", [Noted("barrier")], expected_version=ANY)
    everything = await read_everything(store)
    assert everything[-1].position == barrier.first_position
    everything = everything[:-1]
    assert [e.position for e in everything] == list(range(1, len(everything) + 1))
    markers = Counter(e.event.text for e in everything)
    assert max(markers.values()) == 1
    # Every acknowledged append is stored where its result said.
    for marker, result in acknowledged.items():
        stored = everything[result.first_position - 1]
        assert (stored.stream_id, stored.version, stored.event) == (
            result.stream_id,
            result.first_version,
            Noted(marker),
        )
    # Whatever else is stored came from a caller that was cancelled (unknown outcome).
    assert set(markers) - set(acknowledged) <= set(unknown)
    assert unknown, "no caller was cancelled: the test exercised nothing"

    # The store's view of every stream is what is stored, and it still appends.
    for stream_id in STREAMS:
        versions = [e.version for e in everything if e.stream_id == stream_id]
        assert versions == list(range(1, len(versions) + 1))
        assert await store.stream_version(stream_id) == len(versions)
        result = await store.append(stream_id, [Noted("after")], expected_version=len(versions))
        assert result.first_version == len(versions) + 1
    assert store.statistics().last_position == await store.last_position()

    # A cancelled append retried under its command id lands exactly once.
    for marker, stream_id in unknown.items():
        retry = await store.append(
            stream_id, [Noted(marker)], expected_version=ANY, command_id=marker
        )
        assert retry.duplicate == (marker in markers)
    texts = Counter(e.event.text for e in await read_everything(store))
    assert all(texts[marker] == 1 for marker in unknown)


async def test_wait_settled_returns_once_appends_of_cancelled_callers_are_settled(
    store: SQLiteEventStore,
) -> None:
    """A caller cancelled while the writer holds its append (its commit delayed here)
    leaves an outcome that a read after `wait_settled` sees whole."""
    faults.configure("after_insert_before_commit:delay:300:1")
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(store.append, expected_version=NO_STREAM), "settle", [Noted("x")]
                )
                await anyio.wait_all_tasks_blocked()  # the writer holds it
                tg.cancel_scope.cancel()
            await store.wait_settled()
            assert await store.stream_version("settle") == 1
    finally:
        faults.configure(None)
