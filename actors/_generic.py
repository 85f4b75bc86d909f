"""Plain actors: a name, a bounded mailbox and an async handler, one message at a time.

Aggregates are the main kind of actor; this one is for coordination (process managers,
gateways) whose handler awaits other actors. The handler runs inside `handling(name)`,
so an ask back into an actor up the chain raises `ReentrantAskError` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from actors._context import current_chain, handling
from actors._errors import AskTimeout, MailboxFull, ReentrantAskError, ShuttingDown
from actors._mailbox import Envelope, Mailbox
from store import get_logger

if TYPE_CHECKING:
    from actors._system import ActorSystem

__all__ = ["ActorRef"]

M = TypeVar("M")
R = TypeVar("R")


class ActorRef(Generic[M, R]):
    """The address of a plain actor started with `system.spawn`: `ask` and `tell`."""

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        handler: Callable[[M], Awaitable[R]],
        capacity: int,
    ) -> None:
        self.system = system
        self.name = name
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
        wait = self.system.options.ask_timeout if timeout is None else timeout
        mailbox = self._mailbox
        enqueued = mailbox.offer(envelope)
        if not enqueued:
            with anyio.move_on_after(wait):
                while not mailbox.closed:
                    await mailbox.wait_room()
                    if mailbox.offer_after_wait(envelope):
                        enqueued = True
                        break
            if not enqueued:
                self._check_open()
                raise MailboxFull(self.name, mailbox.capacity)
        handle = loop.call_later(wait, _expire, future, self.name, wait)
        try:
            return await future
        finally:
            handle.cancel()

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
        if self._mailbox.closed or not self.system._admits(current_chain()):
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
            self.system._generic_done(self)
            self.done.set()


def _expire(future: asyncio.Future[Any], name: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(name, timeout))
