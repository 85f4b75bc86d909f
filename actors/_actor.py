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

import anyio

from actors._actor_decide import _Deciding
from actors._actor_state import READ_STATE, _Planned, _Quarantined, _refusal, _Reload, _Restart
from actors._aggregate import CommandResult
from actors._errors import EvolveError, RestartLimitExceeded
from actors._mailbox import Envelope
from store import StoreError
from store._logging import get_logger

__all__ = ["READ_STATE", "AggregateActor"]


class AggregateActor(_Deciding):
    """Serves one aggregate instance. Created and owned by its `AggregateRouter`.

    Its fields are `ActorState`'s; loading is `_Loading`'s, appending and answering
    `_Settling`'s, deciding a batch `_Deciding`'s. Here: the task's life (wait for the
    predecessor, load, serve the mailbox, restart with backoff) and the inline fast path.
    """

    __slots__ = ()

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """The actor's task: wait for its predecessor, load, serve until closed."""
        host = self.host
        self._log = get_logger("actors", aggregate=host.name, stream_id=self.stream_id)
        error: BaseException | None = None
        try:
            with self._scope:
                if self.predecessor is not None:
                    await self.predecessor.done.wait()
                    self.predecessor = None
                await self._load()
                host.loaded(self.aggregate_id)
                await self._serve()
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

        An idle actor (loaded, waiting for work, nothing queued) would only be
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
        except (_Restart, _Quarantined) as exc:
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
