"""The aggregate actor: loads its stream, then serves its mailbox in batches.

One actor per aggregate instance. It takes every command waiting in its mailbox (up to
`max_batch`), decides them in order against the evolving state, and persists them in
as few appends as possible: consecutive commands without a command id share one
append; a command with a command id gets its own append (the store records the id with
exactly that command's events, in the same transaction). The appends of one batch go
out one after another, each once the one before it committed as decided. Each caller
gets its own result or error. Replies go out only after the store committed (durable
ack).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import anyio

from actors._aggregate import CommandResult
from actors._errors import (
    CommandFailed,
    EvolveError,
    RecoveryError,
    Rejected,
    RestartLimitExceeded,
    ShuttingDown,
    TooManyAttempts,
)
from actors._host import ActorHost
from actors._mailbox import Envelope, Mailbox
from store import (
    AppendResult,
    ConcurrencyError,
    EventDecodeError,
    IdempotencyConflict,
    InvalidArgument,
    LeaseLost,
    RecordedEvent,
    StoreClosed,
    StoreError,
    get_logger,
)

__all__: list[str] = []


class _Planned:
    """A decided command: its events and the state/version after them.

    `error` is a verdict held back: a refusal (or a failure in decide) reached on a
    state not yet known to be the committed one. It is given only once that state is
    confirmed (see `AggregateActor._settle`); otherwise the command is decided again.
    """

    __slots__ = ("envelope", "error", "events", "followers", "state", "version")

    def __init__(
        self,
        envelope: Envelope,
        events: tuple[Any, ...],
        state: Any,
        version: int,
        error: Exception | None = None,
    ):
        self.envelope = envelope
        self.events = events
        self.state = state
        self.version = version
        self.error = error
        self.followers: list[Envelope] | None = None


class _Restart(Exception):
    """Internal: evolve failed; restart the actor (reload from the store, with backoff)."""


class _Reload(Exception):
    """Internal: a caller running inline was cancelled with its append in the store:
    wait until the store settled it, then reload."""


class AggregateActor:
    """Serves one aggregate instance. Created and owned by its `AggregateRouter`."""

    __slots__ = (
        "_current",
        "_log",
        "aggregate",
        "aggregate_id",
        "behind",
        "busy",
        "done",
        "failure",
        "foreign",
        "host",
        "in_a_row",
        "inline",
        "last_used",
        "mailbox",
        "position",
        "predecessor",
        "recent",
        "state",
        "store",
        "stream_id",
        "unsure",
        "version",
    )

    def __init__(
        self,
        host: ActorHost,
        aggregate_id: str,
        stream_id: str,
        predecessor: AggregateActor | None,
    ) -> None:
        self.host = host
        self.store = host.store
        self.aggregate = host.aggregate
        self.aggregate_id = aggregate_id
        self.stream_id = stream_id
        self.predecessor = predecessor
        self.mailbox = Mailbox(host.options.mailbox_capacity, host.load)
        self.done = anyio.Event()
        self.state: Any = self.aggregate.initial
        self.version = 0
        self.position = 0
        self.last_used = 0.0  # set by the registry (least recently used first)
        # command id -> (the command, its result): a resend of the same command is
        # answered from here; the same id with another command is an IdempotencyConflict.
        self.recent: OrderedDict[str, tuple[object, CommandResult[Any]]] = OrderedDict()
        self._log: Any = None
        self._current: list[Envelope] = []
        # The actor task is busy unless parked waiting for work; `inline` is set while a
        # caller runs a command on its own task (see `claim`); `failure` is what such a
        # caller leaves for the actor task to deal with (restart, reload, park).
        self.busy = True
        self.inline = False
        self.failure: BaseException | None = None
        self.in_a_row = 0  # restarts in a row, reset by a command that succeeds
        # The stream's version as another process wrote it, when the bus's follower, a
        # conflict or a confirmation saw it ahead of `version`: catch up before deciding
        # anything, from `foreign` (the events the follower read, in order) when they
        # reach it, else from the store. `unsure`: only a read of the store will do (an
        # outcome is unknown, or an append lost a race).
        self.behind = 0
        self.foreign: list[RecordedEvent] = []
        self.unsure = False

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """The actor's task: wait for its predecessor, load, serve until closed."""
        host = self.host
        self._log = get_logger("actors", aggregate=host.name, stream_id=self.stream_id)
        error: BaseException | None = None
        try:
            if self.predecessor is not None:
                await self.predecessor.done.wait()
                self.predecessor = None
            await self._load()
            host.loaded(self.aggregate_id)
            await self._serve()
        except _Parked as parked:
            error = parked.error
        except Exception as exc:  # noqa: BLE001 - a crash stays in this actor: reported
            error = exc
            host.restarted()
            self._log.error("actor.crashed", exc_info=exc)
            host.park(self.aggregate_id, exc)
        except BaseException as exc:
            error = exc
            raise
        finally:
            leftover = self._current + self.mailbox.drain()
            self._current = []
            self.mailbox.close()
            host.forget(self)
            if leftover:
                refusal = _refusal(error, self.stream_id)
                for envelope in leftover:
                    envelope.fail(refusal)
            self.done.set()

    async def _serve(self) -> None:
        mailbox = self.mailbox
        limit = self.host.options.max_batch
        self.in_a_row = 0
        while True:
            if self.inline:
                await mailbox.wait_signal()  # the caller running inline pokes when done
                continue
            failure = self.failure
            if failure is not None:
                self.failure = None
                if isinstance(failure, _Restart):
                    await self._restart()
                elif isinstance(failure, _Reload):
                    # The append may still commit: reading before it settles would
                    # serve (and decide on) a state without it.
                    with contextlib.suppress(StoreError):  # the load reports a dead store
                        await self.store.wait_settled()
                    await self._load(catch_up=True)
                else:
                    raise failure
                continue
            if self.behind > self.version:
                await self._catch_up()
            batch = mailbox.take(limit)
            if not batch:
                if mailbox.closed:
                    return
                self.busy = False
                try:
                    await mailbox.wait()
                finally:
                    self.busy = True
                continue
            try:
                await self._handle(batch)
                self.in_a_row = 0
            except _Restart:
                await self._restart()

    # -- the inline fast path -------------------------------------------------------------

    def claim(self) -> bool:
        """Let the calling task run one command itself, if the actor is idle.

        An idle actor (loaded, parked waiting for work, nothing queued) would only be
        woken to run this one command: the caller runs it instead, on its own task,
        which saves two task switches per command. Commands still never interleave:
        while the caller runs, the actor task does not take work.
        """
        if (
            self.busy
            or self.inline
            or self.failure is not None
            or self.mailbox.closed
            or len(self.mailbox)
            or (self.behind > self.version and not self._absorb())
        ):
            return False
        self.inline = True
        return True

    async def run_inline(self, envelope: Envelope) -> None:
        """Decide, persist and answer `envelope` on the caller's task (after `claim`).

        Cancellation: the caller's command is then of unknown outcome (its append may
        commit), so the actor task reloads from the store before it serves anything
        else.
        """
        try:
            todo = [envelope]
            if envelope.command_id is None:
                # The lean path (one decide, one append, one answer), written out here
                # rather than in a helper: one coroutine frame less per command.
                decided = self._decide(envelope, self.state)
                if isinstance(decided, EvolveError):
                    self._refuse(envelope, decided)
                    raise _Restart from decided
                if isinstance(decided, tuple) and decided[0]:
                    events, state = decided
                    host = self.host
                    version = self.version
                    try:
                        result = await self.store.append(
                            self.stream_id,
                            events,
                            expected_version=version,
                            metadata=envelope.metadata,
                        )
                    except Exception as exc:  # noqa: BLE001 - settled like any failed append
                        planned = _Planned(envelope, events, state, version + len(events))
                        todo, reload = self._settle([[planned]], [exc], [])
                        if reload:
                            await self._catch_up()
                    else:
                        self.state = state
                        self.version = last = result.last_version
                        self.position = position = result.last_position
                        host.answered()
                        envelope.reply(CommandResult(events, last, position))
                        self.in_a_row = 0
                        every = host.snapshot_every
                        if every is not None and last // every != version // every:
                            await host.save_snapshot(self.stream_id, last, state)
                        return
                else:
                    # A refusal or a no-op writes nothing that checks the version:
                    # confirm the state it was decided on before answering.
                    version, position = self.version, self.position
                    again = await self._confirm([envelope])
                    if again is not None:
                        todo = again
                    else:
                        todo = []
                        if isinstance(decided, tuple):
                            self.host.answered()
                            envelope.reply(CommandResult((), version, position))
                        else:
                            self._refuse(envelope, decided)
            while todo:
                todo, reload = await self._attempt(todo)
                if reload:
                    await self._catch_up()
        except (_Restart, _Parked) as exc:
            self.failure = exc
        except Exception as exc:  # noqa: BLE001 - handed to the actor task, which reports it
            self.failure = exc
        except BaseException:
            self.failure = _Reload()
            raise
        finally:
            self.inline = False
            # Wake the actor task if it waits for us (busy: it was woken meanwhile, by
            # a command or by closing), or has work to do.
            if self.busy or self.failure is not None or len(self.mailbox):
                self.mailbox.poke()

    async def _restart(self) -> None:
        self.in_a_row = restarts = self.in_a_row + 1
        host = self.host
        host.restarted()
        options = host.options
        if restarts > options.max_restarts:
            error = RestartLimitExceeded(self.stream_id, restarts)
            self._log.error("actor.restart_limit", restarts=restarts)
            host.park(self.aggregate_id, error)
            raise _Parked(error)
        self._log.warning("actor.restarting", restarts=restarts)
        if restarts > 1:
            delay = min(options.restart_backoff * 2 ** (restarts - 2), options.max_backoff)
            await anyio.sleep(delay)
        await self._load()

    async def _load(self, *, catch_up: bool = False) -> None:
        """Rebuild state from the latest snapshot plus the events after it, page by page.

        With `catch_up`, fold only the events after the actor's own version onto its
        state instead: after a conflict or an append of unknown outcome, the state is
        still the fold of the stream up to `self.version` (it moves only with committed
        events), and the stream can only have grown. A reload then costs the events
        written since, not the whole stream.
        """
        host = self.host
        aggregate = self.aggregate
        store = self.store
        stream_id = self.stream_id
        evolve = aggregate.evolve
        state: Any = aggregate.initial
        version = 0
        position = 0
        start = 1
        if catch_up:
            state, version, position = self.state, self.version, self.position
            start = version + 1
        try:
            if host.snapshot_every is not None and not catch_up:
                snapshot = await store.load_snapshot(
                    stream_id, type(state), schema_version=aggregate.state_version
                )
                if snapshot is not None:
                    state, version, start = snapshot.state, snapshot.version, snapshot.version
            page_size = host.options.load_page_size
            while True:
                page = await store.read_stream(stream_id, from_version=start, limit=page_size)
                for recorded in page:
                    position = recorded.position
                    if recorded.version <= version:
                        continue  # the snapshot's own event: read for its position only
                    try:
                        state = evolve(state, recorded.event)
                    except Exception as exc:
                        raise RecoveryError(
                            stream_id, recorded.version, recorded.event_type, repr(exc)
                        ) from exc
                    version = recorded.version
                if len(page) < page_size:
                    break
                start = page[-1].version + 1
        except RecoveryError as exc:
            self._fail_load(exc)
        except EventDecodeError as exc:
            error = RecoveryError(exc.stream_id, exc.version, exc.event_type, str(exc))
            error.__cause__ = exc
            self._fail_load(error)
        except StoreClosed as exc:
            raise _Parked(ShuttingDown(f"the store closed while loading {stream_id!r}")) from exc
        except StoreError as exc:
            error = RecoveryError(stream_id, version, "", f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._fail_load(error)
        self.state, self.version, self.position = state, version, position
        self.unsure = False
        self.foreign = [e for e in self.foreign if e.version > version]
        self._log.debug("actor.loaded", version=version)

    async def _catch_up(self) -> None:
        """Bring the state up to the stream's version as last seen (`behind`): from the
        events the follower handed over when they reach it, else from the store (always
        when an outcome was unknown)."""
        if not self.unsure and self._absorb():
            return
        await self._load(catch_up=True)

    def offer(self, recorded: RecordedEvent) -> None:
        """An event of this stream the bus's follower read (another process wrote it,
        or this actor's own append, read before its answer came): kept to fold before
        the next decision. At most `_MAX_FOREIGN` are kept; past them, a read of the
        store catches up."""
        if recorded.version <= self.version:
            return
        self.behind = max(self.behind, recorded.version)
        foreign = self.foreign
        following = foreign[-1].version + 1 if foreign else self.version + 1
        if recorded.version == following and len(foreign) < _MAX_FOREIGN:
            foreign.append(recorded)
        elif recorded.version > following:
            foreign.clear()  # not contiguous with what is kept: the store tells

    def _absorb(self) -> bool:
        """Fold the kept events that follow `version` onto the state; whether it then
        reaches `behind`. An event `evolve` refuses is left to a load, which reports it."""
        foreign = self.foreign
        if foreign:
            state, version, position = self.state, self.version, self.position
            evolve = self.aggregate.evolve
            used = 0
            for recorded in foreign:
                used += 1
                if recorded.version <= version:
                    continue
                if recorded.version != version + 1:
                    break
                try:
                    state = evolve(state, recorded.event)
                except Exception:  # noqa: BLE001 - the load reads it again and reports it
                    foreign.clear()
                    return False
                version, position = recorded.version, recorded.position
            del foreign[:used]
            self.state, self.version, self.position = state, version, position
        return self.version >= self.behind

    def _fail_load(self, error: RecoveryError) -> None:
        self.host.restarted()
        self._log.error(
            "actor.recovery_failed",
            version=error.version,
            event_type=error.event_type,
            exc_info=error,
        )
        self.host.park(self.aggregate_id, error)
        raise _Parked(error)

    # -- one batch ----------------------------------------------------------------------

    async def _handle(self, batch: list[Envelope]) -> None:
        todo = [envelope for envelope in batch if envelope.wanted()]
        self._current = todo
        while todo:
            todo, reload = await self._attempt(todo)
            if reload:
                await self._catch_up()
        self._current = []

    async def _attempt(self, todo: list[Envelope]) -> tuple[list[Envelope], bool]:
        """Decide, persist and answer `todo`.

        Each command is decided on the state the commands before it leave, before any
        of them is committed. A command that writes nothing (a refusal, a no-op, a
        failure in decide, a state query) is answered only once the state it was
        decided on is confirmed as the stream's latest (see `_settle`): every answer
        rests on committed state that no other process had moved on.

        Returns the envelopes to decide again, and whether to reload from the store first.
        Raises `_Restart` (after putting undecided envelopes back) when evolve failed.
        """
        firsts: dict[str, _Planned] = {}
        plan: list[_Planned] = []
        state = self.state
        version = self.version
        evolve_failed: EvolveError | None = None
        rest: list[Envelope] = []
        for index, envelope in enumerate(todo):
            if envelope.command is READ_STATE:
                # answered with the state the commands before it leave, once confirmed
                plan.append(_Planned(envelope, (), state, version))
                continue
            command_id = envelope.command_id
            if command_id is not None and self._answered_by_id(envelope, command_id, firsts):
                continue
            decided = self._decide(envelope, state)
            held: Exception | None = None
            if isinstance(decided, tuple):
                events, new_state = decided
                # A resend that decide now answers with no events (a no-op) stores
                # nothing, so no append can recognise its id: look it up here.
                if (
                    not events
                    and command_id is not None
                    and await self._answered_by_store(envelope, command_id)
                ):
                    continue
            else:
                if isinstance(decided, EvolveError):
                    if version != self.version:  # decided on an uncommitted state: again
                        rest = todo[index:]
                        break
                    self._refuse(envelope, decided)
                    evolve_failed = decided
                    rest = todo[index + 1 :]
                    break
                # Maybe a resend of a command that did commit: its first result.
                if (
                    command_id is not None
                    and isinstance(decided, Rejected)
                    and await self._answered_by_store(envelope, command_id)
                ):
                    continue
                held, events, new_state = decided, (), state
            state = new_state
            version += len(events)
            planned = _Planned(envelope, events, state, version, held)
            plan.append(planned)
            if command_id is not None and events:
                # Only what is stored is idempotent: a resend of a command that stores
                # nothing (a no-op, a refusal) is decided on its own, like a new one.
                firsts[command_id] = planned
        retry: list[Envelope] = []
        reload = False
        if plan:
            retry, reload = await self._persist(plan)
        if evolve_failed is not None:
            # What came before is committed; the rest waits for the reloaded state.
            self._current = []
            self.mailbox.requeue(retry + rest)  # at the head, in order, before newer ones
            raise _Restart from evolve_failed
        return retry + rest, reload

    def _answered_by_id(
        self, envelope: Envelope, command_id: str, firsts: dict[str, _Planned]
    ) -> bool:
        """Answer `envelope` from what the actor knows of its command id, if it can:
        the same id earlier in this batch (answered with that command's result), or
        among the remembered ids. True when answered (or when nobody waits anymore)."""
        first = firsts.get(command_id)
        if first is not None:  # the same command id twice in one batch
            if first.envelope.command != envelope.command:
                self._conflict(envelope, command_id)
            else:
                if first.followers is None:
                    first.followers = []
                first.followers.append(envelope)
            return True
        known = self.recent.get(command_id)
        if known is not None:
            if known[0] != envelope.command:
                self._conflict(envelope, command_id)
            else:
                envelope.reply(known[1])
            return True
        # Not looked up in the store here: the append records the id and answers a
        # resend with the first result (duplicate). Only a resend that decide now
        # refuses, or that decides no events, needs the lookup (`_answered_by_store`).
        return not envelope.wanted()

    async def _answered_by_store(self, envelope: Envelope, command_id: str) -> bool:
        """Answer `envelope` with the stored result of `command_id` (or the error of
        looking it up); True when answered, or when nobody waits anymore."""
        found = await self._find_command(envelope, command_id)
        if isinstance(found, CommandResult):
            envelope.reply(found)
        elif found is not None:
            envelope.fail(found)
        return found is not None or not envelope.wanted()

    def _decide(
        self, envelope: Envelope, state: Any
    ) -> tuple[tuple[Any, ...], Any] | Rejected | CommandFailed | EvolveError:
        """The events of `envelope`'s command and the state after them, or the verdict
        that refuses it (`Rejected`, `CommandFailed`, `EvolveError`); answers nobody."""
        command = envelope.command
        aggregate = self.aggregate
        try:
            events = tuple(aggregate.decide(state, command))
        except Rejected as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - isolated: goes to the caller, wrapped
            failed = CommandFailed(
                self.host.name, self.aggregate_id, type(command).__name__, repr(exc)
            )
            failed.__cause__ = exc
            return failed
        evolve = aggregate.evolve
        event: Any = None
        try:
            for event in events:
                state = evolve(state, event)
        except Exception as exc:  # noqa: BLE001 - code and history disagree: restart
            name = type(event).__name__
            failure = EvolveError(self.host.name, self.aggregate_id, name, repr(exc))
            failure.__cause__ = exc
            return failure
        return events, state

    def _refuse(self, envelope: Envelope, error: Exception) -> None:
        """Answer `envelope` with the verdict `_decide` reached, counted by kind."""
        host = self.host
        if isinstance(error, Rejected):
            host.rejected()
        elif isinstance(error, EvolveError):
            host.failed()
            self._log.error("actor.evolve_failed", event_type=error.event_type)
        else:
            host.failed()
            self._log.debug("command.failed", command=type(envelope.command).__name__)
        envelope.fail(error)

    async def _find_command(
        self, envelope: Envelope, command_id: str
    ) -> CommandResult[Any] | StoreError | None:
        """The stored result of `command_id` on this stream (remembered, marked
        duplicate); the error to answer when it is stored on another stream or the
        lookup failed; None when the store does not hold it."""
        store = self.store
        try:
            found = await store.find_command(command_id)
            if found is None:
                return None
            if found.stream_id != self.stream_id:
                return IdempotencyConflict(command_id, self.stream_id, found.stream_id)
            recorded = await store.read_stream(
                self.stream_id,
                from_version=found.first_version,
                to_version=found.last_version,
            )
        except StoreError as exc:
            return exc
        result = CommandResult(
            tuple(r.event for r in recorded), found.last_version, found.last_position, True
        )
        self._remember(command_id, envelope.command, result)
        return result

    def _conflict(self, envelope: Envelope, command_id: str) -> None:
        if envelope.wanted():
            self.host.rejected()
            envelope.fail(IdempotencyConflict(command_id, self.stream_id, self.stream_id))

    def _remember(
        self, command_id: str, command: object, result: CommandResult[Any]
    ) -> CommandResult[Any]:
        """Keep `result` as the answer to a resend of `command_id`; returns that answer
        (the result marked duplicate)."""
        if not result.duplicate:
            result = CommandResult(result.events, result.version, result.position, True)
        limit = self.host.options.recent_command_ids
        if limit:
            recent = self.recent
            recent[command_id] = (command, result)
            if len(recent) > limit:
                recent.popitem(last=False)
        return result

    async def _persist(self, plan: list[_Planned]) -> tuple[list[Envelope], bool]:
        """Append the plan's events; answer the committed commands.

        Returns the envelopes to decide again and whether the state must be reloaded.
        """
        segments = self._segments(plan)
        outcomes: list[AppendResult | BaseException | None] = [None] * len(segments)
        base = self.version
        # On the actor task, the append is shielded: a cancelled actor (shutdown past
        # its grace) still learns the outcome and answers. A caller running inline is
        # not shielded; its cancellation makes the actor reload (see `run_inline`).
        # One after another: each segment was decided on the state the ones before it
        # leave, so it is sent only once they committed as decided. Sent together, a
        # later one could commit on top of another process's events when an earlier one
        # failed and the other process had written as many events (same version).
        with anyio.CancelScope(shield=not self.inline):
            expected = base
            for index, segment in enumerate(segments):
                outcome = outcomes[index] = await self._append(segment, expected)
                if outcome is not _NO_EVENTS and (
                    not isinstance(outcome, AppendResult) or outcome.duplicate
                ):
                    break  # the rest stays unsent (None): decided again
                expected += sum(len(p.events) for p in segment)
        old = self.version
        conflicted: list[tuple[_Planned, IdempotencyConflict]] = []
        waiting: list[list[_Planned]] = []
        retry, reload = self._settle(segments, outcomes, conflicted, waiting)
        if waiting:  # nothing committed: confirm the state they were decided on
            again = await self._confirm([p.envelope for segment in waiting for p in segment])
            if again is None:
                for segment in waiting:
                    self._give_unwritten(segment)
            else:
                retry = again + retry
        for planned, error in conflicted:
            command_id = planned.envelope.command_id
            assert command_id is not None  # only an append with a command id conflicts
            found = await self._find_command(planned.envelope, command_id)
            if isinstance(found, CommandResult):
                planned.envelope.reply(found)
                for follower in planned.followers or ():
                    follower.reply(found)
            else:
                self._fail(planned, error if found is None else found)
        every = self.host.snapshot_every
        if every is not None and not reload and self.version // every != old // every:
            await self.host.save_snapshot(self.stream_id, self.version, self.state)
        return retry, reload

    def _segments(self, plan: list[_Planned]) -> list[list[_Planned]]:
        limit = self.host.options.max_events_per_append
        segments: list[list[_Planned]] = []
        current: list[_Planned] = []
        count = 0
        for planned in plan:
            n = len(planned.events)
            alone = planned.envelope.command_id is not None or planned.envelope.solo
            if current and (alone or count + n > limit or current[-1].envelope.command_id):
                segments.append(current)
                current, count = [], 0
            current.append(planned)
            count += n
            if alone:
                segments.append(current)
                current, count = [], 0
        if current:
            segments.append(current)
        return segments

    async def _append(self, segment: list[_Planned], expected: int) -> AppendResult | BaseException:
        events = [event for planned in segment for event in planned.events]
        if not events:
            return _NO_EVENTS
        command_id = fence = None
        envelope = segment[0].envelope
        if len(segment) == 1:
            command_id, fence = envelope.command_id, envelope.fence
        try:
            return await self.store.append(
                self.stream_id,
                events,
                expected_version=expected,
                command_id=command_id,
                metadata=envelope.metadata,  # the first command's trace context, if traced
                fence=fence,
            )
        except Exception as exc:  # noqa: BLE001 - each segment's callers get their own outcome
            return exc

    def _settle(
        self,
        segments: list[list[_Planned]],
        outcomes: Sequence[AppendResult | BaseException | None],
        conflicted: list[tuple[_Planned, IdempotencyConflict]],
        waiting: list[list[_Planned]] | None = None,
    ) -> tuple[list[Envelope], bool]:
        """Answer each segment by its append's outcome, in order.

        The plan was decided as if every segment commits, on the actor's state as the
        stream's latest. Up to the first segment that did not commit exactly as decided
        (a duplicate, or any failure), state and answers follow the plan; from there on
        the plan rests on a state that was never committed, so nothing after it is
        answered from it: those commands are decided again (`_diverged`).

        A segment that writes nothing (refusals, no-ops, state queries) is answered
        only once the state it was decided on is known to be the stream's latest: by a
        later segment of the plan committing (its expected version proves it), or,
        when none did, by the caller's check of the stream's version (`_confirm`);
        such segments are left in `waiting` then. Should the plan diverge first, they
        are decided again.

        Returns the envelopes to decide again, and whether to reload from the store first.
        """
        retry: list[Envelope] = []
        reload = False
        diverged = False
        confirmed = False  # a segment committed as decided: the plan's base was current
        pending: list[list[_Planned]] = []  # written nothing; the state not yet confirmed
        for segment, outcome in zip(segments, outcomes, strict=True):
            if diverged:
                reload = self._diverged(segment, outcome, retry) or reload
            elif outcome is _NO_EVENTS:
                if confirmed:
                    self._give_unwritten(segment)
                else:
                    pending.append(segment)
            elif isinstance(outcome, AppendResult):
                if outcome.duplicate:
                    # Stored before (by an earlier life of this actor or another
                    # process): its events are not the ones the plan went on from.
                    diverged = reload = self.unsure = True
                    _decide_again(pending, retry)
                    self._answer_segment(segment, outcome)
                else:
                    confirmed = True
                    for unwritten in pending:  # decided on the state this commit proves
                        self._give_unwritten(unwritten)
                    pending = []
                    last = segment[-1]
                    self.state, self.version = last.state, last.version
                    self._answer_segment(segment, outcome)
                    self.position = outcome.last_position
            else:
                diverged = True
                assert isinstance(outcome, BaseException)
                _decide_again(pending, retry)
                reload = self._failed(segment, outcome, retry, conflicted) or reload
        if pending:
            if waiting is None:
                _decide_again(pending, retry)
            else:
                waiting.extend(pending)
        if diverged:
            self._log.debug("append.failed", retry=len(retry), reload=reload)
        return retry, reload

    def _give_unwritten(self, segment: list[_Planned]) -> None:
        """Answer a segment that wrote nothing, its state confirmed as the latest."""
        last = segment[-1]
        self.state, self.version = last.state, last.version
        for planned in segment:
            self._give(planned, CommandResult((), planned.version, self.position))

    async def _confirm(self, envelopes: list[Envelope]) -> list[Envelope] | None:
        """Check that the stream is still at the actor's version before answering
        `envelopes`, decided on it without writing (refusals, no-ops, state queries):
        another process may have written since the actor loaded.

        Returns None when it is (answer them). Otherwise the envelopes to decide again,
        on the state now caught up from the store; one past `max_attempts` gets
        `TooManyAttempts`, and when the check itself failed each gets the store's error
        (nothing to decide again then).
        """
        try:
            current = await self.store.stream_version(self.stream_id)
        except StoreError as exc:
            for envelope in envelopes:
                envelope.fail(exc)
            return []
        if current <= self.version:
            return None
        self.behind = max(self.behind, current)
        host = self.host
        host.conflicted()
        await self._catch_up()
        again: list[Envelope] = []
        max_attempts = host.options.max_attempts
        for envelope in envelopes:
            envelope.attempts += 1
            if envelope.attempts >= max_attempts:
                envelope.fail(TooManyAttempts(self.stream_id, envelope.attempts))
            else:
                again.append(envelope)
        return again

    def _answer_segment(self, segment: list[_Planned], outcome: AppendResult) -> None:
        """Answer the commands of a committed (or duplicate) segment, each with its
        share of the append: versions and positions counted from the append's first."""
        known = self.position  # the stream's last event before this append
        position = outcome.first_position - 1
        version = outcome.first_version - 1
        for planned in segment:
            n = len(planned.events)
            if n == 0:
                # no events: the position of the stream's last event so far
                last_event = known if version < outcome.first_version else position
                self._give(planned, CommandResult((), version, last_event))
                continue
            position += n
            version += n
            self._give(planned, CommandResult(planned.events, version, position, outcome.duplicate))

    def _diverged(
        self,
        segment: list[_Planned],
        outcome: AppendResult | BaseException | None,
        retry: list[Envelope],
    ) -> bool:
        """Settle a segment behind one that did not commit as decided (it was not sent,
        or writes nothing): decided again, without counting an attempt. Returns False
        (no reload of its own)."""
        assert outcome is None or outcome is _NO_EVENTS, outcome
        for planned in segment:
            retry.append(planned.envelope)
            retry.extend(planned.followers or ())
        return False

    def _failed(
        self,
        segment: list[_Planned],
        error: BaseException,
        retry: list[Envelope],
        conflicted: list[tuple[_Planned, IdempotencyConflict]],
    ) -> bool:
        """Settle the first segment whose append failed; True: reload first."""
        host = self.host
        if isinstance(error, ConcurrencyError):
            host.conflicted()
            self.behind = max(self.behind, error.actual)
            # Lost a race: read the stream's latest state rather than fold up to the
            # version that append saw, which the other writer has often passed by
            # then (measured on two processes: a fifth fewer `TooManyAttempts`).
            self.unsure = True
            max_attempts = host.options.max_attempts
            for planned in segment:
                envelope = planned.envelope
                if planned.events:
                    envelope.attempts += 1
                if envelope.attempts >= max_attempts:
                    failure = TooManyAttempts(self.stream_id, envelope.attempts)
                    failure.__cause__ = error
                    self._fail(planned, failure)
                else:
                    retry.append(envelope)
                    retry.extend(planned.followers or ())
            return True
        if isinstance(error, IdempotencyConflict):
            # A resend that decided other events than the first time: answered after
            # a lookup (in _persist) with the first result, or with the conflict.
            conflicted.extend((planned, error) for planned in segment)
            self.unsure = True
            return True
        if isinstance(error, LeaseLost):  # nothing written: the sender lost its lease
            for planned in segment:
                self._fail(planned, error)
            return False
        if isinstance(error, InvalidArgument):
            if len(segment) > 1:
                # Nothing written; find the culprit by appending the commands one by one.
                for planned in segment:
                    planned.envelope.solo = True
                    retry.append(planned.envelope)
                    retry.extend(planned.followers or ())
            else:
                for planned in segment:
                    self._fail(planned, error)
            return False
        # Unknown outcome (StoreUnavailable, StoreFull, closed...): the caller gets the
        # error and the actor reloads before anything else.
        self.unsure = True
        host.restarted()
        for planned in segment:
            self._fail(planned, error)
        return True

    def _give(self, planned: _Planned, result: CommandResult[Any]) -> None:
        """Answer a command whose place in the plan committed: its held-back verdict,
        or `result` (a state query: the state there)."""
        if planned.envelope.command is READ_STATE:
            planned.envelope.reply(planned.state)
            return
        error = planned.error
        if error is None:
            self._answer(planned, result)
            return
        self._refuse(planned.envelope, error)
        for follower in planned.followers or ():
            follower.fail(error)

    def _answer(self, planned: _Planned, result: CommandResult[Any]) -> None:
        host = self.host
        host.answered()
        envelope = planned.envelope
        if envelope.future is not None and envelope.future.done():
            host.dropped_reply()  # its caller gave up (timeout, cancellation)
        envelope.reply(result)
        command_id = envelope.command_id
        if command_id is not None and result.events:
            duplicate = self._remember(command_id, envelope.command, result)
            for follower in planned.followers or ():
                follower.reply(duplicate)

    def _fail(self, planned: _Planned, error: BaseException) -> None:
        planned.envelope.fail(error)
        for follower in planned.followers or ():
            follower.fail(error)


def _decide_again(segments: list[list[_Planned]], retry: list[Envelope]) -> None:
    """Send the commands of `segments` (which wrote nothing) back to be decided again."""
    for segment in segments:
        for planned in segment:
            retry.append(planned.envelope)
            retry.extend(planned.followers or ())
    segments.clear()


_MAX_FOREIGN = 256  # events of its stream an actor keeps from the follower

_NO_EVENTS = AppendResult("", 0, 0, 0, 0)
READ_STATE = object()
"""A mailbox message asking the actor for its state (answered in mailbox order)."""


class _Parked(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _refusal(error: BaseException | None, stream_id: str) -> BaseException:
    if error is None or not isinstance(error, Exception):
        return ShuttingDown(
            f"the actor for {stream_id!r} stopped before handling the command; it was not applied"
        )
    return error
