"""The example served by uvicorn in its own process, over a real loopback socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from actors import open_system
from demo.bank import Account, Deposited

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_the_service_runs_under_uvicorn_and_stops_gracefully_on_sigterm(
    tmp_path: Path,
) -> None:
    database = tmp_path / "bank.db"
    # Bind port 0 here and hand uvicorn the listening socket: no race for a free port,
    # and connections made before it is ready wait in the backlog.
    log_path = tmp_path / "service.log"
    # Bind port 0 here and hand uvicorn the listening socket: no race for a free port,
    # and connections made before it is ready wait in the backlog.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        log_path.open("wb") as log_file,
    ):
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                opened = await http.post("/accounts/a1/open", json={"owner": "ada"})
                assert opened.status_code == 200, opened.text
                deposited = await http.post(
                    "/accounts/a1/deposit",
                    json={"amount": 250},
                    headers={"Idempotency-Key": "k1", "X-Correlation-Id": "sub-1"},
                )
                assert deposited.status_code == 200, deposited.text
                position = deposited.json()["position"]
                account = await http.get(
                    "/accounts/a1", headers={"X-Consistent-With": str(position)}
                )
                assert account.json()["balance"] == 250
                health = await http.get("/health")
                assert health.json()["status"] == "ok"
        finally:
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()
    output = log_path.read_text()
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    logs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in logs]
    assert events.index("service.started") < events.index("service.stopping")
    assert events[-1] == "service.stopped"
    handled = [
        e for e in logs if e["event"] == "request.handled" and e["path"] == "/accounts/a1/deposit"
    ]
    assert [(e["correlation_id"], e["command_id"]) for e in handled] == [
        ("sub-1", "http:deposit:a1:k1")
    ]
    async with open_system(database) as system:
        history = await system.aggregates(Account).history("a1")
        assert [r.event for r in history][1:] == [Deposited(amount=250)]
        assert history[-1].position == position
