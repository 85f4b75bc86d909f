"""Backpressure and overload (BP-1..4): bounded queues refuse visibly, nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import psutil  # type: ignore[import-untyped]
import pytest

import actors._deadline
from actors import ActorSystem, AskTimeout, MailboxFull, Overloaded, open_system
from actors._mailbox import Envelope, Mailbox
from actors._registry import Registry
from actors._router import AggregateHost
from store import open_store
from tests.actors.domain import Counter, Increment, Noop
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


def _tasks(system: ActorSystem) -> int:
    """The tasks of the loop, except the actors' own (idle actors keep theirs, up to
    `idle_actor_tasks`, and the system counts them)."""
    return len(asyncio.all_tasks()) - system.statistics().actor_tasks


async def _timeouts(total: int) -> dict[str, Any]:
    """`total` asks with a 10 ms timeout to an actor that takes 20 ms per command, in
    waves of 100, each wave followed by a barrier ask."""
    wave = 100
    async with open_store(":memory:") as inner:
        slow = SlowStore(inner, delay=0.02)
        async with open_system(slow.as_store(), max_batch=1) as system:
            counters = system.aggregates(Counter)
            await counters.ask("slow", Increment(by=1))
            tasks_before = _tasks(system)
            outcomes = {"timeout": 0, "other": 0, "hung": 0}

            async def one() -> None:
                with anyio.move_on_after(1.0) as guard:  # 100 x the ask's own timeout
                    try:
                        await counters.ask("slow", Increment(by=1), timeout=0.01)
                    except AskTimeout:
                        outcomes["timeout"] += 1
                    except Exception:  # noqa: BLE001 - counted: must stay 0
                        outcomes["other"] += 1
                outcomes["hung"] += guard.cancelled_caught

            with anyio.fail_after(120):
                for _ in range(total // wave):
                    async with anyio.create_task_group() as tg:
                        for _ in range(wave):
                            tg.start_soon(one)
                    # a barrier: FIFO, so every earlier command was taken or skipped
                    await counters.ask("slow", Increment(by=1))
            stats = system.statistics()
            tasks_after = _tasks(system)
            state = await counters.state("slow")
    return {
        "asks": total,
        **outcomes,
        "dead_letters": stats.dropped_replies,
        "applied_late": state.value - (total // wave + 1),
        "leaked_tasks": tasks_after - tasks_before,
        "queued_after": stats.queued,
    }


def check_timeouts(figures: dict[str, Any]) -> list[str]:
    """Violations of BP-4: every ask ends with its timeout, nothing left behind, and
    every command applied after its caller left is a counted dead letter."""
    found: list[str] = []
    if figures["timeout"] != figures["asks"]:
        found.append(f"{figures['timeout']} of {figures['asks']} asks ended with AskTimeout")
    if figures["hung"] or figures["other"]:
        found.append(f"{figures['hung']} asks hung, {figures['other']} failed otherwise")
    if figures["leaked_tasks"] or figures["queued_after"]:
        found.append(f"left: {figures['leaked_tasks']} tasks, {figures['queued_after']} queued")
    if figures["dead_letters"] != figures["applied_late"]:
        found.append(
            f"{figures['applied_late']} applied late, {figures['dead_letters']} dead letters"
        )
    return found


async def test_bp4_ask_timeout_cleanup(report: Report) -> None:
    figures = await _timeouts(size(1_000, 10_000))
    report.record("BP-4", **figures)
    assert check_timeouts(figures) == []
    assert figures["applied_late"] > 0  # some commands were taken after their caller left


async def test_bp4_checker_catches_an_ask_timeout_that_is_not_enforced(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors._deadline._Expiry, "add", lambda self, future, name, timeout: None)
    monkeypatch.setattr(actors._deadline, "_expire", lambda future, name, timeout: None)
    figures = await _timeouts(200)
    violations = check_timeouts(figures)
    report.record("BP-4", broken_variant="timeout not enforced", caught=len(violations))
    assert any("hung" in v for v in violations)


def _fds() -> int:
    return int(psutil.Process().num_fds())


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


OUTCOMES = ("ok", "Overloaded", "MailboxFull", "timeout", "other")
LIMIT = 2_000  # the system's max_queued_commands in BP-2: low enough for any machine to reach


def check_overload(figures: dict[str, Any], limit: int) -> list[str]:
    """Violations of BP-2: one outcome per arrival, no hang, bounded queue and memory,
    nothing left behind once the load stops."""
    violations: list[str] = []
    outcomes = figures["outcomes"]
    if sum(outcomes.values()) != figures["issued"]:
        violations.append(f"outcomes {outcomes} do not add up to {figures['issued']} issued")
    if figures["hangs"]:
        violations.append(f"{figures['hangs']} asks hung past their timeout + 1 s")
    if outcomes["other"]:
        violations.append(f"{outcomes['other']} asks failed with an unexpected error")
    if figures["max_queued"] > limit:
        violations.append(f"{figures['max_queued']} commands queued, over the bound {limit}")
    if figures["peak_rss_mib"] > 256:
        violations.append(f"peak RSS {figures['peak_rss_mib']} MiB over baseline + 256 MiB")
    if figures["leaked_tasks"] or figures["leaked_fds"] > 0 or figures["queued_after"]:
        violations.append(
            f"left behind: {figures['leaked_tasks']} tasks, {figures['leaked_fds']} fds,"
            f" {figures['queued_after']} queued commands"
        )
    return violations


async def _overload(
    path: Any,
    calibrate: float,
    duration: float,
    *,
    slow: float = 0.0,
    aggregates: int = 1_000,
    clients: int = 256,
    ask_timeout: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """Calibrate the closed-loop rate T with `clients` callers on `aggregates` ids, then
    offer 10 x T open loop: one task per arrival, spawned on schedule whatever the
    replies do, each an ask with `ask_timeout`. `slow` > 0 delays every append by that many
    seconds (a slow disk: the system's rate is bounded by waiting, not by the loop)."""
    async with open_store(path) as inner:
        store: Any = SlowStore(inner, slow).as_store() if slow else inner
        return await _overload_on(
            store, calibrate, duration, (aggregates, clients, ask_timeout), **options
        )


async def _overload_on(
    store: Any,
    calibrate: float,
    duration: float,
    shape: tuple[int, int, float],
    **options: Any,
) -> dict[str, Any]:
    aggregates, clients, timeout = shape
    tick, burst = 0.005, 2_000
    async with open_system(store, mailbox_capacity=64, **options) as system:
        counters = system.aggregates(Counter)
        limit = system.options.max_queued_commands
        async with anyio.create_task_group() as warm:  # every actor loaded before the baseline
            for i in range(aggregates):
                warm.start_soon(counters.ask, f"a{i}", Increment(by=1))

        async def closed(i: int, until: float, latencies: list[float]) -> None:
            while time.perf_counter() < until:
                began = time.perf_counter()
                await counters.ask(f"a{i % aggregates}", Increment(by=1, tag="x" * 180))
                latencies.append(time.perf_counter() - began)

        async def closed_loop(seconds: float) -> list[float]:
            latencies: list[float] = []
            until = time.perf_counter() + seconds
            async with anyio.create_task_group() as tg:
                for i in range(clients):
                    tg.start_soon(closed, i, until, latencies)
            return sorted(latencies)

        gc.collect()
        tasks0, fds0, rss0 = _tasks(system), _fds(), _rss()
        baseline = await closed_loop(calibrate)
        sustained = len(baseline) / calibrate
        rate = 10 * sustained

        outcomes = dict.fromkeys(OUTCOMES, 0)
        hangs = issued = not_issued = max_queued = 0
        latencies: list[float] = []
        rss: list[tuple[float, int]] = []

        async def arrival(n: int) -> None:
            nonlocal hangs
            began = time.perf_counter()
            try:
                async with asyncio.timeout(timeout + 1):
                    try:
                        await counters.ask(
                            f"a{n % aggregates}", Increment(by=1, tag="x" * 180), timeout=timeout
                        )
                    except Overloaded:
                        outcomes["Overloaded"] += 1
                    except MailboxFull:
                        outcomes["MailboxFull"] += 1
                    except AskTimeout:
                        outcomes["timeout"] += 1
                    except Exception:  # noqa: BLE001 - counted: must stay 0
                        outcomes["other"] += 1
                    else:
                        outcomes["ok"] += 1
                        latencies.append(time.perf_counter() - began)
            except TimeoutError:
                hangs += 1

        start = time.perf_counter()
        with anyio.fail_after(duration + 60):
            # asyncio's own task group: an arrival costs a third of an anyio task here,
            # and the generator shares the loop with the system it loads.
            async with asyncio.TaskGroup() as tg:
                while (now := time.perf_counter()) < start + duration:
                    due = int((now - start) * rate) - issued - not_issued
                    spawn = min(due, burst)
                    not_issued += due - spawn  # the generator fell behind: counted, not offered
                    for _ in range(spawn):
                        tg.create_task(arrival(issued))
                        issued += 1
                    max_queued = max(max_queued, system.statistics().queued)
                    rss.append((now - start, _rss()))
                    await anyio.sleep(tick)
                offering = time.perf_counter() - start  # the arrivals' window
            wall = time.perf_counter() - start
            refused = system.statistics().overloaded  # before the barrier's own refusals

            async def barrier(i: int) -> None:
                # FIFO: once a command sent now is answered, every one queued before it
                # was taken. Refused while the queue is over its bound: back off, resend
                # (what the error tells a client to do).
                backoff = 0.01
                while True:
                    try:
                        await counters.ask(f"a{i}", Noop(), timeout=60)
                        return
                    except Overloaded:
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, 0.5)

            async with anyio.create_task_group() as barriers:
                for i in range(aggregates):
                    barriers.start_soon(barrier, i)
            settled = time.perf_counter() - start - wall
            recovered = await closed_loop(min(calibrate, 2.0))
        gc.collect()
        tasks1, fds1 = _tasks(system), _fds()
        stats = system.statistics()
    half = [(t, r) for t, r in rss if t >= duration / 2]
    slope = (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1e-9) if half else 0.0
    latencies.sort()

    def p99(values: list[float]) -> float:
        return round(values[int(len(values) * 0.99)] * 1e3, 1) if values else 0.0

    return {
        "sustained_per_s": round(sustained),
        "offered_target_per_s": round(rate),
        "offered_per_s": round(issued / offering),
        "issued": issued,
        "generator_behind_not_issued": not_issued,
        "offered_x": round(issued / offering / max(sustained, 1e-9), 1),
        "goodput_per_s": round(outcomes["ok"] / wall),
        "goodput_x": round(outcomes["ok"] / wall / max(sustained, 1e-9), 2),
        "refused_percent": round(100 * (issued - outcomes["ok"]) / max(issued, 1), 1),
        "outcomes": outcomes,
        "hangs": hangs,
        "max_queued": max_queued,
        "limit": limit,
        "peak_rss_mib": round((max(r for _, r in rss) - rss0) / 2**20, 1),
        "rss_slope_mib_per_s": round(slope / 2**20, 2),
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 1) if latencies else None,
        "p99_ms": p99(latencies),
        "baseline_p99_ms": p99(baseline),
        "after_p99_ms": p99(recovered),
        "seconds_to_settle": round(settled, 2),
        "leaked_tasks": tasks1 - tasks0,
        "leaked_fds": fds1 - fds0,
        "queued_after": stats.queued,
        "overloaded_counted": refused,
    }


def _recovered(figures: dict[str, Any]) -> bool:
    """Once the load stops, latency is back near the baseline, far from the overload's
    (either suffices: the machine is shared, and a stuck system fails both)."""
    after = figures["after_p99_ms"]
    return bool(after <= 3 * figures["baseline_p99_ms"] + 5 or after < figures["p99_ms"] / 2)


@pytest.mark.slow
async def test_bp2_overload_10x(tmp_path: Any, report: Report) -> None:
    figures = await _overload(
        tmp_path / "o.db", size(2.0, 10.0), size(5.0, 30.0), max_queued_commands=LIMIT
    )
    report.record("BP-2", **figures)
    assert check_overload(figures, figures["limit"]) == []
    # it was an overload: the excess was refused visibly (Overloaded at once, or an ask
    # timeout), never queued without bound
    assert figures["outcomes"]["Overloaded"] > 0
    assert figures["overloaded_counted"] == figures["outcomes"]["Overloaded"]
    assert _recovered(figures)


@pytest.mark.slow
async def test_bp2_overload_10x_on_a_slow_disk(tmp_path: Any, report: Report) -> None:
    """The same at a rate one loop can offer ten times over: every append waits 0.25 s
    (a slow disk), one command per append, 250 aggregates and 250 calibration clients,
    so T is about 1,000 commands/s. The bound over T (2 s of queue) is within the 3 s
    ask timeout: the excess is refused at once, what queues is served in time."""
    figures = await _overload(
        tmp_path / "o.db",
        2.0,
        size(5.0, 30.0),
        slow=0.25,
        aggregates=250,
        clients=250,
        ask_timeout=3.0,
        max_batch=1,
        max_queued_commands=LIMIT,
    )
    report.record("BP-2", setup="slow disk", **figures)
    assert check_overload(figures, figures["limit"]) == []
    assert figures["outcomes"]["Overloaded"] > 0
    assert figures["overloaded_counted"] == figures["outcomes"]["Overloaded"]
    assert _recovered(figures)


@pytest.mark.slow
async def test_bp2_checker_catches_an_unbounded_system(
    tmp_path: Any, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken variant: the global bound is not enforced (every command queues)."""
    monkeypatch.setattr(AggregateHost, "check_load", lambda self, stream_id: None)
    figures = await _overload(
        tmp_path / "o.db", 1.0, 2.0, slow=0.2, max_batch=1, max_queued_commands=LIMIT
    )
    violations = check_overload(figures, figures["limit"])
    report.record("BP-2", broken_variant="no global bound", caught=len(violations), **figures)
    assert any("over the bound" in v for v in violations)


async def _many_ids(ids: int, cap: int) -> dict[str, Any]:
    """One command each to `ids` distinct aggregates under `max_live_actors=cap`, then
    a sample of them again (long passivated by then)."""
    rss0 = _rss()
    max_live = 0
    peak_rss = rss0
    async with open_system(":memory:", max_live_actors=cap) as system:
        counters = system.aggregates(Counter)

        async def worker(first: int) -> None:
            nonlocal max_live, peak_rss
            for n in range(first, ids, 50):
                await counters.ask(f"id{n}", Increment(by=1))
                # O(1): statistics() walks every live actor, too slow to call per command
                max_live = max(max_live, len(system._registry.live))
                if n % 1_000 == 0:
                    peak_rss = max(peak_rss, _rss())

        with anyio.fail_after(300 if ids <= 100_000 else 3_000):
            async with anyio.create_task_group() as tg:
                for first in range(50):
                    tg.start_soon(worker, first)
        stats = system.statistics()
        reload_ms: list[float] = []
        wrong = 0
        for n in range(0, ids, max(ids // 500, 1)):
            began = time.perf_counter()
            result = await counters.ask(f"id{n}", Increment(by=1))
            reload_ms.append((time.perf_counter() - began) * 1e3)
            wrong += result.version != 2
            wrong += (await counters.state(f"id{n}")).value != 2
    reload_ms.sort()
    return {
        "ids": ids,
        "cap": cap,
        "max_live_actors": max_live,
        "passivations": stats.passivations,
        "reloads_checked": len(reload_ms),
        "wrong_after_reload": wrong,
        "reload_p99_ms": round(reload_ms[int(len(reload_ms) * 0.99)], 2),
        "rss_growth_mib": round((peak_rss - rss0) / 2**20, 1),
    }


def check_passivation(figures: dict[str, Any]) -> list[str]:
    """Violations of BP-3: the live-actor cap holds, the rest were passivated, each
    reloads with its state, and memory stays within baseline + 256 MiB."""
    found: list[str] = []
    if figures["max_live_actors"] > figures["cap"]:
        found.append(f"{figures['max_live_actors']} live actors, over the cap {figures['cap']}")
    if figures["passivations"] < figures["ids"] - figures["cap"]:
        found.append(f"only {figures['passivations']} passivations")
    if figures["wrong_after_reload"]:
        found.append(f"{figures['wrong_after_reload']} wrong states after a reload")
    if figures["rss_growth_mib"] > 256:
        found.append(f"RSS grew {figures['rss_growth_mib']} MiB")
    return found


@pytest.mark.slow
async def test_bp3_many_aggregates_passivation(report: Report) -> None:
    figures = await _many_ids(size(20_000, 1_000_000), size(2_000, 10_000))
    report.record("BP-3", **figures)
    assert check_passivation(figures) == []


@pytest.mark.slow
async def test_bp3_checker_catches_a_live_actor_cap_that_is_not_enforced(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    admit = Registry.admit

    def admit_uncapped(self: Registry[Any], actor: Any) -> Any:
        cap = self._max_live
        self._max_live = 100_000_000
        try:
            return admit(self, actor)
        finally:
            self._max_live = cap

    monkeypatch.setattr(Registry, "admit", admit_uncapped)
    figures = await _many_ids(3_000, 500)
    violations = check_passivation(figures)
    report.record("BP-3", broken_variant="cap not enforced", caught=len(violations))
    assert any("over the cap" in v for v in violations)
