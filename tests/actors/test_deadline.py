"""The shared expiry of waiting asks: one timer for a loop's asks, deadlines kept."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from actors import AskTimeout
from actors._deadline import _SWEEP_FLOOR, _expiry


async def test_unanswered_asks_fail_at_their_deadline_and_answered_ones_never() -> None:
    loop = asyncio.get_running_loop()
    expiry = _expiry(loop)
    assert _expiry(loop) is expiry  # one per loop
    long = loop.create_future()
    short = loop.create_future()
    answered = loop.create_future()
    expiry.add(long, "slow", 5.0)
    expiry.add(short, "late", 0.02)  # a shorter timeout than the ask before it
    expiry.add(answered, "quick", 0.01)
    answered.set_result("done")
    began = loop.time()
    with anyio.fail_after(2):
        with pytest.raises(AskTimeout, match="late"):
            await short
    assert loop.time() - began >= 0.015
    assert answered.result() == "done"
    assert not long.done()  # its deadline is seconds away
    long.cancel()


async def test_asks_answered_behind_a_waiting_one_are_swept() -> None:
    loop = asyncio.get_running_loop()
    expiry = _expiry(loop)
    stuck = loop.create_future()
    expiry.add(stuck, "stuck", 30.0)
    for _ in range(3 * _SWEEP_FLOOR):
        future = loop.create_future()
        expiry.add(future, "answered", 30.0)
        future.set_result(None)
    queue = expiry._queues[30.0]
    assert len(queue) < _SWEEP_FLOOR  # the answered ones did not pile up behind it
    assert queue[0][1] is stuck
    stuck.cancel()
