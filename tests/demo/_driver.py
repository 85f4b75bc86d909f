"""A pure, in-memory stand-in for the runtime that drives process managers.

It decides commands against folded states, records events with versions and positions
as the store would, and feeds process managers their events, sending what they
dispatch (and what they compensate with). Like the runtime, which handles events of
different streams concurrently, it keeps each stream's events in order but may pick
any stream's next event (at random with an `rng`); which manager steps next can be
random too. No I/O, no tasks: whole flows (transfers, orders) stay pure and
deterministic, and Hypothesis explores the interleavings.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from actors import Aggregate, Command, Dispatch, Event, ProcessManager, Rejected
from store import RecordedEvent


class World:
    """Aggregates' states and the global log, plus process-manager cursors."""

    def __init__(self, *managers: ProcessManager) -> None:
        self.log: list[RecordedEvent] = []
        self.states: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.managers = managers
        self.cursors = [0] * len(managers)  # every event below is handled
        self.handled: list[set[int]] = [set() for _ in managers]
        self.refusals: list[tuple[Command, Rejected]] = []
        self.unexpected: list[tuple[Command, Rejected]] = []

    def state(self, aggregate: type[Aggregate[Any, Any, Any]], aggregate_id: str) -> Any:
        """The current state of one instance."""
        return self.states.get(aggregate.stream_id(aggregate_id), aggregate.initial)

    def send(
        self, aggregate: type[Aggregate[Any, Any, Any]], aggregate_id: str, command: Command
    ) -> list[Event]:
        """Decide `command` and record its events (raises the aggregate's `Rejected`)."""
        instance = aggregate()
        stream_id = aggregate.stream_id(aggregate_id)
        state = self.states.get(stream_id, instance.initial)
        events = list(instance.decide(state, command))
        version = self.versions.get(stream_id, 0)
        for event in events:
            state = instance.evolve(state, event)
            version += 1
            tag = type(event).__struct_config__.tag
            assert isinstance(tag, str)
            self.log.append(
                RecordedEvent(
                    stream_id=stream_id,
                    version=version,
                    position=len(self.log) + 1,
                    event_type=tag,
                    schema_version=1,
                    event=event,
                    metadata={},
                    recorded_at=1_700_000_000.0 + len(self.log),
                )
            )
        self.states[stream_id] = state
        self.versions[stream_id] = version
        return events

    def _dispatch(
        self, manager: ProcessManager, recorded: RecordedEvent, dispatches: Sequence[Dispatch]
    ) -> None:
        for dispatch in dispatches:
            try:
                self.send(dispatch.aggregate, dispatch.aggregate_id, dispatch.command)
            except Rejected as error:
                self.refusals.append((dispatch.command, error))
                compensation = manager.compensate(recorded, dispatch, error)
                for extra in compensation:
                    try:
                        self.send(extra.aggregate, extra.aggregate_id, extra.command)
                    except Rejected as again:  # a compensation must never be refused
                        self.unexpected.append((extra.command, again))

    def _ready(self, index: int) -> list[RecordedEvent]:
        """The next unhandled event of each stream manager `index` reacts to."""
        manager = self.managers[index]
        done = self.handled[index]
        while self.cursors[index] < len(self.log):  # move the watermark over done ones
            recorded = self.log[self.cursors[index]]
            if recorded.position in done or not isinstance(recorded.event, manager.event_types):
                done.discard(recorded.position)
                self.cursors[index] += 1
            else:
                break
        firsts: dict[str, RecordedEvent] = {}
        for recorded in self.log[self.cursors[index] :]:
            if recorded.position not in done and isinstance(recorded.event, manager.event_types):
                firsts.setdefault(recorded.stream_id, recorded)
        return list(firsts.values())

    def step(self, index: int, rng: random.Random | None = None) -> bool:
        """Let manager `index` handle one event (the oldest ready one, or a random ready
        one with `rng`); False when it has none left."""
        ready = self._ready(index)
        if not ready:
            return False
        recorded = rng.choice(ready) if rng is not None else ready[0]
        self.handled[index].add(recorded.position)
        manager = self.managers[index]
        self._dispatch(manager, recorded, manager.react(recorded))
        return True

    def settle(self, rng: random.Random | None = None, limit: int = 100_000) -> int:
        """Step managers until none has work (in a random order with `rng`); returns
        the steps taken."""
        steps = 0
        busy = list(range(len(self.managers)))
        while busy:
            index = rng.choice(busy) if rng is not None else busy[0]
            if self.step(index, rng):
                steps += 1
                busy = list(range(len(self.managers)))
                if steps > limit:
                    raise AssertionError(f"process managers still busy after {limit} steps")
            else:
                busy.remove(index)
        return steps
