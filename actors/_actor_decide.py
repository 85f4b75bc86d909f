"""Deciding a batch: every command of the batch decided in order on the state the
commands before it leave, with resends answered from what the actor or the store knows
of their command id, then the plan handed to `_Settling._persist`."""

from __future__ import annotations

from typing import Any

from actors._actor_settle import _Settling
from actors._actor_state import READ_STATE, _Planned, _Restart
from actors._aggregate import CommandResult
from actors._errors import CommandFailed, EvolveError, Rejected
from actors._mailbox import Envelope
from store import IdempotencyConflict

__all__: list[str] = []


class _Deciding(_Settling):
    """Deciding and running one batch (see the module docs)."""

    __slots__ = ()

    async def _handle(self, batch: list[Envelope]) -> None:
        todo = [envelope for envelope in batch if envelope.wanted()]
        self._current = todo
        while todo:
            todo, reload = await self._attempt(todo)
            if reload:
                await self._catch_up()
        self._current = ()

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
            self._current = ()
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
        recent = self.recent
        known = None if recent is None else recent.get(command_id)
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

    def _conflict(self, envelope: Envelope, command_id: str) -> None:
        if envelope.wanted():
            self.host.rejected()
            envelope.fail(IdempotencyConflict(command_id, self.stream_id, self.stream_id))
