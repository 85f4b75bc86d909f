"""Asking an actor within one deadline: room in its mailbox, then the reply.

Shared by the aggregate routers and the plain actors, written once here: the deadline
covers both phases, and a reply that does not come in time fails the caller's future
with `AskTimeout` (the command may still be applied: the actor answers nobody then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from actors._errors import AskTimeout, MailboxFull
from actors._mailbox import Envelope, Mailbox

__all__ = ["deliver", "expire"]

T = TypeVar("T")


def expire(future: asyncio.Future[Any], name: str, timeout: float) -> None:
    """Fail `future` with `AskTimeout` unless it was answered (a timer's callback)."""
    if not future.done():
        future.set_exception(AskTimeout(name, timeout))


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
    if not mailbox.offer(envelope):
        started = loop.time()
        if not await _wait_for_room(mailbox, envelope, wait, successor, key):
            raise MailboxFull(name, mailbox.capacity)
        wait = max(wait - (loop.time() - started), 0.0)
    handle = loop.call_later(wait, expire, future, name, wait)
    try:
        return await future
    finally:
        handle.cancel()


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
