"""Asking an actor within one deadline: room in its mailbox, then the reply.

Shared by the aggregate routers and the plain actors, written once here: the deadline
covers both phases, and a reply that does not come in time fails the caller's future
with `AskTimeout` (the command may still be applied: the actor answers nobody then).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio

from actors._errors import AskTimeout, MailboxFull
from actors._mailbox import Envelope, Mailbox

__all__ = ["deliver", "reply"]

T = TypeVar("T")


class _Expiry:
    """Fails the futures of asks still unanswered at their deadline, with one timer for
    all of a loop's asks rather than one each (a timer per ask was a tenth of the loop's
    time under load). Asks with one timeout queue in deadline order; answered ones are
    dropped from the head as new ones come, and by a sweep when a queue doubles."""

    __slots__ = ("_at", "_loop", "_queues", "_sweep_at", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, deque[tuple[float, asyncio.Future[Any], str]]] = {}
        self._sweep_at: dict[float, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, future: asyncio.Future[Any], name: str, timeout: float) -> None:
        at = self._loop.time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
            self._sweep_at[timeout] = _SWEEP_FLOOR
        while queue and queue[0][1].done():
            queue.popleft()
        queue.append((at, future, name))
        if len(queue) >= self._sweep_at[timeout]:
            # An unanswered ask at the head keeps the answered ones behind it: sweep.
            kept = deque(entry for entry in queue if not entry[1].done())
            self._queues[timeout] = kept
            self._sweep_at[timeout] = max(_SWEEP_FLOOR, 2 * len(kept))
        if at < self._at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._at = math.inf
        now = self._loop.time()
        earliest = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue:
                at, future, name = queue[0]
                if not future.done():
                    if at > now:
                        earliest = min(earliest, at)
                        break
                    future.set_exception(AskTimeout(name, timeout))
                queue.popleft()
            if not queue:
                del self._queues[timeout], self._sweep_at[timeout]
        if earliest < math.inf:
            self._arm(earliest)


_SWEEP_FLOOR: Final = 4096
_expiries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Expiry] = (
    weakref.WeakKeyDictionary()
)


def _expiry(loop: asyncio.AbstractEventLoop) -> _Expiry:
    found = _expiries.get(loop)
    if found is None:
        found = _expiries[loop] = _Expiry(loop)
    return found


async def deliver(
    mailbox: Mailbox,
    envelope: Envelope,
    future: asyncio.Future[T],
    name: str,
    wait: float,
    successor: Callable[[str, Envelope], Mailbox] | None = None,
    key: str = "",
) -> T:
    """Put `envelope` in `mailbox` (waiting for room) and wait for `future`, both within
    `wait` seconds in all.

    A mailbox that closes while the caller waits for room is given up (`MailboxFull`
    when the time is out), unless `successor(key, envelope)` gives the mailbox that
    replaces it (an aggregate's next actor); it may raise to refuse instead.

    Raises:
        MailboxFull: no room within `wait`; not enqueued.
        AskTimeout: no reply within what is left of `wait`.
    """
    loop = future.get_loop()
    if mailbox.offer(envelope):
        # The common case: queues keyed by the few timeouts in use stay in deadline order.
        _expiry(loop).add(future, name, wait)
        return await future
    started = loop.time()
    if not await _wait_for_room(mailbox, envelope, wait, successor, key):
        raise MailboxFull(name, mailbox.capacity)
    # What is left of the deadline is a time of its own: a timer of its own.
    left = max(wait - (loop.time() - started), 0.0)
    handle = loop.call_later(left, _expire, future, name, left)
    try:
        return await future
    finally:
        handle.cancel()


async def reply(future: asyncio.Future[T], name: str, wait: float) -> T:
    """Wait for `future` (an envelope already in a mailbox) within `wait` seconds.

    Raises:
        AskTimeout: no reply within `wait`.
    """
    _expiry(future.get_loop()).add(future, name, wait)
    return await future


def _expire(future: asyncio.Future[Any], name: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(name, timeout))


async def _wait_for_room(
    mailbox: Mailbox,
    envelope: Envelope,
    seconds: float,
    successor: Callable[[str, Envelope], Mailbox] | None,
    key: str,
) -> bool:
    with anyio.move_on_after(seconds):
        while True:
            if mailbox.closed:
                if successor is None:
                    return False
                mailbox = successor(key, envelope)
                if mailbox.offer(envelope):
                    return True
            await mailbox.wait_room()
            if not mailbox.closed and mailbox.offer_after_wait(envelope):
                return True
    return False
