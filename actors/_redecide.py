"""Deciding a command again inside the store's write transaction (`Redecision`).

A command run inline, or riding on an append in flight, is decided on the state the
actor knows. When another process appended to the stream meanwhile, the store would
refuse its append as a conflict, and the actor would read the stream and decide again:
a wasted decision, a read, and another commit's wait, during which the other process
may well append again. Given a `Redecision`, the store's writer instead hands it the
events the append missed and the decision is made again on the stream's latest state:
SQLite's thread writer reads them under the write lock inside its transaction, so
nothing can come between the decision and its commit; PostgreSQL's, before it sends
the batch, on what other processes' notifications announced (its statement still
checks the version). The append then commits with the new events. `decide_in_store`
turns it off.

Runs on the writer's thread while the actor waits for the append's answer: it reads
only what it was given (the state the command was decided on, the command, the
aggregate's pure `decide` and `evolve`) and writes only its own fields, which the actor
reads once the answer came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors._actor_state import READ_STATE
from actors._aggregate import Aggregate
from store import RecordedEvent

__all__: list[str] = []


class Redecision:
    """The store's `Redecision` of one append: the commands whose events it carries,
    decided in order on the state the ones before leave (a state query among them
    answered with the state there).

    Decided again, `steps` holds each command's new events and the state after them,
    `events` all of them (what the append committed instead), `state` the state after
    the last and `last` the version they end at. An append chained to another (`prev`,
    the one decided before it, on whose outcome it was decided) is decided again on
    what that one left when that one was, and the events missed after it.
    """

    __slots__ = (
        "_aggregate",
        "_base",
        "_commands",
        "_prev",
        "_version",
        "events",
        "last",
        "state",
        "steps",
    )

    def __init__(
        self,
        aggregate: Aggregate[Any, Any, Any],
        commands: Sequence[object],
        base: Any,
        version: int,
        prev: Redecision | None,
    ) -> None:
        self._aggregate = aggregate
        self._commands = commands
        self._base = base  # the state the commands were decided on, at `_version`
        self._version = version
        self._prev = prev
        self.steps: list[tuple[tuple[Any, ...], Any]] = []
        self.events: tuple[Any, ...] | None = None
        self.state: Any = None
        self.last = 0

    def __call__(self, missed: list[RecordedEvent], version: int) -> Sequence[Any] | None:
        """The commands' events decided on the state the `missed` events lead to (the
        stream at `version`), or None to leave the append refused: the events do not
        reach `version`, a command writes nothing there (a refusal or a no-op is
        answered on the actor's task, which confirms the state first), or domain code
        failed (the actor's task reports it)."""
        aggregate = self._aggregate
        decide = aggregate.decide
        evolve = aggregate.evolve
        prev = self._prev
        if prev is not None and prev.events is not None:
            state, at = prev.state, prev.last  # what the one before now leaves
        else:
            state, at = self._base, self._version
        for recorded in missed:
            if recorded.version != at + 1:
                return None
            state = evolve(state, recorded.event)
            at += 1
        if at != version:
            return None
        steps: list[tuple[tuple[Any, ...], Any]] = []
        every: tuple[Any, ...] = ()  # one command's events are this tuple itself
        after = state
        for command in self._commands:
            if command is READ_STATE:  # a state query: answered with the state here
                steps.append(((), after))
                continue
            try:
                events = tuple(decide(after, command))
            except Exception:  # noqa: BLE001 - a refusal too: answered on the actor's task
                return None
            if not events:
                return None
            for event in events:
                after = evolve(after, event)
            steps.append((events, after))
            every += events
        # From here on: the state this append now rests on, should the transaction be
        # redone (its appends decided again from there).
        self._base, self._version = state, version
        self.steps, self.events, self.state = steps, every, after
        self.last = version + len(every)
        return every
