"""Plain actors: a name, a bounded mailbox and an async handler, one message at a time.

Aggregates are the main kind of actor; this one is for coordination (process managers,
gateways) whose handler awaits other actors. The handler runs inside `handling(name)`,
so an ask back into an actor up the chain raises `ReentrantAskError` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

from actors._context import current_chain, handling
from actors._deadline import deliver
from actors._errors import MailboxFull, ReentrantAskError, ShuttingDown
from actors._mailbox import Envelope, Mailbox
from actors._registry import Registry
from store._logging import get_logger

__all__ = ["ActorRef", "start_plain"]

M = TypeVar("M")
R = TypeVar("R")


class ActorRef(Generic[M, R]):
    """The address of a plain actor started with `system.spawn`: `ask` and `tell`."""

    def __init__(
        self,
        registry: Registry[Any],
        name: str,
        handler: Callable[[M], Awaitable[R]],
        capacity: int,
        ask_timeout: float,
    ) -> None:
        self.name = name
        self._registry = registry
        self._ask_timeout = ask_timeout
        self._handler = handler
        self._mailbox = Mailbox(capacity)
        self._log: Any = get_logger("actors", actor=name)
        self.done = anyio.Event()
        self.handled = 0
        self.failed = 0

    async def ask(self, message: M, *, timeout: float | None = None) -> R:  # noqa: ASYNC109
        """Send `message` and wait for what the handler returns (or raises).

        Raises:
            ReentrantAskError: this actor is up the current ask chain (a self-ask or a
                cycle): waiting would deadlock.
            MailboxFull: no room within the timeout. AskTimeout: no reply in time.
            ShuttingDown: the actor is stopping.
        """
        chain = current_chain()
        if self.name in chain:
            raise ReentrantAskError(self.name, chain)
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        envelope = Envelope(message, None, future, chain)
        wait = self._ask_timeout if timeout is None else timeout
        try:
            return await deliver(self._mailbox, envelope, future, self.name, wait)
        except MailboxFull:
            if not future.done():  # no room (not the handler's own MailboxFull)
                self._check_open()  # closed while waiting for room: ShuttingDown
            raise

    def tell(self, message: M) -> None:
        """Enqueue `message` without waiting (its outcome is only logged on failure).

        Raises:
            MailboxFull: the mailbox is full. ShuttingDown: the actor is stopping.
        """
        self._check_open()
        if not self._mailbox.offer(Envelope(message, None, None, current_chain())):
            raise MailboxFull(self.name, self._mailbox.capacity)

    def stop(self) -> None:
        """Stop accepting messages; the actor handles what is queued, then ends."""
        self._mailbox.close()

    def _check_open(self) -> None:
        if self._mailbox.closed or not self._registry.admits(current_chain()):
            raise ShuttingDown(f"the actor {self.name!r} is stopping; message refused")

    async def _run(self) -> None:
        mailbox = self._mailbox
        try:
            while True:
                batch = mailbox.take(1)
                if not batch:
                    if mailbox.closed:
                        return
                    await mailbox.wait()
                    continue
                envelope = batch[0]
                if not envelope.wanted():
                    continue
                with handling(self.name, envelope.chain):
                    try:
                        result = await self._handler(envelope.command)
                    except Exception as exc:  # noqa: BLE001 - goes to the caller
                        self.failed += 1
                        if envelope.future is None:
                            self._log.warning("actor.message_failed", exc_info=exc)
                        envelope.fail(exc)
                        continue
                self.handled += 1
                envelope.reply(result)
        finally:
            mailbox.close()
            refusal = ShuttingDown(f"the actor {self.name!r} stopped; message not handled")
            for envelope in mailbox.drain():
                envelope.fail(refusal)
            self._registry.plain_done(self)
            self.done.set()


def start_plain(
    registry: Registry[Any],
    task_group: anyio.abc.TaskGroup,
    name: str,
    handler: Callable[[M], Awaitable[R]],
    capacity: int,
    ask_timeout: float,
) -> ActorRef[M, R]:
    """Create plain actor `name`, track it in `registry` and start it in `task_group`."""
    ref: ActorRef[M, R] = ActorRef(registry, name, handler, capacity, ask_timeout)
    registry.add_plain(ref)
    task_group.start_soon(ref._run)
    return ref
