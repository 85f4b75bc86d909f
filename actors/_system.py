"""The actor system: one task group, the store, the bus, the live actors, shutdown."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.abc
import msgspec

from actors._actor import AggregateActor
from actors._aggregate import Aggregate, CommandT, EventT, StateT
from actors._dispatch import StepRefused
from actors._errors import InvalidOption, ShuttingDown
from actors._gc import raised_gc_threshold
from actors._options import (
    AGGREGATE_FIELDS,
    STORE_KEYS,
    SYSTEM_FIELDS,
    AggregateSettings,
    OpenSystemSettings,
    SystemOptions,
    in_range,
    merge_options,
)
from actors._plain import ActorRef, start_plain
from actors._process_manager import (
    ProcessManager,
    ProcessManagerHandle,
    ProcessManagerOptions,
    start_process,
)
from actors._registry import Registry
from actors._router import AggregateRouter
from actors._telemetry import watch_system
from bus import EventBus, open_bus
from store import EventRegistry, EventStore, RecordedEvent, open_store, telemetry
from store._logging import get_logger

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


class SystemStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the actor system's counters.

    Attributes:
        live_actors: actors serving commands now.
        stopping_actors: passivated actors still draining their mailbox.
        actor_tasks: aggregate actors with a task of their own now: working, or waiting
            for their next command (at most `idle_actor_tasks` of them waiting); the
            other live actors have none until a command needs one.
        queued: commands waiting in all mailboxes.
        max_mailbox_depth: the deepest mailbox right now.
        commands: commands answered with a result (including duplicates).
        rejections: commands refused by `decide` (`Rejected`).
        failures: commands failed by a bug in decide or evolve.
        restarts: actor restarts (evolve failures, unknown append outcomes, failed loads).
        conflicts: appends refused because a concurrent append (another process's) had
            moved the stream on; the actor reloaded and retried them.
        redecisions: appends a concurrent append had passed that the store decided
            again, on the events they missed (`decide_in_store`), rather than refusing
            them: no conflict, no reload.
        rides: commands that reached an actor while callers ran it with an append in
            flight, and were decided on the state that append leaves and chained to
            it, rather than queued behind it.
        passivations: actors stopped for idleness or by the live-actor cap.
        snapshots: snapshots taken.
        dropped_replies: results of applied commands whose caller had gone (timed out
            or cancelled after the actor took the command): dead letters, counted.
        overloaded: commands refused with `Overloaded` (`max_queued_commands`).
        accepting: whether new commands are accepted.
    """

    live_actors: int
    stopping_actors: int
    actor_tasks: int
    queued: int
    max_mailbox_depth: int
    commands: int
    rejections: int
    failures: int
    restarts: int
    conflicts: int
    redecisions: int
    rides: int
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
        self._registry: Registry[AggregateActor] = Registry(
            task_group,
            options.max_live_actors,
            options.max_queued_commands,
            options.idle_actor_tasks,
        )
        self._log: Any = get_logger("actors.system")
        # Process managers record refused steps in the log: every system reads them.
        _register(store.registry, (StepRefused,))

    @property
    def accepting(self) -> bool:
        """Whether the system accepts new commands (False once shutdown began)."""
        return self._registry.accepting

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
        **settings: Unpack[AggregateSettings],
    ) -> AggregateRouter[StateT, CommandT, EventT]:
        """The router of an aggregate type (a class, or an instance to use), created on
        first use; its event types are registered with the store's registry then.

        Args:
            snapshot_every: overrides the class's `snapshot_every`.
            **settings: `SystemOptions` fields to set apart for this aggregate type
                (`AggregateSettings` lists them: `mailbox_capacity`, `max_batch`,
                `max_attempts`...); the others are the whole system's.

        Raises:
            TypeError: the aggregate declares no event types.
            InvalidOption: an unknown or system-wide option, or a value out of range.
            ValueError: the router exists already with other options.
        """
        instance = aggregate() if isinstance(aggregate, type) else aggregate
        kind = type(instance)
        existing = self._routers.get(kind)
        if existing is not None:
            if settings or (
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
        router_options = merge_options(
            self.options,
            settings,
            AGGREGATE_FIELDS,
            where=f"aggregates({kind.__name__}): ",
            elsewhere=" (the others are the whole system's: give them to open_system)",
        )
        every = snapshot_every if snapshot_every is not None else kind.snapshot_every
        if every is not None and (type(every) is not int or every < 1):
            raise InvalidOption("snapshot_every", every, "a positive int or None")
        _register(self.store.registry, kind.event_types)
        router = AggregateRouter(self._registry, self.store, instance, router_options, every)
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
            InvalidOption: `mailbox_capacity` is not a positive int.
            ShuttingDown: the system stopped accepting work.
        """
        registry = self._registry
        if not registry.accepting:
            raise ShuttingDown(f"the actor system is shutting down; {name!r} not started")
        if registry.taken(name):
            raise ValueError(f"an actor named {name!r} is already running")
        capacity = self.options.mailbox_capacity if mailbox_capacity is None else mailbox_capacity
        if type(capacity) is not int or capacity < 1:
            raise InvalidOption("mailbox_capacity", capacity, "a positive int")
        return start_plain(registry, self._tg, name, handler, capacity, self.options.ask_timeout)

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
        if not self._registry.accepting:
            raise ShuttingDown(f"the actor system is shutting down; {name!r} not started")
        _register(self.store.registry, manager.event_types)
        checkpoint = await self.store.load_checkpoint(f"process:{name}")
        return await start_process(
            self._tg, self, manager, options or ProcessManagerOptions(), checkpoint
        )

    def statistics(self) -> SystemStatistics:
        """The system's counters now (a frozen snapshot)."""
        registry = self._registry
        depths = registry.mailbox_depths()
        hosts = [r.host for r in self._routers.values()]
        return SystemStatistics(
            live_actors=len(registry.live),
            stopping_actors=len(registry.stopping),
            actor_tasks=registry.tasks,
            queued=sum(depths),
            max_mailbox_depth=max(depths, default=0),
            commands=sum(h.commands for h in hosts),
            rejections=sum(h.rejections for h in hosts),
            failures=sum(h.failures for h in hosts),
            restarts=sum(h.restarts for h in hosts),
            conflicts=sum(h.conflicts for h in hosts),
            redecisions=sum(h.redecisions for h in hosts),
            rides=sum(h.rides for h in hosts),
            passivations=registry.passivations,
            snapshots=sum(h.snapshots for h in hosts),
            dropped_replies=sum(h.dropped_replies for h in hosts),
            overloaded=sum(h.overloaded for h in hosts),
            accepting=registry.accepting,
        )

    def _external_commits(self, events: Sequence[RecordedEvent]) -> None:
        """The bus read `events` from the store (mostly other processes' commits): a
        live actor of a stream written past its version folds them (or reloads) before
        its next decision instead of learning it from a conflict."""
        live = self._registry.live
        for recorded in events:
            actor = live.get(recorded.stream_id)
            if actor is not None:
                actor.offer(recorded)

    # -- passivation ----------------------------------------------------------------------

    def passivate_idle(self, older_than: float | None = None) -> int:
        """Passivate every actor idle for at least `older_than` seconds (default: the
        `idle_timeout`) with an empty mailbox. Returns how many. The next command for
        one of them reloads it."""
        limit = self.options.idle_timeout if older_than is None else older_than
        if limit is None:
            return 0
        return self._registry.passivate_idle(limit)

    async def _sweep(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            self.passivate_idle()

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
        registry = self._registry
        shutting = registry.accepting
        drained = await registry.shutdown(self.options.grace if grace is None else grace)
        if shutting and not drained:
            self._log.warning(
                "system.shutdown_timeout",
                stopping=len(registry.stopping) + len(registry.live),
                queued=self.statistics().queued,
            )
        return drained


def _register(registry: EventRegistry, types: tuple[type[Any], ...]) -> None:
    # Only the types not registered yet, at version 1: one the user registered at a
    # higher schema_version (with upcasters from older ones) keeps that version.
    registry.register(*(tp for tp in types if not registry.is_registered(tp)))


async def _store_of(
    stack: contextlib.AsyncExitStack,
    store: str | os.PathLike[str] | EventStore,
    registry: EventRegistry | None,
    store_options: dict[str, Any],
) -> EventStore:
    """The store `open_system` runs on: opened here from a path or URL (and closed by
    `stack`), or the open store it was given."""
    if isinstance(store, str | os.PathLike):
        return await stack.enter_async_context(
            open_store(store, registry=registry, **store_options)
        )
    if store_options or registry is not None:
        raise TypeError(
            f"options {sorted(store_options)} and registry apply only when"
            " open_system opens the store from a path"
        )
    return store


def _check_store_limits(store: EventStore, options: SystemOptions) -> None:
    """Refuse a page or an append larger than the store takes.

    The store cuts a larger page to its limit, and a load stops at the first short page:
    the actor would serve a state missing the end of its stream. Likewise an append of a
    batch over the store's limit would fail every time."""
    for name, limit in (
        ("load_page_size", "max_read_limit"),
        ("max_events_per_append", "max_events_per_append"),
    ):
        cap = getattr(getattr(store, "options", None), limit, None)
        value = getattr(options, name)
        if type(cap) is int and value > cap:
            raise InvalidOption(name, value, in_range(1, cap, why=f"the store's {limit}"))


@contextlib.asynccontextmanager
async def open_system(
    store: str | os.PathLike[str] | EventStore,
    *,
    registry: EventRegistry | None = None,
    options: SystemOptions | None = None,
    **settings: Unpack[OpenSystemSettings],
) -> AsyncIterator[ActorSystem]:
    """Open an actor system on an event store: a path (opened here, and closed on exit)
    or an already open store (used, not closed).

    Args:
        store: a SQLite file path, ":memory:", a `postgresql://` URL, or an open
            `EventStore`.
        registry: the event registry of a store opened here.
        options: the system's options whole (default: `SystemOptions()`).
        **settings: `SystemOptions` fields (`mailbox_capacity`, `ask_timeout`...), each
            over the one in `options`; and, when it opens the store, `open_store`'s
            options (`synchronous`, `writer`...). `OpenSystemSettings` lists them all.

    It owns an event bus over the store (`system.bus`, from `bus.open_bus`). On exit
    the system stops accepting commands (`ShuttingDown`), drains every mailbox (up to
    `grace` seconds), lets the writer commit, cancels what is left in its task group
    (projections included), then closes the bus, and the store if it opened it. No
    task outlives the block.

    Raises:
        InvalidOption: an unknown option (naming it and the ones there are), an option
            out of its range (`SystemOptions` lists them), or `load_page_size` or
            `max_events_per_append` over the store's `max_read_limit` or
            `max_events_per_append`. The store's options are checked by the store.
        TypeError: a store's option, or `registry`, with a store already open.
    """
    telemetry.resolve()  # tracing and metrics on if the application set OpenTelemetry up
    if options is not None and not isinstance(options, SystemOptions):
        raise InvalidOption("options", options, "a SystemOptions or None", "open_system: ")
    # The store checks these itself (InvalidStoreOption), whatever their static type.
    store_options: dict[str, Any] = {k: v for k, v in settings.items() if k in STORE_KEYS}
    system_options = merge_options(
        options or SystemOptions(),
        {k: v for k, v in settings.items() if k not in STORE_KEYS},
        SYSTEM_FIELDS,
        where="open_system: ",
        elsewhere=f"; and when it opens the store, the store's {', '.join(sorted(STORE_KEYS))}",
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(raised_gc_threshold(system_options.gc_threshold))
        opened = await _store_of(stack, store, registry, store_options)
        _check_store_limits(opened, system_options)
        bus = await stack.enter_async_context(open_bus(opened, follow=system_options.follow))
        async with anyio.create_task_group() as tg:
            system = ActorSystem(opened, bus, tg, system_options)
            watch_system(system)  # for the live-actor and mailbox gauges, when metrics are on
            bus.add_external_listener(system._external_commits)
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
