"""Shutdown (SHD-1, SHD-2): a shutdown under load answers or refuses every command,
loses no acknowledged one and acknowledges nothing after it returned; a shutdown whose
grace runs out returns on time and leaves a consistent file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import ShuttingDown, open_system
from demo.bank import Account, Balances, Deposit, OpenAccount
from store import open_store
from tests.actors.domain import Counter, Increment
from tests.actors.support import GatedStore
from tests.reliability._report import Report, size, time_limit
from tests.reliability.oracle import whole_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]

ACCOUNTS = 16
CLIENTS = 64


async def test_shd1_shutdown_under_load_answers_every_accepted_command(
    tmp_path: Path, report: Report
) -> None:
    path = tmp_path / "shd1.db"
    acked: set[str] = set()
    acked_after_close = refused = other = 0
    closed = False
    enough = anyio.Event()
    wanted = size(2_000, 20_000)

    async def client(router: Any, c: int) -> None:
        nonlocal acked_after_close, refused, other
        n = 0
        while True:
            command_id = f"d{c}:{n}"
            account = f"{c % ACCOUNTS}"
            try:
                await router.ask(
                    account, Deposit(account_id=account, amount=1), command_id=command_id
                )
            except ShuttingDown:
                refused += 1
                return
            except Exception:  # noqa: BLE001 - counted: must stay 0
                other += 1
                return
            acked.add(command_id)
            acked_after_close += closed
            if len(acked) >= wanted:
                enough.set()
            n += 1

    with anyio.fail_after(120):
        async with open_system(path) as system:
            accounts = system.aggregates(Account)
            for i in range(ACCOUNTS):
                await accounts.ask(f"{i}", OpenAccount(account_id=f"{i}", owner="o"))
            balances = await system.project(Balances())
            async with anyio.create_task_group() as clients:
                for c in range(CLIENTS):
                    clients.start_soon(client, accounts, c)
                await enough.wait()
                started = time.perf_counter()
                drained = await system.shutdown(grace=5)
                seconds = time.perf_counter() - started
                closed = True
                head = await system.store.last_position()
                await balances.wait_for(head, timeout=10)
                lag = head - balances.position
                stats = system.statistics()
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    async with open_system(path) as reopened:
        reopened.aggregates(Account)  # registers the bank's event types for the read
        stored = {r.command_id for r in await whole_log(reopened.store) if r.command_id}
    deposits = {cid for cid in stored if cid.startswith("d")}
    lost = len(acked - deposits)
    unacked_applied = len(deposits - acked)
    report.record(
        "SHD-1",
        clients=CLIENTS,
        acked=len(acked),
        refused_with_shutting_down=refused,
        other_errors=other,
        accepted_unanswered=CLIENTS - refused - other,
        lost_acks=lost,
        applied_not_acked=unacked_applied,
        acked_after_close=acked_after_close,
        drained_in_grace=drained,
        shutdown_ms=round(seconds * 1e3, 1),
        projection_lag_at_exit=lag,
        queued_at_exit=stats.queued,
        wal_bytes_after_close=wal_bytes,
    )
    assert drained
    assert refused == CLIENTS  # every client ended on a refusal, none hung
    assert other == 0
    assert (lost, unacked_applied, acked_after_close) == (0, 0, 0)
    assert lag == 0
    assert stats.queued == 0
    assert wal_bytes == 0  # the WAL was checkpointed into the file on close


async def test_shd2_shutdown_whose_grace_runs_out_returns_on_time(report: Report) -> None:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)  # its appends wait until the gate opens: a stuck handler
        outcomes: list[str] = []
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter)

            async def send(i: int) -> None:
                try:
                    await counters.ask("stuck", Increment(by=1, tag=str(i)))
                    outcomes.append("ok")
                except ShuttingDown:
                    outcomes.append("refused")

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, 0)
                await gated.entered.wait()
                for i in range(1, 8):
                    tg.start_soon(send, i)
                await anyio.wait_all_tasks_blocked()
                started = time.perf_counter()
                drained = await system.shutdown(grace=1.0)
                seconds = time.perf_counter() - started
                with pytest.raises(ShuttingDown):
                    await counters.ask("stuck", Increment(by=1))
                gated.gate.set()  # the stuck append completes; what queued is answered
            queued = system.statistics().queued
        stored = await inner.stream_version("counter-stuck")
    report.record(
        "SHD-2",
        shutdown_ms=round(seconds * 1e3, 1),
        drained_in_grace=drained,
        outcomes={k: outcomes.count(k) for k in ("ok", "refused")},
        divergence=int(outcomes.count("ok") != stored),
        queued_after=queued,
    )
    assert not drained
    assert 1.0 <= seconds <= 1.5
    assert len(outcomes) == 8  # every command answered or refused
    assert outcomes.count("ok") == stored  # what was acknowledged is exactly what is stored
    assert queued == 0
