"""Chained appends (`append_chain`): each append of a chain commits only if the one
before it committed as a fresh append, and the whole chain takes one commit, on every
backend."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.abc
import pytest

from store import (
    ANY,
    NO_STREAM,
    AppendResult,
    ChainBroken,
    ChainedAppend,
    ChainOutcome,
    ConcurrencyError,
    InvalidAppend,
    RecordedEvent,
    SQLiteEventStore,
    open_store,
)
from store._options import Writer
from tests.store._events import Deposited, Noted, Opened, make_registry
from tests.store._helpers import writer_held


def _kinds(outcomes: Sequence[ChainOutcome]) -> list[str]:
    return [
        ("duplicate" if o.duplicate else "committed")
        if isinstance(o, AppendResult)
        else type(o).__name__
        for o in outcomes
    ]


async def test_a_chain_commits_in_order_each_with_its_command_id(store: SQLiteEventStore) -> None:
    batches: list[Sequence[RecordedEvent]] = []
    store.add_commit_listener(batches.append)
    outcomes = await store.append_chain(
        "s",
        [
            ChainedAppend([Opened("ada")], command_id="c1", metadata={"k": "1"}),
            ChainedAppend([Deposited(1), Deposited(2)], command_id="c2"),
            ChainedAppend([Noted("n")]),
        ],
        expected_version=NO_STREAM,
    )
    assert outcomes == [
        AppendResult("s", 1, 1, 1, 1),
        AppendResult("s", 2, 3, 2, 3),
        AppendResult("s", 4, 4, 4, 4),
    ]
    stored = await store.read_stream("s")
    assert [(e.version, e.command_id) for e in stored] == [
        (1, "c1"),
        (2, "c2"),
        (3, "c2"),
        (4, None),
    ]
    assert stored[0].metadata == {"k": "1"}
    assert stored[1].metadata == {}
    assert len(batches) == 1  # one commit for the whole chain


async def test_a_refused_append_breaks_the_rest_even_where_the_versions_line_up(
    store: SQLiteEventStore,
) -> None:
    """Another writer appended one event: the chain's first append (of one event,
    expecting none) conflicts, and the second expects exactly the version the other
    writer reached. It must not commit there: it was decided on the first's effect."""
    await store.append("s", [Noted("other")], expected_version=ANY)
    outcomes = await store.append_chain(
        "s",
        [
            ChainedAppend([Opened("ada")], command_id="c1"),
            ChainedAppend([Deposited(5)], command_id="c2"),
            ChainedAppend([Deposited(6)]),
        ],
        expected_version=NO_STREAM,
    )
    assert _kinds(outcomes) == ["ConcurrencyError", "ChainBroken", "ChainBroken"]
    first, second = outcomes[0], outcomes[1]
    assert isinstance(first, ConcurrencyError)
    assert first.actual == 1
    assert isinstance(second, ChainBroken)
    assert second.expected == 1
    assert "'s'" in str(second)
    assert "chain" in str(second)
    assert [e.event for e in await store.read_stream("s")] == [Noted("other")]


async def test_in_one_batch_an_append_queued_before_the_chain_breaks_it(
    store: SQLiteEventStore,
) -> None:
    """The other writer's append and the chain wait in one queue: the batch commits the
    other append, refuses the chain's first and must refuse the second too."""
    outcomes: list[ChainOutcome] = []

    async def chain() -> None:
        outcomes.extend(
            await store.append_chain(
                "s",
                [ChainedAppend([Opened("ada")]), ChainedAppend([Deposited(5)])],
                expected_version=NO_STREAM,
            )
        )

    async def other() -> None:
        await store.append("s", [Noted("other")], expected_version=ANY)

    async with anyio.create_task_group() as tg, writer_held(store):
        tg.start_soon(other)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(chain)
        await anyio.wait_all_tasks_blocked()
    assert _kinds(outcomes) == ["ConcurrencyError", "ChainBroken"]
    assert [e.event for e in await store.read_stream("s")] == [Noted("other")]


async def test_a_duplicate_in_the_chain_stops_it_after_what_committed(
    store: SQLiteEventStore,
) -> None:
    await store.append("s", [Deposited(2)], expected_version=NO_STREAM, command_id="c2")
    outcomes = await store.append_chain(
        "s",
        [
            ChainedAppend([Deposited(1)], command_id="c1"),
            ChainedAppend([Deposited(2)], command_id="c2"),
            ChainedAppend([Deposited(3)], command_id="c3"),
        ],
        expected_version=1,
    )
    assert _kinds(outcomes) == ["committed", "duplicate", "ChainBroken"]
    assert [e.event for e in await store.read_stream("s")] == [Deposited(2), Deposited(1)]


async def test_a_bad_append_in_the_chain_gets_its_error_and_breaks_the_rest(
    store: SQLiteEventStore,
) -> None:
    outcomes = await store.append_chain(
        "s",
        [ChainedAppend([Deposited(1)]), ChainedAppend([]), ChainedAppend([Deposited(3)])],
        expected_version=NO_STREAM,
    )
    assert _kinds(outcomes) == ["committed", "InvalidAppend", "ChainBroken"]
    assert isinstance(outcomes[1], InvalidAppend)
    assert "'s'" in str(outcomes[1])
    assert [e.event for e in await store.read_stream("s")] == [Deposited(1)]


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_chain_across_batches_waits_for_each_batch(
    tmp_path: object, writer: Writer
) -> None:
    """One event per batch: each append of the chain goes in a batch after its
    predecessor's (the writer process has two in flight: the next waits for the
    answer); a conflict at the start breaks every later one, batch after batch."""
    path = f"{tmp_path}/chain.db"
    async with open_store(
        path, registry=make_registry(), writer=writer, max_batch_events=1
    ) as store:
        good = await store.append_chain(
            "a", [ChainedAppend([Deposited(n)]) for n in range(5)], expected_version=NO_STREAM
        )
        assert [o.last_version for o in good if isinstance(o, AppendResult)] == [1, 2, 3, 4, 5]
        assert store.statistics().batches == 5
        bad = await store.append_chain(
            "a", [ChainedAppend([Deposited(n)]) for n in range(3)], expected_version=4
        )
        assert _kinds(bad) == ["ConcurrencyError", "ChainBroken", "ChainBroken"]
        assert await store.stream_version("a") == 5


async def test_a_chain_cancelled_before_the_writer_took_it_writes_nothing(
    store: SQLiteEventStore,
) -> None:
    """Cancelled while its appends still wait in the queue, the chain is withdrawn
    whole: the writer takes none of it, and an append queued after it commits."""
    done: list[str] = []

    async def chain(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await store.append_chain(
                "s",
                [ChainedAppend([Opened("ada")]), ChainedAppend([Deposited(5)])],
                expected_version=NO_STREAM,
            )
            done.append("chain")

    async def later() -> None:
        await store.append("t", [Noted("after")], expected_version=NO_STREAM)
        done.append("later")

    async with anyio.create_task_group() as tg, writer_held(store):
        scope = await tg.start(chain)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        tg.start_soon(later)
        await anyio.wait_all_tasks_blocked()
    assert done == ["later"]
    assert await store.stream_version("s") == 0
    assert await store.stream_version("t") == 1
