"""The router of one aggregate type: spawn on demand, ask/tell, time travel.

`AggregateHost` is what the router's actors share (the `ActorHost` they see): the
counters of the type, the quarantine of aggregates that cannot be loaded, snapshots.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import anyio.lowlevel

from actors._actor import READ_STATE, AggregateActor
from actors._aggregate import Aggregate, CommandResult, CommandT, EventT, StateT
from actors._context import current_chain
from actors._deadline import deliver, reply
from actors._decode import CommandCheck
from actors._errors import (
    MailboxFull,
    Overloaded,
    RecoveryError,
    ReentrantAskError,
    ShuttingDown,
)
from actors._group_load import GroupLoader
from actors._mailbox import Envelope, Load, Mailbox
from actors._options import SystemOptions
from actors._registry import LiveActor, Registry
from actors._telemetry import traced_ask, traced_tell
from store import (
    EventDecodeError,
    EventStore,
    InvalidReadArgument,
    InvalidStreamId,
    Lease,
    NaiveDatetime,
    RecordedEvent,
    StoreClosed,
    telemetry,
)
from store._groupcommit import GroupCommitStore
from store._logging import get_logger

__all__ = ["AggregateHost", "AggregateRouter"]

T = TypeVar("T")


@dataclass(slots=True)
class Quarantine:
    """An aggregate refusing commands with `error` until `until` (the `count`th time)."""

    error: BaseException
    count: int
    until: float


class AggregateHost:
    """What the actors of one aggregate type share (implements `ActorHost`): its
    counters, the quarantine of aggregates that cannot be loaded, snapshot saving.

    Owned by the type's router; its actors change it only through its methods.
    """

    __slots__ = (
        "_clock",
        "_log",
        "_quarantined",
        "aggregate",
        "commands",
        "conflicts",
        "dropped_replies",
        "failures",
        "load",
        "loader",
        "name",
        "options",
        "overloaded",
        "queue_append",
        "redecisions",
        "registry",
        "rejections",
        "restarts",
        "rides",
        "snapshot_every",
        "snapshots",
        "store",
    )

    def __init__(
        self,
        aggregate: Aggregate[Any, Any, Any],
        options: SystemOptions,
        snapshot_every: int | None,
        store: EventStore,
        registry: Registry[Any],
    ) -> None:
        self.aggregate = aggregate
        self.options = options
        self.snapshot_every = snapshot_every
        self.store = store
        self.registry = registry
        self.load: Load = registry.load
        self.loader = GroupLoader(store, options.load_page_size)
        # Riders (`AggregateActor.ride`) need a store that chains across batches.
        self.queue_append = store.queue_append if isinstance(store, GroupCommitStore) else None
        self.name = type(aggregate).__name__
        self._quarantined: dict[str, Quarantine] = {}
        self._clock: Callable[[], float] = asyncio.get_running_loop().time
        self._log: Any = get_logger("actors.system")
        # counters (read by system.statistics())
        self.commands = 0
        self.rejections = 0
        self.failures = 0
        self.restarts = 0
        self.conflicts = 0
        self.redecisions = 0
        self.rides = 0
        self.snapshots = 0
        self.dropped_replies = 0
        self.overloaded = 0

    # -- counters -----------------------------------------------------------------------

    def answered(self) -> None:
        """A command was answered with a result."""
        self.commands += 1

    def dropped_reply(self) -> None:
        """A result was ready but its caller had gone."""
        self.dropped_replies += 1

    def rejected(self) -> None:
        """A command was refused by decide (or an idempotency conflict)."""
        self.rejections += 1

    def failed(self) -> None:
        """A command failed by a bug in decide or evolve."""
        self.failures += 1

    def restarted(self) -> None:
        """An actor restarted (or reloads after an unknown outcome)."""
        self.restarts += 1

    def conflicted(self) -> None:
        """An append conflicted with another append to the stream (another process's)."""
        self.conflicts += 1

    def redecided(self) -> None:
        """An append was decided again in the store's transaction (`Redecision`)."""
        self.redecisions += 1

    def rode(self) -> None:
        """A command rode on an append in flight (see `AggregateActor.ride`)."""
        self.rides += 1

    def check_load(self, stream_id: str) -> None:
        """Refuse a command that would wait in a mailbox once `max_queued_commands`
        wait across the system (R9: bounded, and refused rather than dropped)."""
        queued = self.load.queued
        limit = self.registry.max_queued
        if queued >= limit:
            self.overloaded += 1
            raise Overloaded(stream_id, queued, limit)

    # -- quarantine ---------------------------------------------------------------------

    def quarantined(self, aggregate_id: str) -> BaseException | None:
        """The error `aggregate_id` is refused with now, if it is quarantined."""
        quarantine = self._quarantined.get(aggregate_id)
        if quarantine is not None and self._clock() < quarantine.until:
            return quarantine.error
        return None

    def loaded(self, aggregate_id: str) -> None:
        """The actor of `aggregate_id` loaded: it is no longer quarantined."""
        self._quarantined.pop(aggregate_id, None)

    def quarantine(self, aggregate_id: str, error: BaseException) -> None:
        """Refuse commands for `aggregate_id` with `error` for `quarantine_for`, doubled
        per quarantine in a row (up to `max_backoff`)."""
        options = self.options
        previous = self._quarantined.get(aggregate_id)
        count = 1 if previous is None else previous.count + 1
        delay = min(options.quarantine_for * 2 ** (count - 1), options.max_backoff)
        self._quarantined[aggregate_id] = Quarantine(error, count, self._clock() + delay)
        if len(self._quarantined) > options.max_live_actors:
            self._quarantined.pop(next(iter(self._quarantined)))

    # -- the rest -----------------------------------------------------------------------

    def forget(self, actor: LiveActor) -> None:
        """`actor` ended."""
        self.registry.forget(actor)

    def start(self, actor: LiveActor) -> None:
        """Start `actor`'s task (`run`) in the system's task group."""
        self.registry.start(actor)

    def task_ended(self) -> None:
        """The task `start` started ended."""
        self.registry.task_ended()

    def idle_slot(self) -> bool:
        """Whether an actor task may wait idle for its next command; if so, counted."""
        return self.registry.idle_slot()

    def idle_done(self) -> None:
        """An actor task that took an idle slot stopped waiting."""
        self.registry.idle_done()

    async def save_snapshot(self, stream_id: str, version: int, state: Any) -> None:
        """Save a snapshot; a failure is reported, never raised (an optimisation)."""
        try:
            await self.store.save_snapshot(
                stream_id, version, state, schema_version=self.aggregate.state_version
            )
        except Exception:  # noqa: BLE001 - a snapshot is an optimisation: report and go on
            self._log.warning("actor.snapshot_failed", stream_id=stream_id, exc_info=True)
        else:
            self.snapshots += 1


class AggregateRouter(Generic[StateT, CommandT, EventT]):
    """Sends commands to the instances of one aggregate type. Get it from
    `system.aggregates(Account)`; it is cheap to keep and safe to share between tasks.

    Instance `aggregate_id` lives in stream `f"{category}-{aggregate_id}"`; its actor is
    spawned on the first command and passivated when idle or least recently used.
    """

    def __init__(
        self,
        registry: Registry[AggregateActor],
        store: EventStore,
        aggregate: Aggregate[StateT, CommandT, EventT],
        options: SystemOptions,
        snapshot_every: int | None,
    ) -> None:
        self.aggregate = aggregate
        self.options = options
        self.snapshot_every = snapshot_every
        self.name = type(aggregate).__name__
        self.category = type(aggregate).category
        self.host = AggregateHost(aggregate, options, snapshot_every, store, registry)
        """What this type's actors share: counters, quarantine, snapshots."""
        self._store = store
        self._registry = registry
        self._prefix = self.category + "-"
        self._check_command = CommandCheck(type(aggregate), self.name).check

    def stream_id(self, aggregate_id: str) -> str:
        """The stream id of instance `aggregate_id` (`"<category>-<aggregate_id>"`).

        Raises:
            InvalidStreamId: `aggregate_id` is not a non-empty, non-blank str, or the
                stream id is one the store cannot take (too long, control characters, a
                lone surrogate...).
        """
        if type(aggregate_id) is not str:
            raise self._not_a_str(aggregate_id)
        stream_id = self._prefix + aggregate_id
        self._check_id(aggregate_id, stream_id)
        return stream_id

    def _not_a_str(self, aggregate_id: object) -> InvalidStreamId:
        return InvalidStreamId(
            aggregate_id,
            f"the {self.name} id must be a non-empty str, not {type(aggregate_id).__name__}",
        )

    def _check_id(self, aggregate_id: str, stream_id: str) -> None:
        """Refuse an id the store cannot take, before any actor is started for it."""
        if not aggregate_id or aggregate_id.isspace():
            raise InvalidStreamId(
                stream_id,
                f"the {self.name} id must be a non-empty str (not blank), not {aggregate_id!r}",
            )
        self._store.check_stream_id(stream_id)

    # -- sending ------------------------------------------------------------------------

    async def ask(
        self,
        aggregate_id: str,
        command: CommandT,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - every ask has a finite deadline
        command_id: str | None = None,
        fence: Lease | None = None,
    ) -> CommandResult[EventT]:
        """Send `command` to instance `aggregate_id` and wait for its durable result.

        Args:
            timeout: seconds to wait in all, for mailbox room and for the reply (default:
                the system's `ask_timeout`, finite).
            command_id: makes the command idempotent: sending the same id again returns
                the first result (`duplicate=True`) and stores nothing again.
            fence: a lease (from `EventStore.acquire_lease`) the command's append is
                fenced by: it commits only while the lease is still at its epoch
                (process managers send every command with theirs). Needs `command_id`.

        Returns:
            The command's events, the stream version after them and the global position
            of the last one, once they are committed.

        Raises:
            InvalidCommand: `command` is not one of the aggregate's commands, or a field
                is not of its declared type (a float or bool for an int, ...); refused
                before any actor saw it.
            InvalidStreamId: `aggregate_id` is not a non-empty str the store can take as
                part of a stream id (see `stream_id`); refused before any actor started.
            Rejected: (a subclass) the aggregate refused the command; nothing stored.
            CommandFailed: decide raised an unexpected error; nothing stored.
            EvolveError: evolve refused the decided events; nothing stored.
            MailboxFull: no room in the mailbox within the timeout; not enqueued.
            Overloaded: the actor is busy and `max_queued_commands` commands already
                wait across the system; refused at once, not enqueued.
            AskTimeout: no reply within the timeout (the command may still be applied).
            TooManyAttempts: the append kept conflicting with concurrent appends.
            RecoveryError, RestartLimitExceeded: the aggregate cannot be loaded now.
            ShuttingDown: the system stopped accepting commands; not applied.
            ReentrantAskError: the ask would wait on an actor up its own ask chain.
            IdempotencyConflict: `command_id` was used before for another command (on
                another aggregate, or for another command on this one while the actor
                remembers it: its last `recent_command_ids` ids).
            LeaseLost: `fence` is no longer the lease's current holder; nothing stored.
            StoreError: the store failed the append (outcome unknown for
                `StoreUnavailable`: resend with the same command id).

        Cancellation: cancelling the caller drops the reply, never half a command: a
        command not yet taken by the actor is skipped; one taken is applied whole.
        """
        self._check_command(aggregate_id, command)
        if fence is not None and command_id is None:
            raise TypeError("a fenced command needs a command_id (it is appended alone)")
        actor = self._actor(aggregate_id)
        chain = current_chain()
        if chain and actor.stream_id in chain:
            raise ReentrantAskError(actor.stream_id, chain)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommandResult[EventT]] = loop.create_future()
        envelope = Envelope(command, command_id, future, chain, fence=fence)
        sending = self._send(aggregate_id, actor, envelope, future, timeout)
        try:
            if telemetry.active:
                return await traced_ask(self.name, actor.stream_id, envelope, sending)
            return await sending
        except (StoreClosed, ShuttingDown):
            # The system's tasks sit in the caller's cancel scope too: cancelled, the
            # store may close under a command that never had to wait. The caller
            # gets its own cancellation, as at any other wait.
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise

    async def _send(
        self,
        aggregate_id: str,
        actor: AggregateActor,
        envelope: Envelope,
        future: asyncio.Future[CommandResult[EventT]],
        timeout: float | None,  # noqa: ASYNC109 - see ask
    ) -> CommandResult[EventT]:
        """Run `envelope` inline if the actor is idle, else deliver it; its result."""
        if timeout is None and actor.claim():
            # Fast path: the actor is idle, so run the command on this task. It waits
            # only on the store, whose own timeouts bound it.
            try:
                queued = await actor.run_inline(envelope)
            finally:
                # Answered, then cancelled while the actor caught up (a reload after the
                # answer): the answer is dropped with the caller, not logged as lost.
                if future.done() and not future.cancelled():
                    future.exception()
            if future.done():
                return future.result()
            if queued:  # at the head of the mailbox, behind nothing
                return await reply(future, actor.stream_id, self.options.ask_timeout)
        elif timeout is None and actor.tip is not None and envelope.command_id is None:
            # Callers run the actor inline with an append in flight: ride on it.
            try:
                derailed = await actor.ride(envelope)
            finally:
                if future.done() and not future.cancelled():
                    future.exception()
            if future.done():
                return future.result()
            if derailed:  # to the head of the mailbox once the callers are done
                return await reply(future, actor.stream_id, self.options.ask_timeout)
        return await self._deliver(aggregate_id, actor, envelope, future, timeout)

    async def _deliver(
        self,
        aggregate_id: str,
        actor: AggregateActor,
        envelope: Envelope,
        future: asyncio.Future[T],
        timeout: float | None,  # noqa: ASYNC109 - a deadline with two phases (room, reply)
    ) -> T:
        """Put `envelope` in the actor's mailbox (waiting for room) and wait for `future`,
        both within one deadline: `timeout`, or the system's ask timeout."""
        self.host.check_load(actor.stream_id)
        wait = self.options.ask_timeout if timeout is None else timeout
        return await deliver(
            actor.mailbox, envelope, future, actor.stream_id, wait, self._successor, aggregate_id
        )

    def _successor(self, aggregate_id: str, envelope: Envelope) -> Mailbox:
        """The mailbox of the actor that replaced a passivated one (or the refusal)."""
        what = "state query" if envelope.command is READ_STATE else "command"
        return self._actor(aggregate_id, what).mailbox

    def tell(self, aggregate_id: str, command: CommandT, *, command_id: str | None = None) -> None:
        """Enqueue `command` for instance `aggregate_id` without waiting for it.

        Nobody hears of its outcome (see `system.statistics()` for counts).

        Raises:
            MailboxFull: the mailbox is at capacity; the command was not enqueued.
            InvalidCommand, InvalidStreamId, Overloaded, ShuttingDown, RecoveryError,
                RestartLimitExceeded: as for `ask`.
        """
        self._check_command(aggregate_id, command)
        actor = self._actor(aggregate_id)
        self.host.check_load(actor.stream_id)
        envelope = Envelope(command, command_id, None, current_chain())
        if telemetry.active:
            traced_tell(self.name, actor.stream_id, envelope, lambda: self._offer(actor, envelope))
        else:
            self._offer(actor, envelope)

    def _offer(self, actor: AggregateActor, envelope: Envelope) -> None:
        """Put `envelope` in the actor's mailbox, or raise `MailboxFull`."""
        if not actor.mailbox.offer(envelope):
            raise MailboxFull(actor.stream_id, actor.mailbox.capacity)

    def _actor(self, aggregate_id: str, what: str = "command") -> AggregateActor:
        registry = self._registry
        if not registry.accepting and not registry.admits(current_chain()):
            applied = " (not applied)" if what == "command" else ""
            raise ShuttingDown(
                f"the actor system is shutting down; {what} for {self.name}"
                f" {aggregate_id!r} refused{applied}"
            )
        if type(aggregate_id) is not str:
            raise self._not_a_str(aggregate_id)
        stream_id = self._prefix + aggregate_id
        actor = registry.touch(stream_id)
        if actor is not None:
            return actor
        self._check_id(aggregate_id, stream_id)  # only ids that passed have live actors
        error = self.host.quarantined(aggregate_id)
        if error is not None:
            raise error.with_traceback(None)
        predecessor = registry.predecessor(stream_id)
        return registry.admit(AggregateActor(self.host, aggregate_id, stream_id, predecessor))

    async def state(self, aggregate_id: str, *, timeout: float | None = None) -> StateT:  # noqa: ASYNC109
        """The live state of `aggregate_id` as its actor holds it, after every command
        sent to it before this call (it goes through the mailbox, in order).

        Raises:
            InvalidStreamId, MailboxFull, Overloaded, AskTimeout, ShuttingDown,
                RecoveryError: as for `ask`.
        """
        actor = self._actor(aggregate_id, "state query")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StateT] = loop.create_future()
        envelope = Envelope(READ_STATE, None, future, ())
        return await self._deliver(aggregate_id, actor, envelope, future, timeout)

    # -- time travel --------------------------------------------------------------------

    async def state_at(
        self, aggregate_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> StateT:
        """The state of `aggregate_id` as of stream `version`, or as of moment `at` (an
        aware datetime or POSIX seconds: the events recorded at or before it). With
        neither, the current state as stored. Reads the store; the live actor is not
        involved.

        Raises:
            InvalidStreamId: as for `stream_id`; nothing was read.
            NaiveDatetime: `at` is a datetime without tzinfo (the store's one rule: a
                naive datetime is no moment, so it is refused rather than guessed).
            InvalidReadArgument: `at` is neither an aware datetime nor int or float
                seconds (or is NaN), both `version` and `at` were given, or `version`
                is not a version.
            RecoveryError: a stored event in the range cannot be decoded or evolved.
        """
        stream_id = self.stream_id(aggregate_id)
        call = f"state_at({stream_id!r})"
        moment: float | None
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise NaiveDatetime(call, at)
            moment = at.timestamp()
        elif at is None or (type(at) in (int, float) and not math.isnan(at)):
            moment = at
        else:
            raise InvalidReadArgument(
                call, "at", at, "an aware datetime or POSIX seconds (an int or float, not NaN)"
            )
        if version is not None and at is not None:
            raise InvalidReadArgument(
                call, "at", at, "None when version is given (give either version or at)"
            )
        state = self.aggregate.initial
        evolve = self.aggregate.evolve
        async for recorded in self._events(stream_id, 1, version):
            if moment is not None and recorded.recorded_at > moment:
                break
            try:
                state = evolve(state, recorded.event)
            except Exception as exc:
                raise RecoveryError(
                    recorded.stream_id, recorded.version, recorded.event_type, repr(exc)
                ) from exc
        return state

    async def history(
        self,
        aggregate_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int = 10_000,
    ) -> list[RecordedEvent]:
        """The recorded events of `aggregate_id` (the audit trail), oldest first.

        At most `limit` events from `from_version`; page on with
        `from_version=last.version + 1`.

        Raises:
            InvalidStreamId: as for `stream_id`; nothing was read.
            InvalidReadArgument: `limit` is not a positive int, or a version bound is
                not a version.
            RecoveryError: a stored event in the range cannot be decoded.
        """
        stream_id = self.stream_id(aggregate_id)
        if type(limit) is not int or limit < 1:
            raise InvalidReadArgument(f"history({stream_id!r})", "limit", limit, "a positive int")
        out: list[RecordedEvent] = []
        async for recorded in self._events(stream_id, from_version, to_version):
            out.append(recorded)
            if len(out) >= limit:
                break
        return out

    async def _events(
        self, stream_id: str, start: int, to_version: int | None
    ) -> AsyncIterator[RecordedEvent]:
        page = self.options.load_page_size
        store = self._store
        while True:
            try:
                events = await store.read_stream(
                    stream_id, from_version=start, to_version=to_version, limit=page
                )
            except EventDecodeError as exc:
                raise RecoveryError(exc.stream_id, exc.version, exc.event_type, str(exc)) from exc
            for recorded in events:
                yield recorded
            if len(events) < page:
                return
            start = events[-1].version + 1
