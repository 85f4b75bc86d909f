"""The instruments: projection lag samples, the acknowledgement log and peak memory."""

from __future__ import annotations

import os
import random
import resource
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence

from bus import EventBus
from demo.bank import Balances, BalancesView
from store import EventStore, RecordedEvent

__all__ = ["MAX_LAG_SAMPLES"]

MAX_LAG_SAMPLES = 200_000
"""Projection lag samples kept (a uniform reservoir sample beyond that many events)."""

SAMPLE_EVERY = 8
"""The lag instruments measure the events at every `SAMPLE_EVERY`th position: positions
run through every commit in order, so these are a uniform sample of them, and the same
events in every process (a several-process run pairs one process's acknowledgements
with the others' applied events by position). Measuring every event cost a worker of a
several-process run more than a microsecond per command, each of its events applied
and acknowledged being stamped, which one process alone does not pay."""

MAX_PUBLISHED_BATCHES = 65_536
"""Publication stamps kept for the lag (one per committed batch not yet applied)."""


class _LagSampler:
    """Collects the projection's lag (ms) from publication to applied: from the moment
    a commit was handed to this process's bus (the writer's commit listener, when its
    callers are answered; or the follower, for commits of other processes) to the read
    model having applied the event. `observe` takes the events at every `SAMPLE_EVERY`th
    position (the others return at once); every sample up to `MAX_LAG_SAMPLES`, then a
    uniform reservoir sample of that size."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.seen = 0
        self.measuring = False
        self._rng = random.Random(0)
        # (last position of a published batch, when), in position order; bounded: a
        # read model further behind than this many batches is measured from the oldest.
        self._published: deque[tuple[int, float]] = deque(maxlen=MAX_PUBLISHED_BATCHES)
        self._last = 0

    def watch(self, store: EventStore, bus: EventBus) -> None:
        """Stamp every batch `store` commits and every batch `bus`'s follower reads."""
        store.add_commit_listener(self.published)
        bus.add_external_listener(self.published)

    def published(self, batch: Sequence[RecordedEvent]) -> None:
        if batch and batch[-1].position > self._last:
            self._last = batch[-1].position
            self._published.append((self._last, time.perf_counter()))

    def observe(self, recorded: RecordedEvent) -> None:
        position = recorded.position
        if position % SAMPLE_EVERY:
            return
        published = self._published
        while len(published) > 1 and published[0][0] < position:
            published.popleft()
        if not self.measuring or not published:
            return
        self.seen += 1
        lag = (time.perf_counter() - published[0][1]) * 1000.0
        if len(self.samples) < MAX_LAG_SAMPLES:
            self.samples.append(lag)
            return
        slot = self._rng.randrange(self.seen)
        if slot < MAX_LAG_SAMPLES:
            self.samples[slot] = lag


class _MeasuredBalances(Balances):
    """`Balances`, plus a lag sample per sampled event (`SAMPLE_EVERY`). Instrumentation
    of the load test: it reads the clock, which a read model proper never does."""

    def __init__(self, sampler: _LagSampler) -> None:
        self.sampler = sampler
        self._observe = sampler.observe

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        # `Balances.apply` named, not `super()`: a tenth of a microsecond less per event.
        view = Balances.apply(self, view, recorded)
        if not recorded.position % SAMPLE_EVERY:
            self._observe(recorded)
        return view


class _Stamps:
    """Wall-clock stamps of a several-process run, per process: position and
    `time.time()` of each measured acknowledgement, and of each event its read model
    applied, at every `SAMPLE_EVERY`th position (the others are not stamped); up to
    `MAX_LAG_SAMPLES` of each (the first ones). Kept in arrays: a tuple
    per stamp would be an object the collector tracks, and with two per command it ran
    the collector several times as often as the runtime alone does."""

    def __init__(self) -> None:
        self.ack_positions = array("q")
        self.ack_times = array("d")
        self.applied_positions = array("q")
        self.applied_times = array("d")
        self.acking = False
        self.applying = False

    def ack(self, position: int) -> None:
        if position % SAMPLE_EVERY:
            return
        if self.acking and len(self.ack_positions) < MAX_LAG_SAMPLES:
            self.ack_positions.append(position)
            self.ack_times.append(time.time())

    def apply(self, position: int) -> None:
        if position % SAMPLE_EVERY:
            return
        if self.applying and len(self.applied_positions) < MAX_LAG_SAMPLES:
            self.applied_positions.append(position)
            self.applied_times.append(time.time())

    @property
    def acks(self) -> list[tuple[int, float]]:
        """(position, time) of each acknowledgement stamped."""
        return list(zip(self.ack_positions, self.ack_times, strict=True))

    @property
    def applied(self) -> list[tuple[int, float]]:
        """(position, time) of each applied event stamped."""
        return list(zip(self.applied_positions, self.applied_times, strict=True))


class _StampedBalances(_MeasuredBalances):
    """`_MeasuredBalances`, plus a wall-clock stamp per sampled event."""

    def __init__(self, sampler: _LagSampler, stamps: _Stamps) -> None:
        super().__init__(sampler)
        self.stamps = stamps
        self._stamp = stamps.apply

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        # Each step named, not through `super()`: this runs for every event of every
        # process, twice per command on two processes.
        view = Balances.apply(self, view, recorded)
        position = recorded.position
        if not position % SAMPLE_EVERY:
            self._observe(recorded)
            self._stamp(position)
        return view


async def _fold_balances(store: EventStore, head: int, page: int = 10_000) -> BalancesView:
    """`Balances` folded over the store's account events up to position `head` (the
    event types must be registered: the `Account` router's)."""
    projection = Balances()
    view = projection.initial_view()
    position = 0
    while position <= head:
        events = await store.read_all(
            from_position=position,
            to_position=head,
            limit=page,
            stream_prefix=projection.stream_prefix,
        )
        for recorded in events:
            view = projection.apply(view, recorded)
        if len(events) < page:
            break
        position = events[-1].position + 1
    return view


class _AckLog:
    """One `os.write` per acknowledged command on an O_APPEND descriptor."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, stream_id: str, version: int, position: int) -> None:
        os.write(self.fd, f"{stream_id}\t{version}\t{position}\n".encode())

    def close(self) -> None:
        os.close(self.fd)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
