"""The bank service's HTTP path, side by side with the same commands sent by `ask`.

Three ways to run the same workload (C concurrent callers, each depositing into its own
accounts, every command acknowledged after its event committed), on fresh files:

- `ask`: `router.ask` straight into the actor system (the runtime's own cost);
- `app`: ASGI requests handed straight to the Starlette app in process: adds routing,
  the body limit, msgspec validation, the error mapping and the per-request JSON log;
- `uvicorn`: the service under uvicorn in another process, over loopback TCP with
  keep-alive connections (one per caller, a minimal HTTP/1.1 client so that the load
  generator is not the bottleneck): what a client sees. Client and server share the
  machine's cores.

    python -m bench.http_service --requests 5000 --concurrency 50
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import psutil  # type: ignore[import-untyped]
import structlog

from actors import open_system
from demo.bank import Account, Deposit, OpenAccount
from examples.bank_service import ServiceSettings, create_app

ROOT = Path(__file__).resolve().parents[1]
Message = MutableMapping[str, Any]


async def run_ask(
    path: Path, requests: int, concurrency: int, accounts: int
) -> tuple[float, float]:
    """Seconds and CPU seconds (this process) of the deposits through `ask`."""
    async with open_system(path) as system:
        router = system.aggregates(Account)
        for index in range(accounts):
            await router.ask(f"b{index}", OpenAccount(f"b{index}", "bench"))

        async def client(worker: int) -> None:
            for n in range(worker, requests, concurrency):
                account = f"b{n % accounts}"
                await router.ask(account, Deposit(account, 1))

        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for worker in range(concurrency):
                tg.start_soon(client, worker)
        return time.perf_counter() - started, time.process_time() - cpu


async def run_app(
    path: Path, requests: int, concurrency: int, accounts: int
) -> tuple[float, float]:
    """Seconds and CPU seconds (this process) of the deposits through the ASGI app."""
    app = create_app(path, ServiceSettings())

    async def post(path: str, body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        return statuses[0]

    async with app.router.lifespan_context(app):
        for index in range(accounts):
            status = await post(f"/accounts/b{index}/open", b'{"owner": "bench"}')
            assert status == 200, status

        async def client(worker: int) -> None:
            for n in range(worker, requests, concurrency):
                status = await post(f"/accounts/b{n % accounts}/deposit", b'{"amount": 1}')
                assert status == 200, status

        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for worker in range(concurrency):
                tg.start_soon(client, worker)
        return time.perf_counter() - started, time.process_time() - cpu


def _cpu(process: psutil.Process) -> float:
    """The CPU seconds (user and system) `process` has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


class _Connection:
    """A minimal HTTP/1.1 keep-alive client for one connection: the load generator
    must cost less than the server it measures (a pooled general client costs more)."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        await self.stream.send(head.encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        while len(rest) < length:
            rest += await self.stream.receive()
        self.buffer = rest[length:]
        return int(lines[0].split()[1])


async def run_uvicorn(
    path: Path, requests: int, concurrency: int, accounts: int
) -> tuple[float, float]:
    """Seconds and CPU seconds (this client and the server process) of the deposits
    over HTTP to the service under uvicorn."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        command = [sys.executable, "-m", "examples.bank_service", "--database", str(path)]
        process = await anyio.open_process(
            [*command, "--fd", str(listener.fileno())],
            pass_fds=[listener.fileno()],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            connection = _Connection(stream)
            for index in range(accounts):
                status = await connection.post(f"/accounts/b{index}/open", b'{"owner": "bench"}')
                assert status == 200, status

        async def client(worker: int) -> None:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                connection = _Connection(stream)
                for n in range(worker, requests, concurrency):
                    status = await connection.post(
                        f"/accounts/b{n % accounts}/deposit", b'{"amount": 1}'
                    )
                    assert status == 200, status

        server = psutil.Process(process.pid)
        started, cpu = time.perf_counter(), time.process_time() + _cpu(server)
        async with anyio.create_task_group() as tg:
            for worker in range(concurrency):
                tg.start_soon(client, worker)
        seconds = time.perf_counter() - started
        return seconds, time.process_time() + _cpu(server) - cpu
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        await process.aclose()


async def main(requests: int, concurrency: int, accounts: int, ways: list[str]) -> None:
    runners = {"ask": run_ask, "app": run_app, "uvicorn": run_uvicorn}
    print(f"{requests} deposits, {concurrency} concurrent callers, {accounts} accounts")
    for way in ways:
        with tempfile.TemporaryDirectory() as directory:
            seconds, cpu = await runners[way](
                Path(directory) / "bench.db", requests, concurrency, accounts
            )
        print(
            f"{way:>8}: {requests / seconds:10,.0f} commands/s"
            f"  ({seconds * 1e6 / requests:,.0f} µs per command,"
            f" CPU {cpu * 1e6 / requests:,.0f} µs per command)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--ways", nargs="+", default=["ask", "app", "uvicorn"])
    args = parser.parse_args()
    # In process, log as the service does (JSON lines at info), into the void.
    with open(os.devnull, "w") as sink:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(sink),
            cache_logger_on_first_use=True,
        )
        anyio.run(main, args.requests, args.concurrency, args.accounts, args.ways)
