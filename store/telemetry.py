"""OpenTelemetry traces and metrics: off unless the application sets OpenTelemetry up.

esactors emits spans and metrics through the OpenTelemetry API (the `otel` extra,
`opentelemetry-api`) when the application has configured a tracer provider or a meter
provider, and costs nothing measurable otherwise: each hook on a hot path is one check
of `tracer`, `meter` or `active` (module attributes, None or False when off).

Whether it is on is decided when a store or an actor system is opened (`resolve`): the
API's global providers are used once the application has set real ones
(`opentelemetry.trace.set_tracer_provider`, `opentelemetry.metrics.set_meter_provider`);
the API's default proxy or no-op providers mean off, and so does the API missing. Set
the providers before opening the system.

`configure(tracer_provider=..., meter_provider=...)` uses the providers given instead
of the global ones (each may be None: that signal off), from now on and until
`reset()`; it is the hook tests use, since the global providers can be set only once
per process. What is emitted is listed in `docs/observability.md`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "INSTRUMENTATION",
    "Instruments",
    "active",
    "configure",
    "meter",
    "on_change",
    "reset",
    "resolve",
    "tracer",
]

T = TypeVar("T")

INSTRUMENTATION = "esactors"
"""The instrumentation scope name of every span and instrument esactors creates."""

tracer: Tracer | None = None
"""The tracer esactors' spans come from; None: tracing is off."""
meter: Meter | None = None
"""The meter esactors' instruments come from; None: metrics are off."""
active = False
"""Whether either is on (the check on hot paths that may do both)."""

_explicit = False
_providers: tuple[object, object] = (None, None)
_listeners: list[Callable[[], None]] = []


def _version() -> str:
    try:
        return importlib.metadata.version(INSTRUMENTATION)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Emit spans to `tracer_provider` and metrics to `meter_provider` (None: that
    signal off), whatever the global providers are, until `reset()`.

    Takes effect at once, for systems already open too (a span or a measurement
    under way finishes with the provider it began with).
    """
    global _explicit
    _explicit = True
    _use(tracer_provider, meter_provider)


def reset() -> None:
    """Turn telemetry off and follow the global providers again (from the next open)."""
    global _explicit
    _explicit = False
    _use(None, None)


def resolve() -> None:
    """Use the API's global providers if the application set real ones (unless
    `configure` chose providers). Called when a store or an actor system opens."""
    if _explicit:
        return
    try:
        from opentelemetry import metrics, trace
    except ImportError:  # the otel extra is not installed: off
        return
    traces: TracerProvider | None = trace.get_tracer_provider()
    if isinstance(traces, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        traces = None  # no provider set (a proxy), or explicitly none
    measures: MeterProvider | None = metrics.get_meter_provider()
    if isinstance(measures, metrics.NoOpMeterProvider) or type(measures).__name__.startswith(
        "_Proxy"
    ):
        measures = None
    _use(traces, measures)


def on_change(listener: Callable[[], None]) -> None:
    """Call `listener` now and whenever the tracer or meter changes (esactors' modules
    build their instruments there)."""
    _listeners.append(listener)
    listener()


class Instruments(Generic[T]):
    """A module's instruments, built by `build` from the current meter: `current` is
    None while metrics are off, and is built again whenever the meter changes."""

    __slots__ = ("_build", "current")

    def __init__(self, build: Callable[[Meter], T]) -> None:
        self._build = build
        self.current: T | None = None
        on_change(self._rebuild)

    def _rebuild(self) -> None:
        self.current = None if meter is None else self._build(meter)


def _use(traces: TracerProvider | None, measures: MeterProvider | None) -> None:
    global tracer, meter, active, _providers
    if _providers[0] is traces and _providers[1] is measures:
        return
    _providers = (traces, measures)
    version = _version()
    tracer = None if traces is None else traces.get_tracer(INSTRUMENTATION, version)
    meter = None if measures is None else measures.get_meter(INSTRUMENTATION, version)
    active = tracer is not None or meter is not None
    for listener in _listeners:
        listener()
