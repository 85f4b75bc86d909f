"""The store's telemetry: one span and two measurements per committed batch.

Called by the writer (`store._answer.answer_batch`) only while `store.telemetry.active`.
The span `esactors.store.commit` is a root of its own trace, linked to the spans that
asked for its appends (the trace context an append's metadata carries, `traceparent`,
as the actors store it): a batch carries the appends of many traces, and a span has
one parent but any number of links, all given when it starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from store import telemetry
from store._batch import _Append, _BatchResult

__all__ = ["record_commit"]


class _Instruments:
    __slots__ = ("batch_size", "commit_duration")

    def __init__(self, meter: Any) -> None:
        self.batch_size = meter.create_histogram(
            "esactors.store.batch.size", unit="{event}", description="Events per committed batch"
        )
        self.commit_duration = meter.create_histogram(
            "esactors.store.commit.duration", unit="ms", description="Time to commit one batch"
        )


_instruments = telemetry.Instruments(_Instruments)


def record_commit(appends: Sequence[_Append], result: _BatchResult) -> None:
    """Record the batch `appends` the writer just committed as `result`."""
    seconds = result.commit_seconds
    events = sum(len(item.rows) for item in appends)
    instruments = _instruments.current
    if instruments is not None:
        instruments.batch_size.record(events)
        instruments.commit_duration.record(seconds * 1000)
    tracer = telemetry.tracer
    if tracer is None:
        return
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context

    now_ns = time.time_ns()
    started = time.perf_counter() - seconds
    oldest = min((item.queued_at for item in appends if item.queued_at), default=started)
    links = []
    for item in appends:
        if item.metadata and "traceparent" in item.metadata:
            context = trace.get_current_span(propagate.extract(item.metadata)).get_span_context()
            if context.is_valid:
                links.append(trace.Link(context))
    span = tracer.start_span(
        "esactors.store.commit",
        context=Context(),  # a root: not the child of whatever the writer task inherited
        links=links,
        start_time=now_ns - int(seconds * 1e9),
        attributes={
            "esactors.store.appends": len(appends),
            "esactors.store.events": events,
            "esactors.store.bytes": sum(len(row[2]) for item in appends for row in item.rows),
            "esactors.store.wait_ms": max(started - oldest, 0.0) * 1000,
            "esactors.store.commit_ms": seconds * 1000,
        },
    )
    span.end(end_time=now_ns)
