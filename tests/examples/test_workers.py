"""The example served by two uvicorn worker processes on one store, over real HTTP.

uvicorn starts as a subprocess (`--workers 2 --factory examples.bank_service:worker_app`)
on a free loopback port, on a SQLite file and on a PostgreSQL schema. Every reply names
the worker that answered (`X-Worker-Pid`), so the test can pick reads answered by the
other worker than the write: they must see it (read your writes by position), and a
withdrawal decided by one worker right after a deposit made on the other is accepted.
uvicorn is stopped with SIGTERM (killed, its workers with it, should it hang) whatever
happens in the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from actors import open_system
from demo.bank import Account
from examples.bank_service import DATABASE_ENV, GRACE_ENV, WORKER_HEADER, Bank, ServiceSettings
from tests.examples import _asgi

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2


@pytest.fixture(params=["file", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or a PostgreSQL URL naming a schema of the test's own."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        assert isinstance(url, str)
        return url
    return str(tmp_path / "bank.db")


def free_port() -> int:
    """A port nothing listens on now (uvicorn binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply, and the worker process that sent it."""

    status: int
    body: dict[str, object]
    pid: int


@dataclass(frozen=True, slots=True)
class Service:
    """uvicorn and its workers, with a client that opens a connection per request (so
    the workers take turns accepting them)."""

    process: anyio.abc.Process
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, **kwargs: object) -> Answer:
        response = await self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        body = response.json()
        assert isinstance(body, dict), response.text
        return Answer(response.status_code, body, int(response.headers[WORKER_HEADER]))


async def stop(process: anyio.abc.Process) -> None:
    """SIGTERM uvicorn and wait for it; on a hang, kill it and its workers. Raises if a
    worker outlived it."""
    workers: list[psutil.Process] = []
    if process.returncode is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            workers = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(30):
        await process.wait()
    if process.returncode is None:
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        process.kill()
        await process.wait()
    _, alive = await anyio.to_thread.run_sync(psutil.wait_procs, workers, 10)
    for worker in alive:
        worker.kill()
    assert not alive, f"workers outlived uvicorn: {alive}"


@asynccontextmanager
async def serve(database: str, log: Path) -> AsyncIterator[Service]:
    """uvicorn with two workers on `database`, answering on a free port; stopped after."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "examples.bank_service:worker_app"]
    command += ["--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--timeout-graceful-shutdown", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), DATABASE_ENV: database, GRACE_ENV: "5"}
    limits = httpx.Limits(max_keepalive_connections=0)
    with log.open("wb") as out:
        process = await anyio.open_process(command, env=env, cwd=log.parent, stdout=out, stderr=out)
    async with process:
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
            ) as http:
                service = Service(process, http)
                await until_both_workers_answer(service)
                yield service
        finally:
            await stop(process)


async def until_both_workers_answer(service: Service) -> None:
    """Poll `/health` (bounded) until both workers have answered it."""
    seen: set[int] = set()
    with anyio.fail_after(30):
        while len(seen) < WORKERS:
            assert service.process.returncode is None, "uvicorn exited"
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(4):  # a few at once: both workers accept some
                        tg.start_soon(health, service, seen)
            except* httpx.TransportError:
                await anyio.sleep(0.05)  # not listening yet


async def health(service: Service, seen: set[int]) -> None:
    answer = await service.call("GET", "/health")
    if answer.status == 200:
        seen.add(answer.pid)


async def read_on_another_worker(
    service: Service, account: str, position: int, writer: int
) -> Answer:
    """`GET /accounts/{account}` with `X-Consistent-With: position`, repeated (a few at
    once, each on a connection of its own) until a worker other than `writer` answers;
    every answer must reflect the position."""
    headers = {"X-Consistent-With": str(position)}
    found: list[Answer] = []

    async def read() -> None:
        answer = await service.call("GET", f"/accounts/{account}", headers=headers)
        assert answer.status == 200, answer
        assert answer.body["position"] >= position  # type: ignore[operator]
        if answer.pid != writer:
            found.append(answer)

    with anyio.fail_after(30):
        while not found:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(read)
    return found[0]


@pytest.mark.slow
async def test_two_workers_read_each_others_writes_and_decide_on_the_latest_state(
    database: str, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    deposits: list[tuple[int, int]] = []  # (amount, position) in commit order
    async with serve(database, log) as service:
        opened = await service.call("POST", "/accounts/acc/open", json={"owner": "ada"})
        assert opened.status == 200, opened

        # Writes one after the other: the balance at each write's position is the sum so
        # far, and no later write exists when it is read back on the other worker.
        writers: set[int] = set()
        crossed = 0
        balance = 0
        for amount in range(1, 21):
            written = await service.call("POST", "/accounts/acc/deposit", json={"amount": amount})
            assert written.status == 200, written
            position = written.body["position"]
            assert isinstance(position, int)
            writers.add(written.pid)
            balance += amount
            deposits.append((amount, position))
            read = await read_on_another_worker(service, "acc", position, written.pid)
            assert (read.body["balance"], read.body["position"]) == (balance, position)
            crossed += 1
        assert crossed == 20
        assert len(writers) == WORKERS, f"one worker took every write: {writers}"

        # A withdrawal of the whole balance right after a deposit: accepted on the
        # latest state whichever worker decides it (the deposit's version is the one
        # before it), and at least some decided by the other worker than the deposit.
        emptied = await service.call("POST", "/accounts/acc/withdraw", json={"amount": balance})
        assert emptied.status == 200, emptied
        across = 0
        with anyio.fail_after(60):
            while across < 3:
                deposit = await service.call("POST", "/accounts/acc/deposit", json={"amount": 7})
                withdrawal = await service.call(
                    "POST", "/accounts/acc/withdraw", json={"amount": 7}
                )
                assert (deposit.status, withdrawal.status) == (200, 200), (deposit, withdrawal)
                assert withdrawal.body["version"] == deposit.body["version"] + 1  # type: ignore[operator]
                across += withdrawal.pid != deposit.pid
        last = withdrawal.body["position"]
        assert isinstance(last, int)
        read = await read_on_another_worker(service, "acc", last, withdrawal.pid)
        assert read.body["balance"] == 0

        # A position nobody wrote: a clean 503 after the consistency timeout.
        ahead = await service.call(
            "GET", "/accounts/acc", headers={"X-Consistent-With": str(last + 1000)}
        )
        assert (ahead.status, ahead.body["error"]) == (503, "not_yet_consistent")

        process = service.process
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    output = log.read_text()
    logs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    stopped = [entry for entry in logs if entry["event"] == "service.stopped"]
    assert len(stopped) == WORKERS, output
    async with open_system(database) as system:
        history = await system.aggregates(Account).history("acc")
        stored = [(r.event.amount, r.position) for r in history[1:21]]
        assert stored == deposits
        assert (await system.aggregates(Account).state("acc")).balance == 0


def catch_ups(bank: Bank) -> dict[str, int]:
    """How often each subscription of `bank`'s bus read the store on its own."""
    return {s.name: s.catch_ups for s in bank.system.bus.statistics()}


async def test_a_read_waits_for_the_follower_not_for_a_store_read_of_its_own(
    database: str,
) -> None:
    """Two apps on one store, as two workers (in one process here): a read on B of A's
    write waits for B's bus follower to bring it; the read model never reads the store
    itself for it (no catch-up), and a position past the head ends in a clean 503."""
    settings = ServiceSettings(consistency_timeout=0.5)
    async with (
        _asgi.serve(database, settings=settings) as a,
        _asgi.serve(database, settings=settings) as b,
    ):
        assert (await a.http.post("/accounts/x/open", json={"owner": "o"})).status_code == 200
        before = catch_ups(b.bank)
        for amount in range(1, 11):
            written = await a.http.post("/accounts/x/deposit", json={"amount": amount})
            position = _asgi.json_of(written)["position"]
            read = await b.http.get("/accounts/x", headers={"X-Consistent-With": str(position)})
            assert read.status_code == 200, read.text
            body = _asgi.json_of(read)
            assert (body["balance"], body["position"]) == (amount * (amount + 1) // 2, position)
        assert catch_ups(b.bank) == before
        with anyio.fail_after(10):
            ahead = await b.http.get(f"/accounts/x?after={position + 1}")
        assert ahead.status_code == 503
        assert ahead.headers["Retry-After"] == "1"
        reply = _asgi.json_of(ahead)
        assert (reply["error"], reply["type"]) == ("not_yet_consistent", "ConsistencyTimeout")
        assert f"not {position + 1}, within 0.5s" in reply["detail"]
        assert catch_ups(b.bank) == before
