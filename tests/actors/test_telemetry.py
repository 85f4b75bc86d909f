"""OpenTelemetry: spans and metrics through the SDK's in-memory exporters, installed with
`store.telemetry.configure` (the global providers can be set only once per process)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from actors import Dispatch, ProcessManager, Rejected, open_system
from demo.bank import Account as BankAccount
from demo.bank import (
    Deposit,
    OpenAccount,
    RequestTransfer,
    Transfer,
    TransferProcess,
)
from readmodels import Projection
from store import RecordedEvent, telemetry
from tests.actors.domain import Boom, Counter, Increment, Incremented


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer: Tracer

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value or count) of each data point of metric `name` now."""
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            if value is None:
                                value = point.count  # type: ignore[union-attr]
                            found.append((dict(point.attributes or {}), value))
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    traces = TracerProvider()
    traces.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=traces, meter_provider=meters)
    try:
        yield Otel(spans, reader, traces.get_tracer("test"))
    finally:
        telemetry.reset()
        meters.shutdown()
        traces.shutdown()


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_an_ask_is_a_span_under_the_callers_with_its_outcome(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "t.db") as system:
        counters = system.aggregates(Counter)
        with otel.tracer.start_as_current_span("request") as request:
            result = await counters.ask("c1", Increment(by=2))
        [ask] = otel.finished("esactors.ask")
        assert ask.parent is not None
        assert ask.parent.span_id == request.get_span_context().span_id
        assert dict(ask.attributes or {}) == {
            "esactors.aggregate": "Counter",
            "esactors.stream_id": "counter-c1",
            "esactors.command": "test.counter.increment",
            "esactors.version": result.version,
            "esactors.position": result.position,
            "esactors.outcome": "ok",
        }
        assert ask.status.status_code is StatusCode.UNSET
        # the events carry the ask's trace context: causation, read back from the log
        [recorded] = await counters.history("c1")
        assert recorded.metadata == {"traceparent": _traceparent(ask)}


async def test_refusals_errors_and_duplicates_have_their_outcome(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "t.db") as system:
        counters = system.aggregates(Counter)
        with pytest.raises(Rejected):
            await counters.ask("c1", Increment(by=0))
        with pytest.raises(Exception, match="boom"):
            await counters.ask("c1", Boom())
        await counters.ask("c1", Increment(), command_id="once")
        await counters.ask("c2", Increment(), command_id="twice", timeout=5)
        duplicate = await counters.ask("c2", Increment(), command_id="twice", timeout=5)
        assert duplicate.duplicate
    refused, failed, ok, first, again = otel.finished("esactors.ask")
    assert refused.attributes is not None
    assert failed.attributes is not None
    assert refused.attributes["esactors.outcome"] == "rejected"
    assert refused.attributes["error.type"] == "InvalidAmount"
    assert refused.status.status_code is StatusCode.UNSET  # a domain refusal is no error
    assert [e.name for e in refused.events] == ["exception"]
    assert failed.attributes["esactors.outcome"] == "error"
    assert failed.attributes["error.type"] == "CommandFailed"
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    outcomes = [(s.attributes or {}).get("esactors.outcome") for s in (ok, first, again)]
    assert outcomes == ["ok", "ok", "duplicate"]
    counted = {
        (a["esactors.aggregate"], a["esactors.outcome"]): n
        for a, n in otel.points("esactors.commands")
    }
    assert counted == {
        ("Counter", "rejected"): 1,
        ("Counter", "error"): 1,
        ("Counter", "ok"): 2,
        ("Counter", "duplicate"): 1,
    }
    durations = {a["esactors.outcome"]: n for a, n in otel.points("esactors.command.duration")}
    assert durations == {"rejected": 1, "error": 1, "ok": 2, "duplicate": 1}


async def test_a_command_through_the_mailbox_and_a_tell_carry_their_trace(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "t.db") as system:
        counters = system.aggregates(Counter)
        # an explicit timeout: through the mailbox, appended on the actor's task
        await counters.ask("c1", Increment(), timeout=5)
        counters.tell("c1", Increment(by=3))
        await counters.state("c1")  # after the tell was handled
        asked, told = otel.finished("esactors.ask")
        assert (told.attributes or {}).get("esactors.tell") is True
        assert (told.attributes or {}).get("esactors.outcome") == "ok"
        first, second = await counters.history("c1")
        assert first.metadata == {"traceparent": _traceparent(asked)}
        assert second.metadata == {"traceparent": _traceparent(told)}


async def test_each_commit_is_a_span_linked_to_the_asks_it_carried(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "t.db") as system:
        await system.aggregates(Counter).ask("c1", Increment())
        [ask] = otel.finished("esactors.ask")
        [commit] = otel.finished("esactors.store.commit")
    assert commit.parent is None
    assert [link.context.span_id for link in commit.links] == [
        ask.get_span_context().span_id  # type: ignore[union-attr]
    ]
    attributes: dict[str, Any] = dict(commit.attributes or {})
    assert attributes["esactors.store.appends"] == 1
    assert attributes["esactors.store.events"] == 1
    assert attributes["esactors.store.bytes"] > 0
    assert attributes["esactors.store.commit_ms"] >= 0
    assert attributes["esactors.store.wait_ms"] >= 0
    assert commit.start_time is not None
    assert commit.end_time is not None
    assert commit.start_time <= commit.end_time
    sizes = otel.points("esactors.store.batch.size")
    assert sizes
    assert sum(n for _, n in sizes) >= 1
    assert otel.points("esactors.store.commit.duration")


def _tree(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[str]:
    """`root` and its descendants, depth first (children by start time), as
    'depth name detail'."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    out: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        detail = attributes.get("esactors.command") or attributes.get("esactors.event") or ""
        out.append(f"{depth} {span.name} {detail}".rstrip())
        context = span.get_span_context()
        assert context is not None
        for child in sorted(children.get(context.span_id, []), key=lambda s: s.start_time or 0):
            walk(child, depth + 1)

    walk(root, 0)
    return out


TRANSFER_TRACE = [
    "0 request",
    "1 esactors.ask bank.request_transfer",
    "2 esactors.process bank.transfer_requested",
    "3 esactors.ask bank.debit_for_transfer",
    "4 esactors.process bank.debited",
    "5 esactors.ask bank.credit_for_transfer",
    "6 esactors.process bank.credited",
    "7 esactors.ask bank.complete_transfer",
    "7 esactors.ask bank.settle_transfer",
]


async def _settle(system: Any, process: Any) -> None:
    """Wait until the process manager handled every event, its own commands' included."""
    while True:
        head = await system.store.last_position()
        await process.wait_for(head)
        if await system.store.last_position() == head:
            return


async def _open_accounts(system: Any) -> None:
    accounts = system.aggregates(BankAccount)
    await accounts.ask("a", OpenAccount("a", "ada"))
    await accounts.ask("b", OpenAccount("b", "bob"))
    await accounts.ask("a", Deposit("a", 100))


async def test_a_transfer_is_one_trace_through_the_process_manager(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "bank.db") as system:
        await _open_accounts(system)
        process = await system.run_process_manager(TransferProcess())
        otel.spans.clear()
        with otel.tracer.start_as_current_span("request") as request:
            await system.aggregates(Transfer).ask("t1", RequestTransfer("t1", "a", "b", 30))
        await _settle(system, process)
        assert (await system.aggregates(Transfer).state("t1")).status == "completed"
    spans = [s for s in otel.spans.get_finished_spans() if s.name != "esactors.store.commit"]
    trace_id = request.get_span_context().trace_id
    assert {s.get_span_context().trace_id for s in spans} == {trace_id}  # type: ignore[union-attr]
    assert _tree(spans, next(s for s in spans if s.name == "request")) == TRANSFER_TRACE


async def test_the_trace_continues_in_another_run_from_the_log(otel: Otel, tmp_path: Path) -> None:
    database = tmp_path / "bank.db"
    async with open_system(database) as system:
        await _open_accounts(system)
        with otel.tracer.start_as_current_span("request") as request:
            await system.aggregates(Transfer).ask("t1", RequestTransfer("t1", "a", "b", 30))
    otel.spans.clear()
    # another system (as another process would): only the log carries the context
    async with open_system(database) as system:
        process = await system.run_process_manager(TransferProcess())
        await _settle(system, process)
        assert (await system.aggregates(Transfer).state("t1")).status == "completed"
    handled = otel.finished("esactors.process")
    assert len(handled) == 3
    assert {s.get_span_context().trace_id for s in handled} == {  # type: ignore[union-attr]
        request.get_span_context().trace_id
    }


class _Refuses(ProcessManager):
    name = "test.refuses"
    event_types = (Incremented,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        raise RuntimeError("a bug in react")


class _Poisoned(Projection[int]):
    name = "test.poisoned"
    event_types = (Incremented,)

    def initial_view(self) -> int:
        return 0

    def apply(self, view: int, recorded: RecordedEvent) -> int:
        by: int = recorded.event.by
        if by == 13:
            raise ValueError("unlucky")
        return view + by


async def test_gauges_read_the_live_system_managers_and_projections(
    otel: Otel, tmp_path: Path
) -> None:
    async with open_system(tmp_path / "t.db") as system:
        counters = system.aggregates(Counter)
        process = await system.run_process_manager(_Refuses())
        handle = await system.project(_Poisoned())
        await counters.ask("c1", Increment())
        await counters.ask("c2", Increment())
        last = (await counters.ask("c1", Increment(by=13))).position
        await process.wait_for(last)
        await handle.wait_for(last)
        assert otel.points("esactors.actors.live") == [({}, 2)]
        assert otel.points("esactors.mailbox.queued") == [({}, 0)]
        assert otel.points("esactors.mailbox.depth") == [({}, 0)]
        assert otel.points("esactors.process.position") == [
            ({"esactors.process": "test.refuses"}, last)
        ]
        assert otel.points("esactors.process.lag") == [({"esactors.process": "test.refuses"}, 0)]
        assert otel.points("esactors.process.dead_letters") == [
            ({"esactors.process": "test.refuses"}, 3)
        ]
        assert otel.points("esactors.projection.position") == [
            ({"esactors.projection": "test.poisoned"}, last)
        ]
        assert otel.points("esactors.projection.lag") == [
            ({"esactors.projection": "test.poisoned"}, 0)
        ]
        assert otel.points("esactors.projection.dead_letters") == [
            ({"esactors.projection": "test.poisoned"}, 1)
        ]
        [(attributes, batches)] = otel.points("esactors.projection.apply.lag")
        assert attributes == {"esactors.projection": "test.poisoned"}
        assert batches >= 1
        counters.tell("c3", Increment())  # through the mailbox: its actor gets a task
        await counters.state("c3")
        tasks = system.statistics().actor_tasks
        assert tasks >= 1
        assert otel.points("esactors.actors.tasks") == [({}, tasks)]
        assert otel.points("esactors.actors.live") == [({}, 3)]
    # a closed system is no longer reported
    assert otel.points("esactors.actors.live") == []
    assert otel.points("esactors.actors.tasks") == []
    assert otel.points("esactors.process.position") == []


async def test_nothing_is_emitted_without_a_provider(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    traces = TracerProvider()  # made, but never set globally nor configured
    traces.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.reset()
    async with open_system(tmp_path / "t.db") as system:
        assert telemetry.tracer is None
        assert telemetry.meter is None
        assert not telemetry.active
        counters = system.aggregates(Counter)
        await counters.ask("c1", Increment())
        [recorded] = await counters.history("c1")
    assert recorded.metadata == {}
    assert spans.get_finished_spans() == ()
    traces.shutdown()


async def test_metrics_alone_store_no_trace_context(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry.configure(meter_provider=meters)
    try:
        async with open_system(tmp_path / "t.db") as system:
            assert telemetry.tracer is None
            counters = system.aggregates(Counter)
            await counters.ask("c1", Increment())
            [recorded] = await counters.history("c1")
            assert recorded.metadata == {}
            otel = Otel(InMemorySpanExporter(), reader, TracerProvider().get_tracer("unused"))
            assert otel.points("esactors.commands") == [
                ({"esactors.aggregate": "Counter", "esactors.outcome": "ok"}, 1)
            ]
    finally:
        telemetry.reset()
        meters.shutdown()
