"""Conflicts leak nothing. An exception raised out of an append's future carries a
traceback holding the frames it passed; a frame that still held the append (which the
garbage collector does not track, and which holds the future, which holds the
exception) made a cycle the collector cannot see, so it was never freed. Under two
processes on the same accounts that was thousands of exceptions, frames and appends a
second, and the collections walking them paused the loop for tens of milliseconds."""

from __future__ import annotations

import gc
from typing import Any

import anyio

from actors import CommandResult, open_system
from demo.bank import Account, Deposit
from store import ChainedAppend, ConcurrencyError, open_store
from tests.actors.test_riders import _opened, _together
from tests.store._events import Noted

_FAILURES = ("ConcurrencyError", "ChainBroken")


def _alive() -> list[str]:
    """The append failures still alive once the collector has run."""
    gc.collect()
    return [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in _FAILURES]


async def test_conflicting_appends_and_chains_leave_nothing_alive(durable_target: str) -> None:
    async with open_store(durable_target) as store:
        store.registry.register(Noted)
        await store.append("s-1", [Noted("a")], expected_version=0)
        outcomes: list[Any] = []

        async def conflict() -> None:
            try:
                await store.append("s-1", [Noted("b")], expected_version=0)
            except ConcurrencyError:
                outcomes.append("conflict")
            chain = [ChainedAppend([Noted("c")]), ChainedAppend([Noted("d")])]
            got = await store.append_chain("s-1", chain, expected_version=0)
            outcomes.append([type(o).__name__ for o in got])

        before = _alive()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(conflict)
        assert outcomes.count("conflict") == 5
        assert outcomes.count(["ConcurrencyError", "ChainBroken"]) == 5
        del outcomes[:]
        for n in range(3):  # later batches: the writer lets go of the last one it took
            await store.append("s-2", [Noted("e")], expected_version=n)
        assert _alive() == before


async def test_riders_behind_a_conflict_leave_nothing_alive(durable_target: str) -> None:
    async with (
        open_system(durable_target, follow=False, decide_in_store=False) as a,
        open_system(durable_target, follow=False) as b,
    ):
        await _opened(a)
        before = _alive()
        for round_ in range(3):
            await b.aggregates(Account).ask("acc", Deposit("acc", 1_000))
            outcomes = await _together(a, [Deposit("acc", n) for n in range(1, 5)])
            assert all(isinstance(o, CommandResult) for o in outcomes), outcomes
            assert a.statistics().conflicts == round_ + 1
        assert a.statistics().rides >= 9
        assert _alive() == before
