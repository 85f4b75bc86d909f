"""A bounded mailbox: a deque, one waiter future for the actor, FIFO waiters for room.

This is the hottest path of the framework. An anyio memory object stream costs several
times a plain deque per message here, so the mailbox is a deque with a non-blocking
fast path (`offer`) and futures for the two kinds of waiting: the actor waiting for
work, and senders waiting for room (backpressure). Closing is a flag, not a message,
so "stop" is delivered even when the mailbox is full (control bypasses capacity).

Cancel safety: a sender cancelled while waiting for room enqueues nothing, and passes
on a wake-up it had already received so no room is lost. An envelope whose caller gave
up (cancelled, timed out) stays in the deque until the actor takes it and skips it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

import msgspec

from store import Lease

__all__ = ["Envelope", "Load", "Mailbox", "Owner"]


class Envelope(msgspec.Struct, gc=False):
    """One command on its way to an actor, with the future its caller awaits.

    Not tracked by the garbage collector (it is part of no reference cycle): the
    collector's cost grows with the objects alive, and one envelope per command in
    flight is most of them.
    """

    command: Any
    command_id: str | None
    future: asyncio.Future[Any] | None
    chain: tuple[str, ...]
    attempts: int = 0
    solo: bool = False
    fence: Lease | None = None  # a process manager's lease: its append is fenced
    # The trace context of its ask (`traceparent`), stored with its events; only while
    # tracing (see `store.telemetry`).
    metadata: dict[str, str] | None = None

    def wanted(self) -> bool:
        """Whether someone still waits for the outcome (or it was a tell)."""
        future = self.future
        return future is None or not future.done()

    def reply(self, value: Any) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_result(value)

    def fail(self, error: BaseException) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_exception(error)


class Load:
    """Envelopes queued in a set of mailboxes (the system's global bound counts them)."""

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = 0


class Owner(Protocol):
    """The actor a mailbox wakes when no task waits on it."""

    def wake(self) -> None:
        """Work arrived, or the mailbox closed: start serving it if nothing does."""


class Mailbox:
    """A bounded FIFO of envelopes for one actor.

    `load` is shared by the mailboxes of one actor system: every envelope entering or
    leaving the deque is counted there, so the system can refuse work (`Overloaded`)
    once too many commands wait across all its actors.

    When an envelope arrives or the mailbox closes, the task waiting on it (`wait`) is
    woken; with none waiting, its `owner` (an actor without a task) is told instead.
    """

    __slots__ = ("_items", "_room", "_waiter", "capacity", "closed", "load", "owner")

    def __init__(self, capacity: int, load: Load | None = None) -> None:
        self.capacity = capacity
        self.load = Load() if load is None else load
        self.owner: Owner | None = None
        self.closed = False
        self._items: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # Senders waiting for room, made by the first (most mailboxes never fill).
        self._room: deque[asyncio.Future[None]] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, envelope: Envelope) -> bool:
        """Enqueue without waiting; False when the mailbox is full (or closed)."""
        items = self._items
        if len(items) >= self.capacity or self._room or self.closed:
            # Full, or senders already wait for room: they go first (FIFO fairness).
            return False
        items.append(envelope)
        self.load.queued += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self.owner is not None:
            self.owner.wake()
        return True

    async def wait_room(self) -> None:
        """Wait until there may be room (or the mailbox closed); the caller re-offers.

        Cancellation: if a wake-up was already handed to this caller, it is passed on
        to the next waiting sender, so no slot goes unused.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        room = self._room
        if room is None:
            room = self._room = deque()
        room.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._wake_room(1)
            else:
                try:
                    room.remove(future)
                except ValueError:
                    pass
            raise

    def offer_after_wait(self, envelope: Envelope) -> bool:
        """Enqueue after `wait_room` returned (ignores other waiters, which come later)."""
        items = self._items
        if len(items) >= self.capacity or self.closed:
            return False
        items.append(envelope)
        self.load.queued += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self.owner is not None:
            self.owner.wake()
        if self._room and len(items) < self.capacity:
            self._wake_room(self.capacity - len(items))
        return True

    def take(self, limit: int) -> list[Envelope]:
        """Up to `limit` envelopes, oldest first; wakes senders waiting for room."""
        items = self._items
        if not items:
            return []
        if len(items) <= limit:
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        self.load.queued -= len(batch)
        if self._room:
            self._wake_room(self.capacity - len(items))
        return batch

    async def wait(self) -> None:
        """Wait until there is an envelope or the mailbox is closed."""
        if self._items or self.closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = future
        try:
            await future
        finally:
            if self._waiter is future:
                self._waiter = None

    async def wait_signal(self) -> None:
        """Wait for the next offer, `poke` or close, even if envelopes are queued."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = future
        try:
            await future
        finally:
            if self._waiter is future:
                self._waiter = None

    def poke(self) -> None:
        """Wake the actor if it waits (for work or for a signal)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Stop accepting: the actor drains what is queued, then stops. Senders waiting
        for room are woken (they find it closed and go elsewhere)."""
        self.closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self.owner is not None:
            self.owner.wake()
        self._wake_room(len(self._room or ()))

    def drain(self) -> list[Envelope]:
        """Remove and return everything queued (used when the actor cannot serve it)."""
        batch = list(self._items)
        self._items.clear()
        self.load.queued -= len(batch)
        self._wake_room(len(self._room or ()))
        return batch

    def requeue(self, envelopes: list[Envelope]) -> None:
        """Put taken envelopes back at the head, in order, ahead of newer ones."""
        self._items.extendleft(reversed(envelopes))
        self.load.queued += len(envelopes)

    def _wake_room(self, count: int) -> None:
        room = self._room
        while count > 0 and room:
            future = room.popleft()
            if not future.done():
                future.set_result(None)
                count -= 1
