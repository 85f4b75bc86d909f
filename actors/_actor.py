"""The aggregate actor: loads its stream, then serves its mailbox in batches.

One actor per aggregate instance. It takes every command waiting in its mailbox (up to
`max_batch`), decides them in order against the evolving state, and persists them in
as few appends as possible: consecutive commands without a command id share one
append; a command with a command id gets its own append (the store records the id with
exactly that command's events, in the same transaction). The appends of one batch go
out as one chain (`EventStore.append_chain`), each committed only if the one before it
committed as decided. Each caller
gets its own result or error. Replies go out only after the store committed (durable
ack).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

import anyio

from actors._actor_decide import _Deciding
from actors._actor_state import (
    READ_STATE,
    _new_event,
    _new_scope,
    _Planned,
    _Quarantined,
    _refusal,
    _Reload,
    _Restart,
)
from actors._aggregate import CommandResult
from actors._errors import EvolveError, RestartLimitExceeded
from actors._host import ActorHost
from actors._mailbox import Envelope
from actors._redecide import Redecision
from store import AppendResult, ChainBroken, ConcurrencyError, StoreError

__all__ = ["READ_STATE", "AggregateActor"]


class AggregateActor(_Deciding):
    """Serves one aggregate instance. Created and owned by its `AggregateRouter`.

    Its fields are `ActorState`'s; loading is `_Loading`'s, appending and answering
    `_Settling`'s, deciding a batch `_Deciding`'s. Here: the task's life (wait for the
    predecessor, load, serve the mailbox, restart with backoff, end the task when idle)
    and the inline fast path, which also loads an actor on its first command.
    """

    __slots__ = ()

    def __init__(
        self,
        host: ActorHost,
        aggregate_id: str,
        stream_id: str,
        predecessor: AggregateActor | None,
    ) -> None:
        super().__init__(host, aggregate_id, stream_id, predecessor)
        self.mailbox.owner = self

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """The actor's task (started by `wake`): load if not loaded, serve the mailbox,
        and end either idle (the actor stays live, without a task) or closed and drained
        (the actor ends)."""
        host = self.host
        error: BaseException | None = None
        self._scope = scope = _new_scope()
        try:
            with scope:
                failure = self.failure
                if isinstance(failure, _Quarantined):  # left by a caller's inline load
                    self.failure = None
                    raise failure
                if not self.loaded and not (self.mailbox.closed and not len(self.mailbox)):
                    await self._first_load()
                if self.loaded and await self._serve():
                    return  # idle: the next command runs inline or starts a task again
        except _Quarantined as quarantined:
            error = quarantined.error
        except Exception as exc:  # noqa: BLE001 - a crash stays in this actor: reported
            error = exc
            host.restarted()
            self._log.error("actor.crashed", exc_info=exc)
            host.quarantine(self.aggregate_id, exc)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._scope = None  # the task's own: not kept by an actor at rest
            host.task_ended()
            if self.running:  # not idle: the actor ends
                self._end(error)

    def wake(self) -> None:
        """Start the actor's task if it has none and no caller runs it inline (its
        mailbox calls this when work arrives or it closes, and no task waits on it).
        Closed with nothing to serve (passivated while idle), it ends here instead."""
        if self.running or self.inline:
            return
        if self.mailbox.closed and not len(self.mailbox) and self.failure is None:
            self._end(None)
            return
        self.running = self.busy = True
        self.host.start(self)

    def _end(self, error: BaseException | None) -> None:
        """Close and forget the actor; refuse what it holds with `error`'s refusal."""
        mailbox = self.mailbox
        mailbox.owner = None  # ended: nothing wakes it again
        leftover = [*self._current, *mailbox.drain()]
        self._current = ()
        mailbox.close()
        self.host.forget(self)
        if leftover:
            refusal = _refusal(error, self.stream_id)
            for envelope in leftover:
                envelope.fail(refusal)
        self.ended = True
        if self.done is not None:
            self.done.set()

    async def _first_load(self) -> None:
        """Wait for the predecessor to end, then build the state from the store."""
        predecessor = self.predecessor
        if predecessor is not None:
            if not predecessor.ended:
                done = predecessor.done
                if done is None:
                    done = predecessor.done = _new_event()
                await done.wait()
            self.predecessor = None
        await self._load()
        self.loaded = True
        self.host.loaded(self.aggregate_id)

    async def _serve(self) -> bool:
        """Serve the mailbox until it is closed and drained (False), or until it is
        empty and the system has `idle_actor_tasks` tasks waiting already (True: the
        task ends, the actor stays live)."""
        mailbox = self.mailbox
        host = self.host
        limit = host.options.max_batch
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
                    return False
                if not host.idle_slot():
                    self.running = self.busy = False
                    return True
                self.busy = False
                try:
                    await mailbox.wait()
                finally:
                    host.idle_done()
                    self.busy = True
                continue
            try:
                await self._handle(batch)
                self.in_a_row = 0
            except _Restart:
                await self._restart()

    async def _restart(self) -> None:
        self.in_a_row = restarts = self.in_a_row + 1
        host = self.host
        host.restarted()
        options = host.options
        if restarts > options.max_restarts:
            error = RestartLimitExceeded(self.stream_id, restarts)
            self._log.error("actor.restart_limit", restarts=restarts)
            host.quarantine(self.aggregate_id, error)
            raise _Quarantined(error)
        self._log.warning("actor.restarting", restarts=restarts)
        if restarts > 1:
            delay = min(options.restart_backoff * 2 ** (restarts - 2), options.max_backoff)
            await anyio.sleep(delay)
        await self._load()

    # -- the inline fast path -------------------------------------------------------------

    def claim(self) -> bool:
        """Let the calling task run one command itself, if the actor is idle.

        An idle actor (without a task, or with one waiting for work; nothing queued)
        would only be woken to run this one command: the caller runs it instead, on its
        own task, which saves starting or switching to the actor's task; on the first
        command, the caller also loads the actor. Commands still never interleave:
        while the caller runs, the actor task does not take work.
        """
        if (
            self.busy
            or self.inline
            or self.failure is not None
            or self.mailbox.closed
            or len(self.mailbox)
            or (self.loaded and self.behind > self.version and not self._absorb())
        ):
            return False
        self.inline = True
        self.holders = 1
        return True

    async def run_inline(self, envelope: Envelope) -> bool:
        """Decide, persist and answer `envelope` on the caller's task (after `claim`).

        On the actor's first command the caller loads it first; commands that came
        meanwhile wait in the mailbox, and `envelope` then joins them at its head, to
        be decided as one batch with them by the actor's task: True is returned, and
        the caller waits for its reply.

        Cancellation: the caller's command is then of unknown outcome (its append may
        commit), so the actor task reloads from the store before it serves anything
        else.
        """
        try:
            if not self.loaded:
                await self._first_load()
                if len(self.mailbox):
                    self.mailbox.requeue([envelope])
                    return True
                if self.behind > self.version:
                    await self._catch_up()
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
                    redecision = (
                        Redecision(self.aggregate, (envelope.command,), self.state, version, None)
                        if host.options.decide_in_store
                        else None
                    )
                    try:
                        result = await self._lead(envelope, events, state, version, redecision)
                    except Exception as exc:  # noqa: BLE001 - settled like any failed append
                        self.tip = None  # nothing more rides on it
                        planned = _Planned(envelope, events, state, version + len(events))
                        todo, reload = self._settle([[planned]], [exc], [])
                        if reload:
                            await self._catch_up()
                    else:
                        if redecision is not None and redecision.events is not None:
                            # Decided again in the store.
                            events, state, version = self._redecided(redecision, result)
                        if self._committed(envelope, events, state, version, result):
                            await host.save_snapshot(self.stream_id, result.last_version, state)
                        return False
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
        except (_Restart, _Quarantined) as exc:
            self.failure = exc
        except Exception as exc:  # noqa: BLE001 - handed to the actor task, which reports it
            self.failure = exc
        except BaseException:
            self.tip = None
            if self.loaded:  # else cancelled while loading: nothing was appended
                self.failure = _Reload()
            raise
        finally:
            self._leave()
        return False

    def _lead(
        self,
        envelope: Envelope,
        events: tuple[Any, ...],
        state: Any,
        version: int,
        redecision: Redecision | None,
    ) -> Awaitable[AppendResult]:
        """Queue the append of a command run inline, as the `tip` commands that come
        meanwhile may ride on (with `append` when the store cannot chain)."""
        queue = self.host.queue_append
        item = (
            None
            if queue is None
            else queue(self.stream_id, events, version, envelope.metadata, None, redecision)
        )
        if item is None:
            return self.store.append(
                self.stream_id, events, expected_version=version, metadata=envelope.metadata
            )
        self.tip, self.tip_state = item, state
        self.tip_version = version + len(events)
        return item.future

    async def ride(self, envelope: Envelope) -> bool | None:
        """Run `envelope` on the caller's task while other callers run the actor inline
        with an append in flight (the `tip`): decided on the state that append leaves,
        appended chained to it (committed only if it committed as decided), answered
        when its own append commits. Saves the round a command to a busy actor would
        otherwise wait in the mailbox: for the append in flight, then for its own.

        None: it cannot ride (nothing in flight to chain to, commands wait in the
        mailbox, the actor must catch up or recover, the command writes nothing on that
        state, the store's queue is full); deliver it to the mailbox. False: answered.
        True: it is to be decided again (an append before it did not commit as
        decided): it joins the head of the mailbox, in order, once no caller runs the
        actor inline; wait for its reply.
        """
        tip = self.tip
        if (
            tip is None
            or len(self.mailbox)
            or self.failure is not None
            or self.mailbox.closed
            or (self.behind > self.tip_version and tip.redecide is None)
            or self.holders > self.host.options.max_batch
        ):
            return None
        decided = self._decide(envelope, self.tip_state)
        if not (isinstance(decided, tuple) and decided[0]):
            return None  # refusals and no-ops are answered on committed state only
        events, state = decided
        host = self.host
        version = self.tip_version
        queue = host.queue_append
        assert queue is not None  # a tip is an item it queued
        redecision = (
            Redecision(self.aggregate, (envelope.command,), self.tip_state, version, tip.redecide)
            if host.options.decide_in_store
            else None
        )
        item = queue(self.stream_id, events, version, envelope.metadata, tip, redecision)
        if item is None:
            return None
        self.tip, self.tip_state = item, state
        self.tip_version = version + len(events)
        self.holders += 1
        host.rode()
        try:
            try:
                result = await item.future
            except ChainBroken:
                # The exception's traceback holds this frame: without the appends
                # (which the collector does not track) it holds no cycle back to it.
                item = tip = None
                self.tip = None
                self._derail([envelope])
                return True
            except Exception as exc:  # noqa: BLE001 - settled like any failed append
                item = tip = None  # as above
                self.tip = None
                planned = _Planned(envelope, events, state, version + len(events))
                retry, reload = self._settle([[planned]], [exc], [])
                if reload and not isinstance(exc, ConcurrencyError) and self.failure is None:
                    # Of unknown outcome: the actor's task waits for the store to
                    # settle it, then reloads. (A conflict wrote nothing: the task
                    # catches up to the version it saw before serving, as usual.)
                    self.failure = _Reload()
                if retry:
                    self._derail(retry)
                    return True
                return False
            if redecision is not None and redecision.events is not None:
                # Decided again in the store (its first version may still be the one it
                # was decided at: the append before it may have been decided again too).
                events, state, version = self._redecided(redecision, result)
            if self._committed(envelope, events, state, version, result):
                await host.save_snapshot(self.stream_id, result.last_version, state)
            return False
        except BaseException:
            self.tip = None
            if self.failure is None:
                self.failure = _Reload()  # its append may commit: reload before serving
            raise
        finally:
            self._leave()

    def _redecided(
        self, redecision: Redecision | None, result: AppendResult
    ) -> tuple[tuple[Any, ...], Any, int]:
        """A command's append the store decided again (`Redecision`) committed: its
        events, the state they leave and the version it was decided on. Nothing more
        rides on it: the commands riding on it were decided on the state it was first
        decided to leave (the store decided them again too, or broke their chain)."""
        assert redecision is not None, result
        assert redecision.events is not None, result
        if self.tip is not None and self.tip.redecide is redecision:
            self.tip = None
        self.host.redecided()
        return redecision.events, redecision.state, result.first_version - 1

    def _committed(
        self,
        envelope: Envelope,
        events: tuple[Any, ...],
        state: Any,
        version: int,
        result: AppendResult,
    ) -> bool:
        """The append of `envelope`'s `events`, decided at `version`, committed: the
        actor takes the state it leaves and answers. Whether a snapshot is due."""
        last = result.last_version
        position = result.last_position
        if last > self.version:  # never back: a later append's answer may come first
            self.state, self.version, self.position = state, last, position
        self.host.answered()
        envelope.reply(CommandResult(events, last, position))
        self.in_a_row = 0
        every = self.host.snapshot_every
        return every is not None and last // every != version // every

    def _derail(self, envelopes: list[Envelope]) -> None:
        derailed = self.derailed
        if derailed is None:
            self.derailed = list(envelopes)
        else:
            derailed.extend(envelopes)

    def _leave(self) -> None:
        """A caller running the actor inline (or riding) is done; the last one hands
        what is left to the actor's task."""
        self.holders -= 1
        if not self.holders:
            self._inline_done()

    def _inline_done(self) -> None:
        """No caller runs the actor inline any more: hand what is left (riders'
        commands to decide again first) to the actor's task."""
        self.inline = False
        self.tip = self.tip_state = None
        mailbox = self.mailbox
        derailed = self.derailed
        if derailed is not None:
            self.derailed = None
            mailbox.requeue(derailed)
        if self.running:
            # Wake the actor task if it waits for us (busy: it was woken meanwhile, by
            # a command or by closing), or has work to do.
            if self.busy or self.failure is not None or len(mailbox):
                mailbox.poke()
        elif self.failure is not None or len(mailbox) or mailbox.closed:
            self.wake()
