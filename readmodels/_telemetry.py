"""The projections' telemetry: how long after its commit an event is applied (a
histogram per batch, not a span per event), position and lag gauges, dead letters.

Runs only while `store.telemetry` has a meter; the hooks check `telemetry.meter` first.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from store import telemetry

__all__ = ["applied", "dead_letter", "watch"]

PROJECTION = "esactors.projection"


class _Watched(Protocol):
    name: str

    @property
    def running(self) -> bool: ...
    def statistics(self) -> Any: ...


_projections: weakref.WeakSet[Any] = weakref.WeakSet()


class _Instruments:
    __slots__ = ("apply_lag", "dead_letters", "meter")

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self.apply_lag = meter.create_histogram(
            "esactors.projection.apply.lag",
            unit="ms",
            description="Time from an event's commit to its projection applying it",
        )
        self.dead_letters = meter.create_counter(
            "esactors.projection.dead_letters",
            unit="{event}",
            description="Events a projection parked",
        )
        meter.create_observable_gauge(
            "esactors.projection.position",
            [self._position],
            unit="{position}",
            description="Global position a projection's view reflects",
        )
        meter.create_observable_gauge(
            "esactors.projection.lag",
            [self._lag],
            unit="{event}",
            description="Positions between the log's head and a projection's position",
        )

    def _statistics(self) -> list[Any]:
        if telemetry.meter is not self.meter:
            return []
        return [p.statistics() for p in list(_projections) if p.running]

    def _position(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(s.position, {PROJECTION: s.name}) for s in self._statistics()]

    def _lag(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(s.lag, {PROJECTION: s.name}) for s in self._statistics()]


_instruments = telemetry.Instruments(_Instruments)


def applied(projection: str, recorded_at: float) -> None:
    """A batch whose last event was committed at `recorded_at` (POSIX seconds) was
    applied by `projection` now."""
    instruments = _instruments.current
    if instruments is not None:
        lag = max(time.time() - recorded_at, 0.0) * 1000
        instruments.apply_lag.record(lag, {PROJECTION: projection})


def dead_letter(projection: str) -> None:
    """Count an event `projection` parked."""
    instruments = _instruments.current
    if instruments is not None:
        instruments.dead_letters.add(1, {PROJECTION: projection})


def watch(handle: _Watched) -> None:
    """Report `handle`'s position and lag while it runs (when metrics are on)."""
    _projections.add(handle)
