"""Backpressure and overload (BP-1, BP-4): bounded mailboxes refuse visibly, nothing leaks."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from actors import AskTimeout, MailboxFull, open_system
from actors._mailbox import Envelope, Mailbox
from store import open_store
from tests.actors.domain import Counter, Increment
from tests.actors.support import GatedStore, _Wrapper
from tests.reliability._report import Report, size

CAPACITY = 16


def check_mailbox(sent: int, accepted: list[str], rejected: int, processed: list[str]) -> list[str]:
    """Violations of BP-1: every send has one visible outcome and accepted ones run FIFO."""
    violations: list[str] = []
    if len(accepted) + rejected != sent:
        violations.append(f"accepted {len(accepted)} + rejected {rejected} != sent {sent}")
    dropped = len(accepted) - len(processed)
    if dropped:
        violations.append(f"silently dropped {dropped} accepted commands")
    if processed != accepted[: len(processed)]:
        violations.append("accepted commands not processed in FIFO order")
    return violations


async def _flood(report: Report | None) -> list[str]:
    async with open_store(":memory:") as inner:
        gated = GatedStore(inner)
        async with open_system(gated.as_store()) as system:
            counters = system.aggregates(Counter, mailbox_capacity=CAPACITY)
            async with anyio.create_task_group() as tg:
                tg.start_soon(counters.ask, "hot", Increment(by=1, tag="first"))
                with anyio.fail_after(5):
                    await gated.entered.wait()  # "first" is in the actor, not the mailbox
                sent = 1000
                accepted: list[str] = []
                rejected = 0
                reject_times: list[float] = []
                for i in range(sent):
                    started = time.perf_counter()
                    try:
                        counters.tell("hot", Increment(by=1, tag=f"t{i}"))
                        accepted.append(f"t{i}")
                    except MailboxFull:
                        rejected += 1
                        reject_times.append(time.perf_counter() - started)
                late = 0
                for _ in range(3):  # an ask with a short timeout is refused the same way
                    with anyio.fail_after(5):
                        try:
                            await counters.ask("hot", Increment(by=1), timeout=0.05)
                        except (MailboxFull, AskTimeout):
                            late += 1
                gated.gate.set()
            state = await counters.state("hot")
        processed = [t for t in state.tags if t != "first"]
        violations = check_mailbox(sent, accepted, rejected, processed)
        if report is not None:
            reject_times.sort()
            report.record(
                "BP-1",
                sent=sent,
                accepted=len(accepted),
                rejected=rejected,
                silently_dropped=len(accepted) - len(processed),
                processed=f"{len(processed)}/{len(accepted)}",
                late_asks_refused=f"{late}/3",
                p99_reject_us=round(reject_times[int(len(reject_times) * 0.99)] * 1e6, 2),
                violations=len(violations),
            )
            # The first command goes inline to the actor (it is in its append), so the
            # mailbox then holds exactly `CAPACITY` more.
            assert len(accepted) == CAPACITY
            assert late == 3
        return violations


async def test_bp1_mailbox_full_is_visible(report: Report) -> None:
    assert await _flood(report) == []


async def test_bp1_checker_catches_a_drop_head_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    def drop_head(self: Mailbox, envelope: Envelope) -> bool:
        items: deque[Envelope] = self._items
        if len(items) >= self.capacity:
            items.popleft()  # evict the oldest without telling anyone
        items.append(envelope)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    monkeypatch.setattr(Mailbox, "offer", drop_head)
    violations = await _flood(None)
    assert any("silently dropped" in v for v in violations)


class SlowStore(_Wrapper):
    """Every append takes `delay` seconds: longer than the callers' ask timeout."""

    def __init__(self, inner: Any, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    async def append(self, stream_id: str, events: Sequence[msgspec.Struct], **kw: Any) -> Any:
        await anyio.sleep(self.delay)  # simulated slow disk, not a wait in the test
        return await self.inner.append(stream_id, events, **kw)


async def test_bp4_ask_timeout_cleanup(report: Report) -> None:
    total = size(1_000, 10_000)
    wave = 100
    async with open_store(":memory:") as inner:
        slow = SlowStore(inner, delay=0.02)
        async with open_system(slow.as_store(), max_batch=1) as system:
            counters = system.aggregates(Counter)
            await counters.ask("slow", Increment(by=1))
            tasks_before = len(asyncio.all_tasks())
            timeouts = 0
            other = 0

            async def one() -> None:
                nonlocal timeouts, other
                try:
                    await counters.ask("slow", Increment(by=1), timeout=0.01)
                except AskTimeout:
                    timeouts += 1
                except Exception:  # noqa: BLE001 - counted: must stay 0
                    other += 1

            with anyio.fail_after(120):
                for _ in range(total // wave):
                    async with anyio.create_task_group() as tg:
                        for _ in range(wave):
                            tg.start_soon(one)
                    # a barrier: FIFO, so every earlier command was taken or skipped
                    await counters.ask("slow", Increment(by=1))
            stats = system.statistics()
            tasks_after = len(asyncio.all_tasks())
            state = await counters.state("slow")
        barriers = total // wave + 1
    applied = state.value - barriers
    report.record(
        "BP-4",
        asks=total,
        timeouts=timeouts,
        other_errors=other,
        dead_letters=stats.dropped_replies,
        applied_late=applied,
        leaked_tasks=tasks_after - tasks_before,
        queued_after=stats.queued,
    )
    assert (timeouts, other) == (total, 0)
    assert stats.queued == 0
    assert tasks_after == tasks_before
    # every command the actor took after its caller had gone is a counted dead letter
    assert stats.dropped_replies == applied
    assert applied > 0
