"""Mailbox bounds (BP-1), ordering under many callers (OCC-1b), ask timeouts (BP-4)."""

from __future__ import annotations

import anyio
import pytest

from actors import AskTimeout, MailboxFull, Overloaded, Rejected, open_system
from store import open_store
from tests.actors.domain import Counter, Increment, InvalidAmount, Noop
from tests.actors.support import GatedStore


async def test_a_full_mailbox_accepts_exactly_its_capacity_and_refuses_the_rest() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter, mailbox_capacity=16)
            results: list[int] = []

            async def first() -> None:
                results.append((await counters.ask("hot", Increment(by=1, tag="first"))).version)

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                with anyio.fail_after(5):
                    await gated.entered.wait()  # the actor holds "first" in its append
                accepted: list[str] = []
                refused = 0
                sent = 1000
                for i in range(sent):
                    try:
                        counters.tell("hot", Increment(by=1, tag=f"t{i}"))
                        accepted.append(f"t{i}")
                    except MailboxFull:
                        refused += 1
                # asks out of time are refused the same way: not enqueued, not dropped
                late = 0
                for _ in range(3):
                    try:
                        await counters.ask("hot", Increment(by=1), timeout=0.01)
                    except MailboxFull:
                        late += 1
                stats = system.statistics()
                assert (stats.queued, stats.max_mailbox_depth) == (16, 16)
                gated.gate.set()
            assert len(accepted) == 16
            assert len(accepted) + refused == sent
            assert late == 3
            state = await counters.state("hot")
        tags = state.tags
        assert tags == ("first", *accepted)  # FIFO
        assert state.value == 17
        assert results == [1]


async def test_ask_waits_for_room_instead_of_failing() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter, mailbox_capacity=4)
            versions: list[int] = []

            async def ask(i: int) -> None:
                versions.append((await counters.ask("b", Increment(by=1, tag=str(i)))).version)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, 0)
                await gated.entered.wait()
                for i in range(1, 41):  # ten times the capacity
                    tg.start_soon(ask, i)
                await anyio.wait_all_tasks_blocked()
                assert system.statistics().queued == 4
                gated.gate.set()
            assert sorted(versions) == list(range(1, 42))
            assert (await counters.state("b")).value == 41


async def test_an_ask_that_times_out_leaves_nothing_pending() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)
            with pytest.raises(AskTimeout) as caught:
                await counters.ask("slow", Increment(by=1), timeout=0.01)
            assert caught.value.stream_id == "counter-slow"
            timed_out = 0
            for _ in range(20):
                try:
                    await counters.ask("slow", Increment(by=1), timeout=0)
                except AskTimeout:
                    timed_out += 1
            assert timed_out == 20
            gated.gate.set()
            # the first command was taken by the actor: applied whole; the rest were
            # skipped when their callers had gone
            assert (await counters.state("slow")).value == 1
            stats = system.statistics()
            assert (stats.queued, stats.dropped_replies, stats.commands) == (0, 1, 1)


async def test_one_thousand_concurrent_callers_are_serialised_per_aggregate(
    store_path: str,
) -> None:
    acked: dict[int, list[tuple[int, int, str]]] = {}
    rejected = 0
    async with open_system(store_path, synchronous="NORMAL") as system:
        counters = system.aggregates(Counter)

        async def caller(c: int) -> None:
            nonlocal rejected
            mine = acked.setdefault(c, [])
            for j in range(3):
                by = 0 if (c + j) % 97 == 0 else 1  # some are rejected (by=0)
                try:
                    result = await counters.ask("hot", Increment(by=by, tag=f"{c}:{j}"))
                except InvalidAmount:
                    rejected += 1
                    continue
                mine.append((result.version, result.position, f"{c}:{j}"))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for c in range(1000):
                    tg.start_soon(caller, c)
        stored = await system.aggregates(Counter).history("hot")
        state = await counters.state("hot")
    successes = sum(len(v) for v in acked.values())
    assert successes + rejected == 3000
    assert rejected > 0
    assert state.value == state.count == successes == len(stored)
    by_version = {e.version: e for e in stored}
    for entries in acked.values():
        versions = [v for v, _, _ in entries]
        assert versions == sorted(versions)  # each caller's commands in its order
        for version, position, tag in entries:
            assert by_version[version].event.tag == tag
            assert by_version[version].position == position
    assert [e.version for e in stored] == list(range(1, successes + 1))


async def test_rejections_in_a_batch_do_not_disturb_the_others() -> None:
    async with open_system(":memory:") as system:
        counters = system.aggregates(Counter)
        outcomes: list[object] = []

        async def send(by: int) -> None:
            try:
                outcomes.append((await counters.ask("mix", Increment(by=by))).version)
            except Rejected as exc:
                outcomes.append(type(exc))

        async with anyio.create_task_group() as tg:
            for by in (1, 0, 1, 0, 1):
                tg.start_soon(send, by)
        assert sorted(o for o in outcomes if isinstance(o, int)) == [1, 2, 3]
        assert outcomes.count(InvalidAmount) == 2


async def test_commands_without_events_in_a_batch_answer_the_stream_position_so_far() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        gated.gate.set()
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)
            await counters.ask("n", Increment(by=1))  # version 1, position 1
            await counters.ask("o", Increment(by=1))  # another stream: position 2
            gated.gate = anyio.Event()
            gated.entered = anyio.Event()
            results: dict[str, tuple[int, int]] = {}

            async def send(name: str, command: Increment | Noop) -> None:
                result = await counters.ask("n", command, timeout=30)  # via the mailbox
                results[name] = (result.version, result.position)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "stuck", Increment(by=1))
                await gated.entered.wait()
                for name, command in (
                    ("noop1", Noop()),
                    ("inc", Increment(by=1)),
                    ("noop2", Noop()),
                ):
                    tg.start_soon(send, name, command)
                    await anyio.wait_all_tasks_blocked()
                gated.gate.set()
        assert results == {
            "stuck": (2, 3),
            "noop1": (2, 3),  # decided in a batch with "inc", answered after its commit
            "inc": (3, 4),
            "noop2": (3, 4),
        }


async def test_past_the_global_bound_commands_that_would_queue_are_refused_as_overloaded() -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store(), max_queued_commands=10) as system:
            counters = system.aggregates(Counter, mailbox_capacity=8)

            async def first(aggregate_id: str) -> None:
                await counters.ask(aggregate_id, Increment(by=1, tag="first"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(first, "a")
                with anyio.fail_after(5):
                    await gated.entered.wait()  # "a" holds its first command in the append
                accepted = refused = 0
                for i in range(8):  # "a" fills its own mailbox: 8 of the 10 allowed
                    counters.tell("a", Increment(by=1, tag=f"a{i}"))
                    accepted += 1
                assert system.statistics().queued == 8
                # "b" is busy too (a command queued behind its load), so its commands queue
                counters.tell("b", Increment(by=1, tag="b0"))
                counters.tell("b", Increment(by=1, tag="b1"))
                accepted += 2
                for i in range(5):
                    with pytest.raises(Overloaded) as caught:
                        counters.tell("b", Increment(by=1, tag=f"late{i}"))
                    refused += 1
                assert (caught.value.queued, caught.value.limit) == (10, 10)
                assert "max_queued_commands=10" in str(caught.value)
                with pytest.raises(Overloaded):
                    await counters.ask("a", Increment(by=1), timeout=1.0)
                refused += 1
                stats = system.statistics()
                assert (stats.queued, stats.overloaded) == (10, 6)
                gated.gate.set()
            # the refused were never enqueued; the accepted all applied; the bound frees up
            assert (await counters.state("a")).tags == ("first", *(f"a{i}" for i in range(8)))
            assert (await counters.state("b")).tags == ("b0", "b1")
            assert system.statistics().queued == 0
            counters.tell("b", Increment(by=1, tag="again"))
            assert (await counters.state("b")).value == 3
            assert accepted + refused == 16
