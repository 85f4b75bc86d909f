"""The live actors of a system: admission, the live-actor cap (LRU), passivation, drain.

One registry per `ActorSystem`, shared by its routers. It alone writes the tables of
live and stopping actors, the admission flags and the passivation count; routers ask
it for an actor (`touch`) and hand it the ones they create (`admit`); actors tell it
when they end (`forget`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.abc

from actors._mailbox import Load, Mailbox

__all__ = ["LiveActor", "PlainActor", "Registry"]


class LiveActor(Protocol):
    """What the registry needs of an aggregate actor."""

    stream_id: str
    mailbox: Mailbox
    inline: bool
    last_used: float

    async def run(self) -> None:
        """The actor's task: serve until idle, or until its mailbox is closed and drained."""
        ...


class PlainActor(Protocol):
    """What the registry needs of a plain actor (`system.spawn`)."""

    @property
    def name(self) -> str:
        """The actor's unique name."""
        ...

    @property
    def done(self) -> anyio.Event:
        """Set when the actor's task ended."""
        ...

    def stop(self) -> None:
        """Stop accepting messages; handle what is queued, then end."""
        ...


A = TypeVar("A", bound=LiveActor)


class Registry(Generic[A]):
    """The live and stopping actors of a system, and whether it admits messages."""

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        max_live_actors: int,
        max_queued: int,
        max_idle_tasks: int,
    ) -> None:
        self.accepting = True
        """False once shutdown began (read on every command: a plain attribute)."""
        self.live: OrderedDict[str, A] = OrderedDict()  # least recently used first
        self.stopping: dict[str, A] = {}  # passivated, draining their mailbox
        self.plain: dict[str, PlainActor] = {}
        self.load = Load()  # envelopes queued across the aggregate actors' mailboxes
        self.max_queued = max_queued  # past it, commands that would queue are refused
        self.passivations = 0
        self.tasks = 0  # aggregate actor tasks running or waiting
        self.idle_tasks = 0  # aggregate actor tasks waiting for their next command
        self.max_idle_tasks = max_idle_tasks  # past it, an idle actor ends its task
        self._tg = task_group
        self._max_live = max_live_actors
        self._clock = asyncio.get_running_loop().time
        self._internal = False  # shutdown's first phase: actors may still send
        self._drained = anyio.Event()

    # -- admission ------------------------------------------------------------------------

    def admits(self, chain: tuple[str, ...]) -> bool:
        """Whether a message sent along ask chain `chain` is accepted now: always
        before shutdown; during the first phase of shutdown, only from actors."""
        return self.accepting or (self._internal and bool(chain))

    def taken(self, name: str) -> bool:
        """Whether a live actor (plain or aggregate) has this name."""
        return name in self.plain or name in self.live

    # -- aggregate actors -----------------------------------------------------------------

    def touch(self, stream_id: str) -> A | None:
        """The live actor of `stream_id`, marked most recently used; None if none."""
        actor = self.live.get(stream_id)
        if actor is not None:
            self.live.move_to_end(stream_id)
            actor.last_used = self._clock()
        return actor

    def predecessor(self, stream_id: str) -> A | None:
        """The passivated actor of `stream_id` still draining (its successor waits)."""
        return self.stopping.get(stream_id)

    def admit(self, actor: A) -> A:
        """Make `actor` the live actor of its stream, passivating the least recently
        used ones past the live-actor cap. It has no task yet: its first command runs
        inline on the caller's task, or starts one (`start`)."""
        live = self.live
        while len(live) >= self._max_live:
            self.passivate(next(iter(live.values())))
        actor.last_used = self._clock()
        live[actor.stream_id] = actor
        return actor

    def start(self, actor: A) -> None:
        """Start `actor`'s task in the system's task group (it calls `task_ended`)."""
        self.tasks += 1
        self._tg.start_soon(actor.run)

    def task_ended(self) -> None:
        """An aggregate actor's task ended (idle, or with the actor)."""
        self.tasks -= 1

    def idle_slot(self) -> bool:
        """Whether an actor task may wait for its next command (fewer than
        `max_idle_tasks` do); if so, it counts until `idle_done`."""
        if self.idle_tasks < self.max_idle_tasks:
            self.idle_tasks += 1
            return True
        return False

    def idle_done(self) -> None:
        """An actor task that took an idle slot stopped waiting."""
        self.idle_tasks -= 1

    def passivate(self, actor: A) -> None:
        """Close `actor`'s mailbox: it serves what is queued, then ends."""
        stream_id = actor.stream_id
        if self.live.get(stream_id) is actor:
            del self.live[stream_id]
            self.stopping[stream_id] = actor
            self.passivations += 1
        actor.mailbox.close()

    def passivate_idle(self, older_than: float) -> int:
        """Passivate every actor idle for `older_than` seconds with an empty mailbox."""
        now = self._clock()
        idle: list[A] = []
        for actor in self.live.values():  # least recently used first
            if now - actor.last_used < older_than:
                break
            if not len(actor.mailbox) and not actor.inline:
                idle.append(actor)
        for actor in idle:
            self.passivate(actor)
        return len(idle)

    def forget(self, actor: A) -> None:
        """`actor` ended: drop it from the tables."""
        stream_id = actor.stream_id
        if self.live.get(stream_id) is actor:
            del self.live[stream_id]
        if self.stopping.get(stream_id) is actor:
            del self.stopping[stream_id]
        self._check_drained()

    def mailbox_depths(self) -> list[int]:
        """The depth of every aggregate actor's mailbox, live or stopping."""
        depths = [len(actor.mailbox) for actor in self.live.values()]
        depths.extend(len(actor.mailbox) for actor in self.stopping.values())
        return depths

    # -- plain actors ---------------------------------------------------------------------

    def add_plain(self, actor: PlainActor) -> None:
        """Track a plain actor (its name is taken until it ends)."""
        self.plain[actor.name] = actor

    def plain_done(self, actor: PlainActor) -> None:
        """A plain actor's task ended."""
        if self.plain.get(actor.name) is actor:
            del self.plain[actor.name]
        self._check_drained()

    # -- shutdown -------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> bool:
        """Stop admitting, drain the plain actors, then the aggregate actors, within
        `grace` seconds; returns whether all ended (see `ActorSystem.shutdown`)."""
        if not self.accepting:
            with anyio.move_on_after(grace):
                await self._drained.wait()
            return self._drained.is_set()
        self.accepting = False
        self._internal = True
        with anyio.move_on_after(grace):
            if self.plain:
                for plain in list(self.plain.values()):
                    plain.stop()
                while self.plain:
                    await next(iter(self.plain.values())).done.wait()
            self._internal = False
            for actor in list(self.live.values()):
                self.passivate(actor)
            self._check_drained()
            await self._drained.wait()
        self._internal = False
        return self._drained.is_set()

    def _check_drained(self) -> None:
        if (
            not self.accepting
            and not self._internal
            and not self.live
            and not self.stopping
            and not self.plain
        ):
            self._drained.set()
