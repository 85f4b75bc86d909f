"""Appending a decided plan and answering by the outcome: the plan cut into appends
(consecutive commands without a command id share one; a command with an id goes alone),
appended as one chain, each committed only if the ones before it committed as decided; then
every command answered from what committed, refused with its held-back verdict, or
handed back to be decided again on the stored state."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from actors._actor_load import _Loading
from actors._actor_state import _NO_EVENTS, READ_STATE, _decide_again, _Planned
from actors._aggregate import CommandResult
from actors._errors import EvolveError, Rejected, TooManyAttempts
from actors._mailbox import Envelope
from actors._redecide import Redecision
from store import (
    AppendResult,
    ChainBroken,
    ChainedAppend,
    ConcurrencyError,
    IdempotencyConflict,
    InvalidArgument,
    LeaseLost,
    StoreError,
)

__all__: list[str] = []


class _Settling(_Loading):
    """Persisting a plan and settling its commands (see the module docs)."""

    __slots__ = ()

    async def _persist(self, plan: list[_Planned]) -> tuple[list[Envelope], bool]:
        """Append the plan's events; answer the committed commands.

        Returns the envelopes to decide again and whether the state must be reloaded.
        """
        segments = self._segments(plan)
        outcomes: list[AppendResult | BaseException | None] = [None] * len(segments)
        base = self.version
        # On the actor task, the appends are shielded: a cancelled actor (shutdown past
        # its grace) still learns the outcome and answers. A caller running inline is
        # not shielded; its cancellation makes the actor reload (see `run_inline`).
        if self.inline:
            await self._append_in_order(segments, outcomes, base)
        else:
            scope = self._scope
            assert scope is not None  # the actor's task runs this: `run` set it
            scope.shield = True
            try:
                await self._append_in_order(segments, outcomes, base)
            finally:
                scope.shield = False
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

    async def _append_in_order(
        self,
        segments: list[list[_Planned]],
        outcomes: list[AppendResult | BaseException | None],
        expected: int,
    ) -> None:
        """Append the segments in order, each committed only if the ones before it
        committed as decided (it was decided on the state they leave): a chain
        (`append_chain`), which the store may commit in one batch. From the first that
        did not, the rest stay None (decided again). Not as separate appends: a later
        one could then commit on top of another process's events when an earlier one
        failed and the other process had written as many events."""
        if len(segments) == 1:  # the common case: one append, no chain
            segment = segments[0]
            redecision = self._redecision(segment, expected)
            outcome = outcomes[0] = await self._append(segment, expected, redecision)
            if (
                redecision is not None
                and redecision.events is not None
                and isinstance(outcome, AppendResult)
            ):
                # Decided again in the store, on the events another process appended:
                # the plan is what that decided.
                self.host.redecided()
                version = outcome.first_version - 1
                for planned, (events, state) in zip(segment, redecision.steps, strict=True):
                    version += len(events)
                    planned.events, planned.state, planned.version = events, state, version
            return
        links: list[ChainedAppend] = []
        link_of: dict[int, int] = {}  # segment index: its link's index (those with events)
        for index, segment in enumerate(segments):
            link = _link(segment)
            if link is not None:
                link_of[index] = len(links)
                links.append(link)
        try:
            results = await self.store.append_chain(
                self.stream_id, links, expected_version=expected
            )
        except Exception as exc:  # noqa: BLE001 - the first append's outcome; the rest unsent
            results = [exc]
        for index in range(len(segments)):
            at = link_of.get(index)
            if at is None:
                outcomes[index] = _NO_EVENTS
                continue
            if at >= len(results) or isinstance(results[at], ChainBroken):
                return
            outcome = outcomes[index] = results[at]
            if not isinstance(outcome, AppendResult) or outcome.duplicate:
                return

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

    def _redecision(self, segment: list[_Planned], expected: int) -> Redecision | None:
        """The `Redecision` of a segment's append, if the store may decide it again: its
        commands each wrote events (or are state queries), carry no command id and no
        fence."""
        host = self.host
        if not host.options.decide_in_store or host.queue_append is None:
            return None
        for planned in segment:
            envelope = planned.envelope
            if (
                not (planned.events or envelope.command is READ_STATE)
                or planned.error is not None
                or envelope.command_id is not None
                or envelope.fence is not None
            ):
                return None
        if not any(planned.events for planned in segment):
            return None  # nothing to append
        commands = [planned.envelope.command for planned in segment]
        return Redecision(self.aggregate, commands, self.state, expected, None)

    async def _append(
        self, segment: list[_Planned], expected: int, redecision: Redecision | None = None
    ) -> AppendResult | BaseException:
        link = _link(segment)
        if link is None:
            return _NO_EVENTS
        if redecision is not None:
            queue = self.host.queue_append
            assert queue is not None  # `_redecision` checked
            try:
                item = queue(self.stream_id, link.events, expected, link.metadata, None, redecision)
                if item is not None:
                    return await item.future
            except Exception as exc:  # noqa: BLE001 - as below
                # Without its traceback: it holds this frame and its `item`, whose future
                # holds the exception, through an append the collector does not track.
                return exc.with_traceback(None)
        try:
            return await self.store.append(
                self.stream_id,
                link.events,
                expected_version=expected,
                command_id=link.command_id,
                metadata=link.metadata,
                fence=link.fence,
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
            # version that append saw, which the concurrent appends have often passed by
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
            if recent is None:
                recent = self.recent = OrderedDict()
            recent[command_id] = (command, result)
            if len(recent) > limit:
                recent.popitem(last=False)
        return result

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


def _link(segment: list[_Planned]) -> ChainedAppend | None:
    """The append of `segment`'s events (None: it has none): a command alone carries its
    command id and fence; the first command's metadata (its trace context, if traced)."""
    events = [event for planned in segment for event in planned.events]
    if not events:
        return None
    envelope = segment[0].envelope
    if len(segment) == 1:
        return ChainedAppend(events, envelope.command_id, envelope.metadata, envelope.fence)
    return ChainedAppend(events, None, envelope.metadata)
