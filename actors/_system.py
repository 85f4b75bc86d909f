"""The actor system: one task group, the store, the bus, the live actors, shutdown."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.abc
import msgspec

from actors._actor import AggregateActor
from actors._aggregate import Aggregate, CommandT, EventT, StateT
from actors._errors import InvalidOption, ShuttingDown
from actors._generic import ActorRef
from actors._mailbox import Load
from actors._process import ProcessManager, ProcessManagerHandle, ProcessManagerOptions
from actors._router import AggregateRouter
from bus import EventBus, open_bus
from store import EventRegistry, EventStore, get_logger, open_store

__all__ = [
    "ActorSystem",
    "Projectable",
    "SystemOptions",
    "SystemStatistics",
    "open_system",
]

T_co = TypeVar("T_co", covariant=True)
PosArgsT = TypeVarTuple("PosArgsT")


class Projectable(Protocol[T_co]):
    """What `ActorSystem.project` needs of a projection: a way to start it.

    `start` starts the projection's tasks in `task_group`, reading `store` from
    `from_position` and following `bus`, and returns the handle the caller uses (a
    running projection). Read models implement it; actors never import them.
    """

    async def start(
        self,
        task_group: anyio.abc.TaskGroup,
        store: EventStore,
        bus: EventBus,
        *,
        from_position: int = 0,
    ) -> T_co:
        """Start the projection in `task_group` and return its running handle."""
        ...


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """Limits and tuning of an actor system; every limit is finite.

    Each option has a range, checked here (`InvalidOption` names the option and its
    range); every value in it works. Counts: `mailbox_capacity`, `max_batch`,
    `max_events_per_append`, `recent_command_ids` and `load_page_size` up to 1,000,000;
    `max_queued_commands` and `max_live_actors` up to 100,000,000; `max_attempts` and
    `max_restarts` up to 1,000; all from 1, except `max_restarts` and
    `recent_command_ids` (from 0). Seconds: `ask_timeout` from 0.001 and
    `idle_timeout` from 0, both up to a year; `restart_backoff`, `park_for`,
    `max_backoff` and `grace` from 0 to 3,600. `open_system` also keeps
    `load_page_size` and `max_events_per_append` within the store's limits.

    Attributes:
        mailbox_capacity: commands waiting per actor before `tell` raises `MailboxFull`
            and `ask` waits for room.
        max_queued_commands: commands waiting across all mailboxes of the system; past
            it, a command that would wait in a mailbox is refused at once with
            `Overloaded` (an `ask` to an idle actor runs on the caller's task and is
            not queued).
        max_batch: the most commands an actor takes from its mailbox at once.
        max_events_per_append: the most events one append of a batch carries.
        ask_timeout: the default timeout of `ask`, seconds.
        max_live_actors: live actors across the system; past it, the least recently
            used one is passivated.
        idle_timeout: seconds without a command after which an actor is passivated
            (None: only the live-actor cap passivates).
        max_attempts: tries of a command whose append conflicts with another writer
            before the caller gets `TooManyAttempts`.
        max_restarts: consecutive restarts of an actor before it is parked
            (`RestartLimitExceeded`).
        restart_backoff: the delay before the second restart in a row, seconds; it
            doubles per further consecutive restart, up to `max_backoff` (the first
            restart is immediate).
        park_for: how long an aggregate whose load failed (or that hit
            `max_restarts`) refuses commands with that error before the next command
            tries again, seconds; doubles per consecutive failure up to `max_backoff`.
        max_backoff: the longest restart delay or parking time, seconds.
        recent_command_ids: command results an actor remembers (beyond them, a resent
            command id is looked up in the store).
        load_page_size: events read per page when loading or reading history.
        grace: seconds shutdown waits for mailboxes to drain before cancelling.
    """

    mailbox_capacity: int = 1024
    max_queued_commands: int = 10_000
    max_batch: int = 512
    max_events_per_append: int = 5_000
    ask_timeout: float = 30.0
    max_live_actors: int = 100_000
    idle_timeout: float | None = 600.0
    max_attempts: int = 3
    max_restarts: int = 5
    restart_backoff: float = 0.05
    park_for: float = 0.5
    max_backoff: float = 10.0
    recent_command_ids: int = 64
    load_page_size: int = 1_000
    grace: float = 10.0

    def __post_init__(self) -> None:
        for name, (low, high) in _OPTION_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "idle_timeout":
                continue
            whole = isinstance(low, int)
            kind = int if whole else int | float
            if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidOption(name, value, low, high, none_allowed=name == "idle_timeout")


_YEAR = 365 * 24 * 3600.0
_OPTION_RANGES: dict[str, tuple[int, int] | tuple[float, float]] = {
    # Every value in these ranges works (tests/actors/test_options.py opens a system at
    # each end and runs commands through it); the upper ends keep memory and timers finite.
    "mailbox_capacity": (1, 1_000_000),
    "max_queued_commands": (1, 100_000_000),
    "max_batch": (1, 1_000_000),
    "max_events_per_append": (1, 1_000_000),
    "max_live_actors": (1, 100_000_000),
    "max_attempts": (1, 1_000),
    "max_restarts": (0, 1_000),
    "recent_command_ids": (0, 1_000_000),
    "load_page_size": (1, 1_000_000),
    "ask_timeout": (0.001, _YEAR),
    "idle_timeout": (0.0, _YEAR),
    "restart_backoff": (0.0, 3600.0),
    "park_for": (0.0, 3600.0),
    "max_backoff": (0.0, 3600.0),
    "grace": (0.0, 3600.0),
}


_SYSTEM_FIELDS = frozenset(f.name for f in dataclasses.fields(SystemOptions))


class SystemStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the actor system's counters.

    Attributes:
        live_actors: actors serving commands now.
        stopping_actors: passivated actors still draining their mailbox.
        queued: commands waiting in all mailboxes.
        max_mailbox_depth: the deepest mailbox right now.
        commands: commands answered with a result (including duplicates).
        rejections: commands refused by `decide` (`Rejected`).
        failures: commands failed by a bug in decide or evolve.
        restarts: actor restarts (evolve failures, unknown append outcomes, failed loads).
        conflicts: appends refused because another writer (another process) had moved
            the stream on; the actor reloaded and retried them.
        passivations: actors stopped for idleness or by the live-actor cap.
        snapshots: snapshots taken.
        dropped_replies: results of applied commands whose caller had gone (timed out
            or cancelled after the actor took the command): dead letters, counted.
        overloaded: commands refused with `Overloaded` (`max_queued_commands`).
        accepting: whether new commands are accepted.
    """

    live_actors: int
    stopping_actors: int
    queued: int
    max_mailbox_depth: int
    commands: int
    rejections: int
    failures: int
    restarts: int
    conflicts: int
    passivations: int
    snapshots: int
    dropped_replies: int
    overloaded: int
    accepting: bool


R = TypeVar("R")
M = TypeVar("M")


class ActorSystem:
    """Owns the actors of one store: routers, live actors, their task group, shutdown.

    Create it with `open_system`. Everything it starts runs in its task group and is
    drained or cancelled when the `open_system` block exits.
    """

    def __init__(
        self,
        store: EventStore,
        bus: EventBus,
        task_group: anyio.abc.TaskGroup,
        options: SystemOptions,
    ) -> None:
        self.store: EventStore = store
        """The event store the actors append to (the source of truth)."""
        self.bus: EventBus = bus
        """The event bus over `store`: every commit is published to its subscriptions."""
        self.options = options
        self._tg = task_group
        self._routers: dict[type[Any], AggregateRouter[Any, Any, Any]] = {}
        self._live: OrderedDict[str, AggregateActor] = OrderedDict()
        self._load = Load()  # envelopes queued across the aggregate actors' mailboxes
        self._stopping: dict[str, AggregateActor] = {}
        self._generic: dict[str, ActorRef[Any, Any]] = {}
        self._accepting = True
        self._internal = False  # shutdown's first phase: actors may still send
        self._drained = anyio.Event()
        self._log: Any = get_logger("actors.system")

    @property
    def accepting(self) -> bool:
        """Whether the system accepts new commands (False once shutdown began)."""
        return self._accepting

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The system's task group: tasks started here are cancelled at shutdown, after
        the mailboxes drained."""
        return self._tg

    def start_soon(
        self, fn: Callable[[Unpack[PosArgsT]], Coroutine[Any, Any, Any]], *args: *PosArgsT
    ) -> None:
        """Run `fn(*args)` in the system's task group (cancelled at shutdown)."""
        self._tg.start_soon(fn, *args)

    def aggregates(
        self,
        aggregate: type[Aggregate[StateT, CommandT, EventT]] | Aggregate[StateT, CommandT, EventT],
        *,
        snapshot_every: int | None = None,
        **options: Any,
    ) -> AggregateRouter[StateT, CommandT, EventT]:
        """The router of an aggregate type (a class, or an instance to use), created on
        first use; its event types are registered with the store's registry then.

        Args:
            snapshot_every: overrides the class's `snapshot_every`.
            **options: `SystemOptions` fields to override for this aggregate type
                (`mailbox_capacity`, `max_batch`, `max_attempts`...).

        Raises:
            TypeError: the aggregate declares no event types.
            ValueError: the router exists already with other options.
        """
        instance = aggregate() if isinstance(aggregate, type) else aggregate
        kind = type(instance)
        existing = self._routers.get(kind)
        if existing is not None:
            if options or (
                snapshot_every is not None and snapshot_every != existing.snapshot_every
            ):
                raise ValueError(
                    f"the router for {kind.__name__} exists already; give its options on"
                    " the first call to aggregates()"
                )
            return existing
        if not kind.event_types:
            raise TypeError(
                f"{kind.__qualname__} declares no event types: subclass Aggregate[State,"
                " Command, Event] with concrete types, or set event_types = (...)"
            )
        if any(r.category == kind.category for r in self._routers.values()):
            raise ValueError(
                f"stream category {kind.category!r} of {kind.__qualname__} is used by"
                " another aggregate type; set a distinct category"
            )
        _register(self.store.registry, kind.event_types)
        router_options = dataclasses.replace(self.options, **options) if options else self.options
        every = snapshot_every if snapshot_every is not None else kind.snapshot_every
        if every is not None and (type(every) is not int or every < 1):
            raise ValueError(f"snapshot_every must be a positive int or None, not {every!r}")
        router = AggregateRouter(self, instance, router_options, every)
        self._routers[kind] = router
        return router

    def spawn(
        self,
        name: str,
        handler: Callable[[M], Awaitable[R]],
        *,
        mailbox_capacity: int | None = None,
    ) -> ActorRef[M, R]:
        """Start a plain actor: `handler` gets its messages one at a time, on the
        actor's task, inside `handling(name)` (an ask back up the chain raises
        `ReentrantAskError`). It runs until `ref.stop()` or shutdown, which drains it.

        Raises:
            ValueError: a live actor already has this name.
            ShuttingDown: the system stopped accepting work.
        """
        if not self._accepting:
            raise ShuttingDown(f"the actor system is shutting down; {name!r} not started")
        if name in self._generic or name in self._live:
            raise ValueError(f"an actor named {name!r} is already running")
        capacity = self.options.mailbox_capacity if mailbox_capacity is None else mailbox_capacity
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"mailbox_capacity must be a positive int, not {capacity!r}")
        ref: ActorRef[M, R] = ActorRef(self, name, handler, capacity)
        self._generic[name] = ref
        self._tg.start_soon(ref._run)
        return ref

    def _generic_done(self, ref: ActorRef[Any, Any]) -> None:
        if self._generic.get(ref.name) is ref:
            del self._generic[ref.name]
        self._check_drained()

    async def project(self, projection: Projectable[R], *, from_position: int = 0) -> R:
        """Start `projection` in the system's task group, fed from `from_position`.

        Returns what `projection.start(...)` returns (the running projection).

        Event classes the projection names in its `event_types` are registered with the
        store's registry first (as `run_process_manager` does), so a projection started
        before any aggregate was used can still decode the log.
        """
        types = getattr(projection, "event_types", None) or ()
        _register(self.store.registry, tuple(tp for tp in types if isinstance(tp, type)))
        return await projection.start(self._tg, self.store, self.bus, from_position=from_position)

    async def run_process_manager(
        self, manager: ProcessManager, *, options: ProcessManagerOptions | None = None
    ) -> ProcessManagerHandle:
        """Start process manager `manager` in the system, resuming from its checkpoint.

        Returns once it is subscribed; it then handles events (and sends the commands
        they call for) until the system closes or `handle.stop()` is called.

        Raises:
            ValueError: `manager.name` is not a non-empty str.
            ShuttingDown: the system is shutting down.
        """
        name = getattr(manager, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{type(manager).__qualname__}.name must be a non-empty str: it names the"
                " checkpoint and prefixes every command id the manager sends"
            )
        if not self._accepting:
            raise ShuttingDown(f"the actor system is shutting down; {name!r} not started")
        _register(self.store.registry, manager.event_types)
        checkpoint = await self.store.load_checkpoint(f"process:{name}")
        handle = ProcessManagerHandle(self, manager, options or ProcessManagerOptions(), checkpoint)
        await self._tg.start(handle._run)
        return handle

    def statistics(self) -> SystemStatistics:
        """The system's counters now (a frozen snapshot)."""
        depths = [len(actor.mailbox) for actor in self._live.values()]
        depths.extend(len(actor.mailbox) for actor in self._stopping.values())
        routers = self._routers.values()
        return SystemStatistics(
            live_actors=len(self._live),
            stopping_actors=len(self._stopping),
            queued=sum(depths),
            max_mailbox_depth=max(depths, default=0),
            commands=sum(r.commands for r in routers),
            rejections=sum(r.rejections for r in routers),
            failures=sum(r.failures for r in routers),
            restarts=sum(r.restarts for r in routers),
            conflicts=sum(r.conflicts for r in routers),
            passivations=sum(r.passivations for r in routers),
            snapshots=sum(r.snapshots for r in routers),
            dropped_replies=sum(r.dropped_replies for r in routers),
            overloaded=sum(r.overloaded for r in routers),
            accepting=self._accepting,
        )

    # -- passivation ----------------------------------------------------------------------

    def passivate_idle(self, older_than: float | None = None) -> int:
        """Passivate every actor idle for at least `older_than` seconds (default: the
        `idle_timeout`) with an empty mailbox. Returns how many. The next command for
        one of them reloads it."""
        limit = self.options.idle_timeout if older_than is None else older_than
        if limit is None:
            return 0
        now = anyio.current_time()
        idle: list[AggregateActor] = []
        for actor in self._live.values():  # least recently used first
            if now - actor.last_used < limit:
                break
            if not len(actor.mailbox) and not actor.inline:
                idle.append(actor)
        for actor in idle:
            self._passivate(actor)
        return len(idle)

    def _passivate(self, actor: AggregateActor) -> None:
        stream_id = actor.stream_id
        if self._live.get(stream_id) is actor:
            del self._live[stream_id]
            self._stopping[stream_id] = actor
            actor.router.passivations += 1
        actor.mailbox.close()

    async def _sweep(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            self.passivate_idle()

    # -- actors -------------------------------------------------------------------------

    def _spawn(
        self,
        router: AggregateRouter[Any, Any, Any],
        aggregate_id: str,
        stream_id: str,
        now: float,
    ) -> AggregateActor:
        live = self._live
        while len(live) >= self.options.max_live_actors:
            _, oldest = next(iter(live.items()))
            self._passivate(oldest)
        predecessor = self._stopping.get(stream_id)
        actor = AggregateActor(router, aggregate_id, stream_id, predecessor, now)
        live[stream_id] = actor
        self._tg.start_soon(actor.run)
        return actor

    def _forget(self, actor: AggregateActor) -> None:
        stream_id = actor.stream_id
        if self._live.get(stream_id) is actor:
            del self._live[stream_id]
        if self._stopping.get(stream_id) is actor:
            del self._stopping[stream_id]
        self._check_drained()

    def _check_drained(self) -> None:
        if (
            not self._accepting
            and not self._internal
            and not self._live
            and not self._stopping
            and not self._generic
        ):
            self._drained.set()

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self, *, grace: float | None = None) -> bool:
        """Stop accepting commands, let every mailbox drain, then return.

        New asks and tells from outside the actors fail at once with `ShuttingDown`;
        commands already accepted are decided, committed and answered. Plain actors
        (`spawn`) drain first, and while they do, the messages their handlers send
        are still accepted; then the aggregates' mailboxes are closed and drained.
        Waits at most `grace` seconds in all (default: the system's `grace`); commands
        still queued then are refused with `ShuttingDown` when the system's tasks are
        cancelled. Returns whether everything drained in time. Called by
        `open_system` on exit.
        """
        if not self._accepting:
            with anyio.move_on_after(self.options.grace if grace is None else grace):
                await self._drained.wait()
            return self._drained.is_set()
        self._accepting = False
        self._internal = True
        with anyio.move_on_after(self.options.grace if grace is None else grace):
            if self._generic:
                for ref in list(self._generic.values()):
                    ref.stop()
                while self._generic:
                    await next(iter(self._generic.values())).done.wait()
            self._internal = False
            for actor in list(self._live.values()):
                self._passivate(actor)
            self._check_drained()
            await self._drained.wait()
        self._internal = False
        drained = self._drained.is_set()
        if not drained:
            self._log.warning(
                "system.shutdown_timeout",
                stopping=len(self._stopping) + len(self._live),
                queued=self.statistics().queued,
            )
        return drained

    def _admits(self, chain: tuple[str, ...]) -> bool:
        """Whether a message sent along ask chain `chain` is accepted now: always
        before shutdown; during the first phase of shutdown, only from actors."""
        return self._accepting or (self._internal and bool(chain))


def _register(registry: EventRegistry, types: tuple[type[Any], ...]) -> None:
    # Only the types not registered yet, at version 1: one the user registered at a
    # higher schema_version (with upcasters from older ones) keeps that version.
    registry.register(*(tp for tp in types if not registry.is_registered(tp)))


@contextlib.asynccontextmanager
async def open_system(
    store: str | os.PathLike[str] | EventStore,
    *,
    registry: EventRegistry | None = None,
    **options: Any,
) -> AsyncIterator[ActorSystem]:
    """Open an actor system on an event store: a path (opened here, and closed on exit)
    or an already open store (used, not closed).

    Args:
        store: a SQLite file path, ":memory:", or an open `EventStore`.
        registry: the event registry of a store opened here.
        **options: `SystemOptions` fields (`mailbox_capacity`, `ask_timeout`...); the
            rest go to `open_store` when it opens the store (`synchronous`...).

    It owns an event bus over the store (`system.bus`, from `bus.open_bus`). On exit
    the system stops accepting commands (`ShuttingDown`), drains every mailbox (up to
    `grace` seconds), lets the writer commit, cancels what is left in its task group
    (projections included), then closes the bus, and the store if it opened it. No
    task outlives the block.

    Raises:
        InvalidOption: an option is out of its range (`SystemOptions` lists them), or
            `load_page_size` or `max_events_per_append` is over the store's
            `max_read_limit` or `max_events_per_append`.
    """
    system_options = SystemOptions(**{k: v for k, v in options.items() if k in _SYSTEM_FIELDS})
    store_options = {k: v for k, v in options.items() if k not in _SYSTEM_FIELDS}
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(store, str | os.PathLike):
            opened: EventStore = await stack.enter_async_context(
                open_store(store, registry=registry, **store_options)
            )
        else:
            if store_options or registry is not None:
                raise TypeError(
                    f"options {sorted(store_options)} and registry apply only when"
                    " open_system opens the store from a path"
                )
            opened = store
        # The store cuts a larger page to its limit, and a load stops at the first short
        # page: the actor would serve a state missing the end of its stream.
        # Likewise an append of a batch over the store's limit would fail every time.
        for name, limit in (
            ("load_page_size", "max_read_limit"),
            ("max_events_per_append", "max_events_per_append"),
        ):
            cap = getattr(getattr(opened, "options", None), limit, None)
            value = getattr(system_options, name)
            if type(cap) is int and value > cap:
                raise InvalidOption(name, value, 1, cap, why=f"the store's {limit}")
        bus = await stack.enter_async_context(open_bus(opened))
        async with anyio.create_task_group() as tg:
            system = ActorSystem(opened, bus, tg, system_options)
            system._log.info("system.opened")
            idle = system_options.idle_timeout
            if idle is not None:
                tg.start_soon(system._sweep, max(idle / 2, 0.05))
            body_error: BaseException | None = None
            try:
                yield system
            except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
                # The caller's own error comes out as itself, not in an ExceptionGroup.
                body_error = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await system.shutdown()
                tg.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
        system._log.info("system.closed", **msgspec.structs.asdict(system.statistics()))
