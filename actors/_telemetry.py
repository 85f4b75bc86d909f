"""The actor runtime's telemetry: a span per ask or tell, a span per event a process
manager handles, command metrics, and gauges over the live systems and managers.

Everything here runs only while `store.telemetry` is on; the hooks in the router, the
process managers and the system check `telemetry.active` (or `tracer`, `meter`) first.

Causation: an ask's span context is put in its envelope as W3C trace context
(`traceparent`, through the API's global propagator) and the actor stores it as the
metadata of the append that carries the command, so its events carry it. A process
manager handling such an event continues that trace: its span's parent is the context
the event carries, and the commands it sends are that span's children.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from actors._aggregate import CommandResult
from actors._errors import Rejected
from actors._mailbox import Envelope
from store import RecordedEvent, telemetry

__all__ = [
    "dead_letter",
    "handling",
    "traced_ask",
    "traced_tell",
    "watch_process",
    "watch_system",
]

R = TypeVar("R", bound=CommandResult[Any])

AGGREGATE = "esactors.aggregate"
STREAM_ID = "esactors.stream_id"
COMMAND = "esactors.command"
OUTCOME = "esactors.outcome"


class _SystemLike(Protocol):
    @property
    def accepting(self) -> bool: ...
    def statistics(self) -> Any: ...


class _ProcessLike(Protocol):
    name: str

    @property
    def running(self) -> bool: ...
    @property
    def position(self) -> int: ...


_systems: weakref.WeakSet[Any] = weakref.WeakSet()
# running process managers -> the head of the log they follow (their bus's)
_processes: weakref.WeakKeyDictionary[Any, Callable[[], int]] = weakref.WeakKeyDictionary()


class _Instruments:
    __slots__ = ("commands", "dead_letters", "duration", "meter")

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self.commands = meter.create_counter(
            "esactors.commands", unit="{command}", description="Commands asked, by outcome"
        )
        self.duration = meter.create_histogram(
            "esactors.command.duration", unit="ms", description="Time from ask to answer"
        )
        self.dead_letters = meter.create_counter(
            "esactors.process.dead_letters",
            unit="{event}",
            description="Steps a process manager parked",
        )
        meter.create_observable_gauge(
            "esactors.actors.live", [self._live], unit="{actor}", description="Live actors"
        )
        meter.create_observable_gauge(
            "esactors.actors.tasks",
            [self._tasks],
            unit="{actor}",
            description="Live aggregate actors with a task of their own (working or waiting)",
        )
        meter.create_observable_gauge(
            "esactors.mailbox.queued",
            [self._queued],
            unit="{command}",
            description="Commands waiting in all mailboxes",
        )
        meter.create_observable_gauge(
            "esactors.mailbox.depth",
            [self._depth],
            unit="{command}",
            description="Commands waiting in the deepest mailbox",
        )
        meter.create_observable_gauge(
            "esactors.process.position",
            [self._process_position],
            unit="{position}",
            description="Global position a process manager has handled up to",
        )
        meter.create_observable_gauge(
            "esactors.process.lag",
            [self._process_lag],
            unit="{event}",
            description="Positions between the log's head and a process manager's position",
        )

    # The gauges read the objects registered while this meter is current.
    def _statistics(self) -> list[Any]:
        if telemetry.meter is not self.meter:
            return []
        return [system.statistics() for system in list(_systems) if system.accepting]

    def _live(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        found = self._statistics()
        return [Observation(sum(s.live_actors for s in found))] if found else []

    def _tasks(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        found = self._statistics()
        return [Observation(sum(s.actor_tasks for s in found))] if found else []

    def _queued(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        found = self._statistics()
        return [Observation(sum(s.queued for s in found))] if found else []

    def _depth(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        found = self._statistics()
        return [Observation(max(s.max_mailbox_depth for s in found))] if found else []

    def _running(self) -> list[tuple[_ProcessLike, Callable[[], int]]]:
        if telemetry.meter is not self.meter:
            return []
        return [(handle, head) for handle, head in list(_processes.items()) if handle.running]

    def _process_position(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(h.position, {"esactors.process": h.name}) for h, _ in self._running()]

    def _process_lag(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(max(head() - h.position, 0), {"esactors.process": h.name})
            for h, head in self._running()
        ]


_instruments = telemetry.Instruments(_Instruments)


def _tag(command: object) -> str:
    config = getattr(type(command), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return tag if isinstance(tag, str) else type(command).__name__


def _outcome(error: BaseException) -> str:
    return "rejected" if isinstance(error, Rejected) else "error"


async def traced_ask(
    aggregate: str, stream_id: str, envelope: Envelope, sending: Coroutine[Any, Any, R]
) -> R:
    """Await `sending` (the ask of `envelope`) inside an `esactors.ask` span, and count
    it: outcome, duration."""
    tracer = telemetry.tracer
    instruments = _instruments.current
    started = time.perf_counter()
    outcome = "error"
    try:
        if tracer is None:
            result = await sending
        else:
            result = await _in_span(tracer, aggregate, stream_id, envelope, sending)
        outcome = "duplicate" if result.duplicate else "ok"
        return result
    except BaseException as exc:
        outcome = _outcome(exc)
        raise
    finally:
        if instruments is not None:
            attributes = {AGGREGATE: aggregate, OUTCOME: outcome}
            instruments.commands.add(1, attributes)
            instruments.duration.record((time.perf_counter() - started) * 1000, attributes)


async def _in_span(
    tracer: Any, aggregate: str, stream_id: str, envelope: Envelope, sending: Coroutine[Any, Any, R]
) -> R:
    from opentelemetry import propagate
    from opentelemetry.trace import StatusCode

    attributes = {AGGREGATE: aggregate, STREAM_ID: stream_id, COMMAND: _tag(envelope.command)}
    with tracer.start_as_current_span(
        "esactors.ask",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        envelope.metadata = carrier or None
        try:
            result = await sending
        except BaseException as exc:
            outcome = _outcome(exc)
            span.set_attribute(OUTCOME, outcome)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.record_exception(exc)
            if outcome == "error":
                span.set_status(StatusCode.ERROR, type(exc).__qualname__)
            raise
        span.set_attribute("esactors.version", result.version)
        span.set_attribute("esactors.position", result.position)
        span.set_attribute(OUTCOME, "duplicate" if result.duplicate else "ok")
        return result


def traced_tell(
    aggregate: str, stream_id: str, envelope: Envelope, offer: Callable[[], None]
) -> None:
    """Enqueue `envelope` with `offer` inside an `esactors.ask` span (`esactors.tell`
    true; outcome `ok` once it is in the mailbox: its fate is nobody's to hear)."""
    tracer = telemetry.tracer
    if tracer is None:
        offer()
        return
    from opentelemetry import propagate
    from opentelemetry.trace import StatusCode

    attributes: dict[str, str | bool] = {
        AGGREGATE: aggregate,
        STREAM_ID: stream_id,
        COMMAND: _tag(envelope.command),
        "esactors.tell": True,
    }
    with tracer.start_as_current_span(
        "esactors.ask", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        envelope.metadata = carrier or None
        try:
            offer()
        except Exception as exc:
            span.set_attribute(OUTCOME, "error")
            span.set_attribute("error.type", type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__qualname__)
            raise
        span.set_attribute(OUTCOME, "ok")


async def handling(manager: str, recorded: RecordedEvent, work: Awaitable[None]) -> None:
    """Await `work` (a process manager carrying `recorded` through) inside an
    `esactors.process` span whose parent is the trace context `recorded` carries."""
    tracer = telemetry.tracer
    if tracer is None:
        await work
        return
    from opentelemetry import propagate
    from opentelemetry.context import Context

    # No context stored: a root (never the context the manager's task inherited).
    parent = propagate.extract(recorded.metadata) if recorded.metadata else Context()
    with tracer.start_as_current_span(
        "esactors.process",
        context=parent,
        attributes={
            "esactors.process": manager,
            "esactors.event": recorded.event_type,
            STREAM_ID: recorded.stream_id,
            "esactors.position": recorded.position,
        },
    ):
        await work


def dead_letter(manager: str) -> None:
    """Count a step process manager `manager` parked."""
    instruments = _instruments.current
    if instruments is not None:
        instruments.dead_letters.add(1, {"esactors.process": manager})


def watch_system(system: _SystemLike) -> None:
    """Report `system` in the live-actor and mailbox gauges while it accepts commands."""
    _systems.add(system)


def watch_process(handle: _ProcessLike, head: Callable[[], int]) -> None:
    """Report `handle`'s position, and its lag behind `head()`, while it runs."""
    _processes[handle] = head
