"""The example's telemetry, served by uvicorn in its own process over a real socket:
`GET /metrics` in Prometheus text format, spans exported over OTLP/HTTP to a collector
(a stand-in listening here), and log lines carrying the request's trace ids."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from examples.bank_service._telemetry import add_trace_ids

ROOT = Path(__file__).resolve().parents[2]


async def _collector(
    listener: anyio.abc.Listener[anyio.abc.SocketStream], posts: list[str]
) -> None:
    """A stand-in OTLP/HTTP collector: answers every request 200, noting its request line."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (line.partition(":") for line in lines[1:])
                    if k.lower() == "content-length"
                ),
                0,
            )
            while len(body) < length:
                body += await stream.receive()
            posts.append(lines[0])
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    await listener.serve(serve)


@pytest.mark.slow
async def test_metrics_traces_and_trace_ids_in_the_logs(tmp_path: Path) -> None:
    database = tmp_path / "bank.db"
    log_path = tmp_path / "service.log"
    posts: list[str] = []
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as collector,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_collector, collector, posts)
        collector_port = collector.extra(anyio.abc.SocketAttribute.local_port)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
            log_path.open("wb") as log_file,
        ):
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            port = listener.getsockname()[1]
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            }
            command = [sys.executable, "-m", "examples.bank_service", "--database", str(database)]
            command += ["--fd", str(listener.fileno()), "--grace", "5"]
            process = await anyio.open_process(
                command,
                pass_fds=[listener.fileno()],
                env=env,
                cwd=tmp_path,
                stdout=log_file,
                stderr=log_file,
            )
        async with process:
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=30
                ) as http:
                    for account in ("a", "b"):
                        opened = await http.post(f"/accounts/{account}/open", json={"owner": "o"})
                        assert opened.status_code == 200, opened.text
                    deposited = await http.post("/accounts/a/deposit", json={"amount": 100})
                    assert deposited.status_code == 200, deposited.text
                    refused = await http.post("/accounts/b/withdraw", json={"amount": 100})
                    assert refused.status_code == 409, refused.text
                    asked = await http.post(
                        "/transfers", json={"source": "a", "target": "b", "amount": 5}
                    )
                    assert asked.status_code == 202, asked.text
                    scraped = await http.get("/metrics")
            finally:
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await process.wait()
        tg.cancel_scope.cancel()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'esactors_commands_total{esactors_aggregate="Account",esactors_outcome="ok"' in text
    assert 'esactors_outcome="rejected"' in text
    for name in (
        "esactors_command_duration_milliseconds_bucket",
        "esactors_store_batch_size",
        "esactors_store_commit_duration_milliseconds_bucket",
        "esactors_actors_live",
        'esactors_process_position{esactors_process="bank.transfers"',
        'esactors_projection_lag{esactors_projection="bank.balances"',
    ):
        assert name in text, name
    # the spans reached the collector (flushed at the latest when the lifespan ended)
    assert "POST /v1/traces HTTP/1.1" in posts
    logs = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    handled = [e for e in logs if e["event"] == "request.handled"]
    assert handled
    assert all(len(e["trace_id"]) == 32 and len(e["span_id"]) == 16 for e in handled)
    assert len({e["trace_id"] for e in handled}) == len(handled)  # a trace per request


def test_the_log_processor_adds_nothing_outside_a_span() -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
