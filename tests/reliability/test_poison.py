"""Poison commands, poison events, recovery failures and restart backoff (POI-1..4)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from actors import CommandFailed, RecoveryError, open_system
from actors._actor import AggregateActor
from actors._actor_state import _Restart
from actors._router import AggregateHost, Quarantine
from bus import open_bus
from readmodels import ProjectionOptions, start_projection
from readmodels._projection import ProjectionHandle
from store import NO_STREAM, RecordedEvent, StoreUnavailable, open_store
from tests._events import append_deposits, registry
from tests.actors.domain import Boom, Counter, Increment, Incremented, Poisoned
from tests.actors.support import _Wrapper
from tests.readmodels._support import Log
from tests.readmodels._support import Poisoned as PoisonedBalances
from tests.reliability._report import Report, size


async def _poison_commands(commands: int, booms: int) -> dict[str, Any]:
    """100 aggregates take `commands` increments each; one of them, x, also gets `booms`
    commands whose `decide` raises. Every outcome is counted, none escapes."""
    aggregates = 100
    async with open_system(":memory:", synchronous="NORMAL") as system:
        counters = system.aggregates(Counter)
        collateral: list[str] = []
        victim_errors: list[str] = []
        boom_errors = 0
        appended_by_boom = 0
        x_versions: list[int] = []
        restart_ms: list[float] = []

        async def bystander(name: str) -> None:
            for _ in range(commands):
                try:
                    await counters.ask(name, Increment(by=1))
                except Exception as exc:  # noqa: BLE001 - counted: must stay 0
                    collateral.append(f"{name}: {exc!r}")

        async def increment_x() -> None:
            try:
                x_versions.append((await counters.ask("x", Increment(by=1))).version)
            except Exception as exc:  # noqa: BLE001 - counted: must stay 0
                victim_errors.append(repr(exc))

        async def victim() -> None:
            nonlocal boom_errors, appended_by_boom
            for i in range(commands):
                if i % (commands // booms) == 0:
                    before = await system.store.stream_version("counter-x")
                    try:
                        await counters.ask("x", Boom())
                    except CommandFailed as exc:
                        # the original error travels with it (type and message)
                        boom_errors += "boom in decide" in str(exc)
                    except Exception as exc:  # noqa: BLE001 - counted: must stay 0
                        victim_errors.append(f"Boom: {exc!r}")
                    appended_by_boom += await system.store.stream_version("counter-x") - before
                    started = time.perf_counter()
                    await increment_x()
                    restart_ms.append((time.perf_counter() - started) * 1e3)
                else:
                    await increment_x()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for i in range(aggregates - 1):
                    tg.start_soon(bystander, f"b{i}")
                tg.start_soon(victim)
        stats = system.statistics()
        x_value = await system.store.stream_version("counter-x")
        others_ok = 0
        for i in range(aggregates - 1):
            others_ok += (await counters.state(f"b{i}")).value == commands
    restart_ms.sort()
    return {
        "aggregates": aggregates,
        "commands_each": commands,
        "booms": booms,
        "boom_errors": boom_errors,
        "collateral_failures": len(collateral),
        "victim_errors": len(victim_errors),
        "others_ok": others_ok,
        "events_from_boom": appended_by_boom,
        "x_versions_contiguous": x_versions == list(range(1, len(x_versions) + 1)),
        "x_stored_version": x_value,
        "x_increments_acked": len(x_versions),
        "x_restarts": stats.restarts,
        "failures": stats.failures,
        "first_command_after_boom_p99_ms": round(restart_ms[-1], 2) if restart_ms else None,
    }


def check_poison_command(figures: dict[str, Any]) -> list[str]:
    """Violations of POI-1: each poison command fails alone with its error named, nothing
    stored for it, its aggregate serving on without a restart, the others untouched."""
    found: list[str] = []
    booms = figures["booms"]
    if figures["boom_errors"] != booms:
        found.append(f"{figures['boom_errors']} of {booms} poison commands failed by name")
    if figures["events_from_boom"]:
        found.append(f"{figures['events_from_boom']} events stored for poison commands")
    if figures["collateral_failures"] or figures["others_ok"] != figures["aggregates"] - 1:
        found.append(
            f"collateral: {figures['collateral_failures']} failed commands, other aggregates"
            f" right {figures['others_ok']}/{figures['aggregates'] - 1}"
        )
    if figures["victim_errors"] or not figures["x_versions_contiguous"]:
        found.append(f"the poisoned aggregate's own commands failed: {figures['victim_errors']}")
    if figures["x_stored_version"] != figures["x_increments_acked"]:
        found.append(
            f"x stored {figures['x_stored_version']} events for"
            f" {figures['x_increments_acked']} acknowledged increments"
        )
    if figures["x_restarts"]:
        found.append(f"the poisoned actor restarted {figures['x_restarts']} times")
    if figures["failures"] != booms:
        found.append(f"{figures['failures']} failures counted for {booms} poison commands")
    return found


async def test_poi1_poison_command_isolated(report: Report) -> None:
    figures = await _poison_commands(size(100, 1_000), 10)
    report.record(
        "POI-1",
        **{k: v for k, v in figures.items() if k not in ("booms", "x_versions_contiguous")},
    )
    assert check_poison_command(figures) == []


async def test_poi1_checker_catches_a_poison_command_that_crashes_its_actor(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: a decide error is treated like an evolve error, as a crash of
    # the actor (answered, then reloaded from the store and, past max_restarts, quarantined).
    decide = AggregateActor._decide

    def crash_on_failure(self: AggregateActor, envelope: Any, state: Any) -> Any:
        outcome = decide(self, envelope, state)
        if isinstance(outcome, CommandFailed):
            envelope.fail(outcome)
            raise _Restart
        return outcome

    monkeypatch.setattr(AggregateActor, "_decide", crash_on_failure)
    violations = check_poison_command(await _poison_commands(100, 10))
    report.record("POI-1", broken_variant="decide error crashes the actor", caught=len(violations))
    assert any("restarted" in v for v in violations)


def check_poison_projection(
    handle: ProjectionHandle[dict[str, int]],
    log: list[int],
    last: int,
    poison_position: int,
    calls_on_poison: int,
    max_attempts: int,
) -> list[str]:
    """Violations of POI-2 before the replay: parked once, the rest applied, bounded retries."""
    violations: list[str] = []
    letters = handle.dead_letters()
    if [d.position for d in letters] != [poison_position]:
        violations.append(f"parked {[d.position for d in letters]}, not [{poison_position}]")
    elif letters[0].attempts != max_attempts or "unlucky" not in letters[0].error:
        violations.append(f"dead letter lacks attempts/error: {letters[0]!r}")
    if calls_on_poison > max_attempts:
        violations.append(f"poison redelivered {calls_on_poison} > {max_attempts} times")
    if log != list(range(1, last + 1)):
        violations.append("the other projection missed or repeated events")
    if handle.position != last:
        violations.append(f"projection stopped at {handle.position}, not {last}")
    return violations


async def _poison_run(report: Report | None, monkeypatch: pytest.MonkeyPatch | None) -> list[str]:
    events = size(500, 5_000)
    max_attempts = 3
    async with (
        open_store(":memory:", registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        poisoned = PoisonedBalances()
        options = ProjectionOptions(max_attempts=max_attempts, retry_delay=0.001)
        handle = await start_projection(tg, store, bus, poisoned, options=options)
        log = await start_projection(tg, store, bus, Log())
        if monkeypatch is not None:
            # broken variant: a failing apply is skipped without parking (lost silently)
            async def skip(self: Any, view: Any, recorded: Any, error: Any, parked: Any) -> Any:
                return view, True

            monkeypatch.setattr(ProjectionHandle, "_retry", skip)
        half = events // 2
        await append_deposits(store, "acct-1", [1] * half)
        poison_position = await append_deposits(store, "acct-1", [13])
        last = await append_deposits(store, "acct-2", [1] * (events - half - 1))
        with anyio.fail_after(30):
            await handle.wait_for(last)
            await log.wait_for(last)
        violations = check_poison_projection(
            handle, log.view, last, poison_position, poisoned.calls_on_poison, max_attempts
        )
        redeliveries = poisoned.calls_on_poison
        poisoned.broken = False
        replayed = await handle.replay_parked()
        again = await handle.replay_parked()
        expected = {"acct-1": half + 13, "acct-2": events - half - 1}
        if report is not None:
            report.record(
                "POI-2",
                events=events,
                parked=len(handle.dead_letters()) + replayed,
                events_after_p_processed=f"{last - poison_position}/{last - poison_position}"
                if handle.position == last
                else "incomplete",
                redeliveries_of_p=redeliveries,
                max_attempts=max_attempts,
                replayed=replayed,
                replay_duplicates=again,
                violations=len(violations),
            )
            assert (replayed, again) == (1, 0)
            assert handle.view == expected
            assert handle.dead_letters() == ()
        await handle.stop()
        await log.stop()
    return violations


async def test_poi2_poison_event_in_a_projection(report: Report) -> None:
    assert await _poison_run(report, None) == []


async def test_poi2_checker_catches_a_projection_that_skips_poison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    violations = await _poison_run(None, monkeypatch)
    assert any("parked" in v for v in violations)


async def test_poi3_recovery_failure(report: Report) -> None:
    async with open_system(":memory:", quarantine_for=60, ask_timeout=5) as system:
        counters = system.aggregates(Counter)
        await system.store.append(
            "counter-bad", [Incremented(by=1), Incremented(by=2)], expected_version=NO_STREAM
        )
        await system.store.append("counter-bad", [Poisoned()], expected_version=2)
        started = time.perf_counter()
        with anyio.fail_after(6), pytest.raises(RecoveryError) as caught:
            await counters.ask("bad", Increment(by=1))
        elapsed_ms = (time.perf_counter() - started) * 1e3
        error = caught.value
        named = (error.stream_id, error.version, error.event_type) == (
            "counter-bad",
            3,
            "test.counter.poisoned",
        )
        others = [(await counters.ask(f"ok{i}", Increment(by=1))).version for i in range(20)]
        with anyio.fail_after(6), pytest.raises(RecoveryError):  # quarantined: refused fast
            await counters.ask("bad", Increment(by=1))
        version = await system.store.stream_version("counter-bad")
    report.record(
        "POI-3",
        hangs=0,
        error_names_stream_version_type="1/1" if named else "0/1",
        error_after_ms=round(elapsed_ms, 2),
        other_aggregates_ok=f"{others.count(1)}/20",
    )
    assert named
    assert others == [1] * 20
    assert version == 3  # nothing appended to the broken stream


class DeadStreamStore(_Wrapper):
    """Reads of one stream always fail (a broken disk page); counts the load attempts."""

    def __init__(self, inner: Any, stream_id: str) -> None:
        super().__init__(inner)
        self.stream_id = stream_id
        self.loads = 0

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        if stream_id == self.stream_id:
            self.loads += 1
            raise StoreUnavailable(f"cannot read {stream_id}")
        result: list[RecordedEvent] = await self.inner.read_stream(stream_id, **kw)
        return result


async def _dead_stream(window: float) -> dict[str, Any]:
    """One command per 10 ms for `window` seconds to an aggregate whose stream cannot
    be read, each followed by one to a healthy aggregate."""
    async with open_store(":memory:") as inner:
        dead = DeadStreamStore(inner, "counter-dead")
        async with open_system(
            dead.as_store(), quarantine_for=0.05, max_backoff=2.0, ask_timeout=2
        ) as system:
            counters = system.aggregates(Counter)
            sent = refused = other = 0
            good: list[int] = []
            cpu0, wall0 = time.process_time(), time.perf_counter()
            with anyio.fail_after(window + 30):
                while time.perf_counter() - wall0 < window:
                    sent += 1
                    try:
                        await counters.ask("dead", Increment(by=1))
                    except RecoveryError:
                        refused += 1
                    except Exception:  # noqa: BLE001 - counted: must stay 0
                        other += 1
                    good.append((await counters.ask("alive", Increment(by=1))).version)
                    await anyio.sleep(0.01)  # the arrival rate: one command per 10 ms
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            stats = system.statistics()
    return {
        "window_s": window,
        "commands": sent,
        "refused": refused,
        "other_errors": other,
        "load_attempts": dead.loads,
        "restarts": stats.restarts,
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "other_aggregate_ok": good == list(range(1, sent + 1)),
    }


def check_backoff(figures: dict[str, Any]) -> list[str]:
    """Violations of POI-4: every command to the broken aggregate refused with its
    error, the healthy one untouched, and loads backing off (the quarantine doubles per
    failure: about log2(window / quarantine_for) loads, far fewer than commands)."""
    found: list[str] = []
    if figures["refused"] != figures["commands"] or figures["other_errors"]:
        found.append(f"refused {figures['refused']} of {figures['commands']}")
    if not figures["other_aggregate_ok"]:
        found.append("the healthy aggregate was disturbed")
    loads = figures["load_attempts"]
    if not 1 <= loads <= 12 or loads * 10 >= figures["commands"]:
        found.append(f"no backoff: {loads} load attempts for {figures['commands']} commands")
    return found


async def test_poi4_restart_backoff(report: Report) -> None:
    figures = await _dead_stream(size(2.0, 10.0))
    report.record("POI-4", **figures)
    assert check_backoff(figures) == []


async def test_poi4_checker_catches_a_restart_loop_without_backoff(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    def quarantine_flat(self: AggregateHost, aggregate_id: str, error: Any) -> None:
        until = self._clock() + self.options.quarantine_for
        self._quarantined[aggregate_id] = Quarantine(error, 1, until)

    monkeypatch.setattr(AggregateHost, "quarantine", quarantine_flat)
    figures = await _dead_stream(1.0)
    violations = check_backoff(figures)
    report.record("POI-4", broken_variant="no backoff", caught=len(violations))
    assert any(v.startswith("no backoff") for v in violations)
