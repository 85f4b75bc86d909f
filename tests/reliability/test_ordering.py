"""Ordering and delivery under delayed, reordered and duplicated publication (ORD-1, RM-2),
the catch-up to live handover under writers (ORD-2), and read-your-writes (ORD-3).

The faults act between commit and delivery: `after_commit_before_publish` delays the
writer before it hands a batch to the bus, `bus_deliver` holds a batch back until after
the next one (`reorder`) or offers it twice (`dup`). Subscriptions must see each of those
as a gap and read the store: every position exactly once, in order."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import ActorSystem, Dispatch, ProcessManagerHandle, Rejected, open_system
from bus import EventBus, open_bus
from demo.bank import (
    Account,
    Balances,
    BalancesView,
    BankTotals,
    Deposit,
    OpenAccount,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdraw,
)
from readmodels import ConsistencyTimeout
from readmodels._projection import ProjectionHandle
from store import (
    ANY,
    AppendResult,
    EventRegistry,
    RecordedEvent,
    StoreError,
    faults,
    open_store,
)
from store._sqlite_batch import _BatchWriter
from tests._events import Deposited
from tests.reliability._report import Report, size, time_limit
from tests.reliability.oracle import fold_balances, settle, whole_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]


def delivery_violations(
    seen: Sequence[RecordedEvent], stored: Sequence[RecordedEvent]
) -> dict[str, int]:
    """What a subscriber that saw `seen` got wrong against the log `stored`: positions
    never delivered, delivered twice, events out of position or stream order, and
    phantoms (events that are not in the committed log: published before a commit that
    then rolled back)."""
    positions = [r.position for r in seen]
    expected = {r.position for r in stored}
    committed = {r.position: (r.stream_id, r.version, r.event_type, r.event) for r in stored}
    phantom = sum(
        1
        for r in seen
        if committed.get(r.position) != (r.stream_id, r.version, r.event_type, r.event)
    )
    versions: dict[str, int] = {}
    out_of_order = sum(1 for a, b in itertools.pairwise(positions) if b <= a)
    for recorded in seen:
        if versions.get(recorded.stream_id, 0) >= recorded.version:
            out_of_order += 1
        versions[recorded.stream_id] = recorded.version
    return {
        "skipped": len(expected - set(positions)),
        "duplicated": len(positions) - len(set(positions)),
        "out_of_order": out_of_order,
        "phantom": phantom,
    }


class NaiveSubscriber:
    """The broken control: takes batches straight from the bus and skips any batch at or
    below the highest position seen, the dedupe that loses events when delivery is out
    of order."""

    def __init__(self) -> None:
        self.checkpoint = 0
        self.seen: list[RecordedEvent] = []

    def _offer(self, first: int, last: int, events: Sequence[RecordedEvent]) -> None:
        if first <= self.checkpoint:
            return
        self.seen.extend(events)
        self.checkpoint = last


def per_stream_violations(
    seen: Sequence[RecordedEvent], stored: Sequence[RecordedEvent]
) -> dict[str, int]:
    """`delivery_violations` for a subscriber that runs streams concurrently (the saga):
    positions exactly once, order checked within each stream only."""
    streams: dict[str, list[RecordedEvent]] = {}
    for recorded in seen:
        streams.setdefault(recorded.stream_id, []).append(recorded)
    found = {"skipped": 0, "duplicated": 0, "out_of_order": 0}
    positions = [r.position for r in seen]
    found["skipped"] = len({r.position for r in stored} - set(positions))
    found["duplicated"] = len(positions) - len(set(positions))
    for events in streams.values():
        found["out_of_order"] += delivery_violations(events, events)["out_of_order"]
    return found


def tagged(
    stored: Sequence[RecordedEvent], kinds: Sequence[type], prefix: str = ""
) -> list[RecordedEvent]:
    """The events of `stored` a subscriber to `kinds` (and stream `prefix`) should get."""
    tags = {kind.__struct_config__.tag for kind in kinds}  # type: ignore[attr-defined]
    return [r for r in stored if r.event_type in tags and r.stream_id.startswith(prefix)]


class RecordingBalances(Balances):
    """The balance projection, noting every event it applies."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[RecordedEvent] = []

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        self.seen.append(recorded)
        return super().apply(view, recorded)


class RecordingProcess(TransferProcess):
    """The transfer saga, noting each event it reacts to and where its checkpoint (the
    low watermark) stood then: it must be below the event being handled."""

    def __init__(self) -> None:
        self.seen: list[RecordedEvent] = []
        self.watermark_passed = 0
        self.handle: ProcessManagerHandle | None = None

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        self.seen.append(recorded)
        if self.handle is not None and self.handle.position >= recorded.position:
            self.watermark_passed += 1
        return super().react(recorded)


async def bank_load(system: ActorSystem, accounts: int, commands: int, clients: int) -> int:
    """Open `accounts`, then `clients` tasks send deposits, withdrawals and transfers.
    Returns how many commands were answered."""
    router = system.aggregates(Account)
    transfers = system.aggregates(Transfer)
    for i in range(accounts):
        await router.ask(f"{i}", OpenAccount(account_id=f"{i}", owner="o"), command_id=f"o{i}")
        await router.ask(f"{i}", Deposit(account_id=f"{i}", amount=50_000), command_id=f"s{i}")
    answered = refused = 0

    async def client(number: int) -> None:
        nonlocal answered, refused
        rng = random.Random(number)
        for n in range(commands // clients):
            a, b = f"{rng.randrange(accounts)}", f"{rng.randrange(accounts)}"
            amount = rng.randint(1, 2_000)
            try:
                if rng.random() < 0.3 and a != b:
                    await transfers.ask(
                        f"t{number}-{n}",
                        RequestTransfer(
                            transfer_id=f"t{number}-{n}", source=a, target=b, amount=amount
                        ),
                    )
                elif rng.random() < 0.5:
                    await router.ask(a, Withdraw(account_id=a, amount=amount))
                else:
                    await router.ask(a, Deposit(account_id=a, amount=amount))
            except Rejected:
                refused += 1  # funds short: part of the load
            answered += 1

    async with anyio.create_task_group() as tg:
        for number in range(clients):
            tg.start_soon(client, number)
    return answered


async def run_faulted_load(
    path: Path, spec: str | None, *, naive: NaiveSubscriber | None = None
) -> dict[str, object]:
    accounts, commands = size(300, 1_000), size(3_000, 20_000)
    async with open_system(path, idle_timeout=None) as system:
        bus: EventBus = system.bus
        if naive is not None:
            bus._subscriptions.append(naive)  # type: ignore[arg-type]
        system.aggregates(Account)
        system.aggregates(Transfer)
        recording = RecordingBalances()
        balances = await system.project(recording)
        totals = await system.project(BankTotals())
        saga = RecordingProcess()
        process = await system.run_process_manager(saga)
        saga.handle = process
        seen: list[RecordedEvent] = []
        target = [2**62]
        reached = anyio.Event()

        async def count_all(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with bus.subscribe(from_position=0, name="every-event") as subscription:
                task_status.started()
                async for recorded in subscription:
                    seen.append(recorded)
                    if recorded.position >= target[0]:
                        reached.set()

        async with anyio.create_task_group() as tg:
            await tg.start(count_all)
            faults.configure(spec, seed=11)
            started = time.perf_counter()
            answered = await bank_load(system, accounts, commands, clients=64)
            elapsed = time.perf_counter() - started
            reordered = faults.hits("bus_deliver")
            faults.configure(None)
            # The last batch may be held by a `reorder`: one more commit shows the gap.
            await system.aggregates(Account).ask("0", Deposit(account_id="0", amount=1))
            with anyio.fail_after(60):
                # Quiescence: each saga step appends events the saga then reacts to.
                head = await settle(system.store, process)
                await balances.wait_for(head, timeout=60)
                await totals.wait_for(head, timeout=60)
                target[0] = head
                if seen and seen[-1].position >= head:
                    reached.set()
                await reached.wait()
            tg.cancel_scope.cancel()
        if naive is not None:
            bus._subscriptions.remove(naive)  # type: ignore[arg-type]
        stored = await whole_log(system.store)
        live = dict(balances.view.balances)
        projection_seen = list(recording.seen)  # before the rebuild re-applies
        await balances.rebuild()
        return {
            "answered": answered,
            "seconds": elapsed,
            "bus_hits": reordered,
            "stored": stored,
            "seen": seen,
            "live": live,
            "rebuilt": dict(balances.view.balances),
            "oracle": fold_balances(stored),
            "conserved": totals.view.conserved() and totals.view.in_flight == 0,
            "naive": naive.seen if naive is not None else [],
            "projection_seen": projection_seen,
            "saga_seen": saga.seen,
            "watermark_passed": saga.watermark_passed,
            "catch_ups": sum(s.catch_ups for s in bus.statistics()),
        }


SPEC = "after_commit_before_publish:delay:0-20:p0.5,bus_deliver:reorder:p0.2,bus_deliver:dup:p0.1"


async def test_ord1_reordered_and_duplicated_delivery_is_seen_exactly_once(
    tmp_path: Path, report: Report
) -> None:
    naive = NaiveSubscriber()
    outcome = await run_faulted_load(tmp_path / "ord.db", SPEC, naive=naive)
    stored = outcome["stored"]
    assert isinstance(stored, list)
    found = delivery_violations(outcome["seen"], stored)  # type: ignore[arg-type]
    control = delivery_violations(naive.seen, stored)
    # The balance projection and the saga see their filtered share, each exactly once.
    projected = delivery_violations(
        outcome["projection_seen"],  # type: ignore[arg-type]
        tagged(stored, Balances.event_types, "account-"),
    )
    sagas = per_stream_violations(
        outcome["saga_seen"],  # type: ignore[arg-type]
        tagged(stored, TransferProcess.event_types),
    )
    report.record(
        "ORD-1",
        events=len(stored),
        commands=outcome["answered"],
        **found,
        catch_ups=outcome["catch_ups"],
        control_skipped=control["skipped"],
        projection=projected,
        saga=sagas,
        saga_watermark_passed=outcome["watermark_passed"],
    )
    report.record(
        "RM-2",
        duplicated_batches_offered="bus_deliver:dup:p0.1",
        divergence=int(outcome["live"] != outcome["oracle"])
        + int(outcome["rebuilt"] != outcome["live"]),
    )
    assert found == {"skipped": 0, "duplicated": 0, "out_of_order": 0, "phantom": 0}
    assert projected == {"skipped": 0, "duplicated": 0, "out_of_order": 0, "phantom": 0}
    assert sagas == {"skipped": 0, "duplicated": 0, "out_of_order": 0}
    assert outcome["watermark_passed"] == 0
    assert outcome["live"] == outcome["oracle"]
    assert outcome["rebuilt"] == outcome["live"]
    assert outcome["conserved"] is True
    assert outcome["catch_ups"] != 0  # the faults did reach the subscriptions
    # The same checker catches the naive dedupe losing what came late.
    assert control["skipped"] > 0


async def _early_and_live(
    path: Path, monkeypatch: pytest.MonkeyPatch | None
) -> tuple[list[RecordedEvent], list[RecordedEvent], list[RecordedEvent], int]:
    """Writers append while a third of the batches fail after their INSERT, before
    COMMIT. A bus subscription records what it is given; with `monkeypatch`, the broken
    variant also publishes each batch from the writer thread as soon as it is inserted
    (before COMMIT) to a second list. Returns (live, early, stored, failed appends)."""
    early: list[RecordedEvent] = []
    live: list[RecordedEvent] = []
    failed = 0
    registry = EventRegistry([Deposited])
    async with open_store(path, registry=registry) as store:
        if monkeypatch is not None:
            loop = asyncio.get_running_loop()
            apply = _BatchWriter._apply_appends

            def publish_before_commit(
                self: _BatchWriter, conn: Any, appends: list[Any], at: float, **kw: Any
            ) -> list[Any]:
                outcomes = apply(self, conn, appends, at, **kw)
                batch = [
                    RecordedEvent(
                        item.stream_id,
                        outcome.first_version + i,
                        outcome.first_position + i,
                        tag,
                        schema,
                        event,
                        {},
                        at,
                    )
                    for item, outcome in zip(appends, outcomes, strict=True)
                    if isinstance(outcome, AppendResult)
                    for i, (event, (tag, schema, _data, _crc)) in enumerate(
                        zip(item.events, item.rows, strict=True)
                    )
                ]
                loop.call_soon_threadsafe(early.extend, batch)
                return outcomes

            monkeypatch.setattr(_BatchWriter, "_apply_appends", publish_before_commit)
        target = [2**62]
        reached = anyio.Event()
        async with open_bus(store) as bus, anyio.create_task_group() as tg:

            async def listen(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                async with bus.subscribe(name="live") as subscription:
                    task_status.started()
                    async for recorded in subscription:
                        live.append(recorded)
                        if recorded.position >= target[0]:
                            reached.set()

            await tg.start(listen)

            async def writer(i: int) -> None:
                nonlocal failed
                for n in range(size(20, 200)):
                    try:
                        await store.append(f"w-{i}", [Deposited(n)], expected_version=ANY)
                    except StoreError:
                        failed += 1  # the injected failure: nothing of it committed

            faults.configure("after_insert_before_commit:raise:p0.3", seed=5)
            async with anyio.create_task_group() as writers:
                for i in range(32):
                    writers.start_soon(writer, i)
            faults.configure(None)
            target[0] = head = await store.last_position()
            if live and live[-1].position >= head:
                reached.set()
            with anyio.fail_after(30):
                await reached.wait()
            tg.cancel_scope.cancel()
        stored = await whole_log(store)
    return live, early, stored, failed


async def test_ord1_publish_before_commit_is_caught_as_phantoms(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, early, stored, failed = await _early_and_live(tmp_path / "p.db", monkeypatch)
    found = delivery_violations(live, stored)
    control = delivery_violations(early, stored)
    report.record(
        "ORD-1",
        broken_variant="publish before commit",
        appends_failed_before_commit=failed,
        events=len(stored),
        live=found,
        caught_phantoms=control["phantom"],
    )
    assert failed > 0
    assert found == {"skipped": 0, "duplicated": 0, "out_of_order": 0, "phantom": 0}
    assert control["phantom"] > 0


async def test_ord2_catch_up_hands_over_to_live_with_no_gap(tmp_path: Path, report: Report) -> None:
    backlog = size(10_000, 200_000)
    async with open_system(tmp_path / "handover.db") as system:
        router = system.aggregates(Account)
        for i in range(32):
            await router.ask(f"{i}", OpenAccount(account_id=f"{i}", owner="o"))
        store = system.store
        while await store.last_position() < backlog:
            async with anyio.create_task_group() as tg:
                for i in range(32):
                    tg.start_soon(router.ask, f"{i}", Deposit(account_id=f"{i}", amount=1))
        seen: list[RecordedEvent] = []
        stop = anyio.Event()

        async def writer(i: int) -> None:
            while not stop.is_set():
                await router.ask(f"{i}", Deposit(account_id=f"{i}", amount=1))

        started = time.perf_counter()
        caught_up = 0.0
        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(writer, i)
            async with system.bus.subscribe(from_position=0, name="late") as subscription:
                async for recorded in subscription:
                    seen.append(recorded)
                    if recorded.position >= backlog and not caught_up:
                        caught_up = time.perf_counter() - started
                    if recorded.position >= backlog + 2_000:
                        stop.set()
                        break
        head = seen[-1].position
        stored = [r for r in await whole_log(store) if r.position <= head]
        found = delivery_violations(seen, stored)
        report.record("ORD-2", backlog=backlog, seconds_to_catch_up=caught_up, **found)
        assert found == {"skipped": 0, "duplicated": 0, "out_of_order": 0, "phantom": 0}


class SlowBalances(Balances):
    name = "slow.balances"


async def _read_your_writes(path: Path, rounds: int) -> dict[str, int]:
    """Deposits, each followed by `wait_for(its position)` and a read of the balance,
    on a projection slowed by 0-5 ms per event; then a command with no events, and a
    projection slower than the wait's timeout."""
    stale = 0
    async with open_system(path) as system:
        router = system.aggregates(Account)
        await router.ask("a", OpenAccount(account_id="a", owner="o"))
        balances = await system.project(SlowBalances())
        faults.configure("projection_apply:delay:0-5:*")
        expected = 0
        for n in range(rounds):
            result = await router.ask("a", Deposit(account_id="a", amount=n + 1))
            expected += n + 1
            await balances.wait_for(result.position, timeout=5)
            stale += balances.view.balance_of("a") != expected
        # A command that produced no events: its position is already covered.
        again = await router.ask("a", OpenAccount(account_id="a", owner="o"))
        no_events_answered = 0
        with anyio.move_on_after(1):
            await balances.wait_for(again.position, timeout=1)
            no_events_answered = int(again.events == ())
        # A projection slower than the timeout: ConsistencyTimeout, not a hang.
        faults.configure("projection_apply:delay:300:*")
        late = await router.ask("a", Deposit(account_id="a", amount=1))
        timeout_raised = 0
        with anyio.move_on_after(5):
            try:
                await balances.wait_for(late.position, timeout=0.05)
            except ConsistencyTimeout:
                timeout_raised = 1
        faults.configure(None)
    return {
        "asks": rounds,
        "stale_reads": stale,
        "no_event_command_answered": no_events_answered,
        "timeouts_correct": timeout_raised,
    }


def check_read_your_writes(figures: dict[str, int]) -> list[str]:
    """Violations of ORD-3: a read after `wait_for` that misses the write; a wait on a
    no-event command that does not return; a slow projection that does not time out."""
    found: list[str] = []
    if figures["stale_reads"]:
        found.append(f"{figures['stale_reads']} of {figures['asks']} reads were stale")
    if not figures["no_event_command_answered"]:
        found.append("wait_for on a command without events did not return")
    if not figures["timeouts_correct"]:
        found.append("a projection slower than the timeout raised no ConsistencyTimeout")
    return found


async def test_ord3_read_your_writes_and_a_clean_consistency_timeout(
    tmp_path: Path, report: Report
) -> None:
    figures = await _read_your_writes(tmp_path / "ryw.db", size(50, 500))
    report.record("ORD-3", **figures)
    assert check_read_your_writes(figures) == []


async def test_ord3_the_checker_catches_a_wait_that_does_not_wait(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: wait_for returns at once (as if the view were up to date).
    async def no_wait(self: Any, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        return None

    monkeypatch.setattr(ProjectionHandle, "wait_for", no_wait)
    violations = check_read_your_writes(await _read_your_writes(tmp_path / "ryw.db", 50))
    report.record("ORD-3", broken_variant="wait_for does not wait", caught=len(violations))
    assert any("stale" in v for v in violations)


def _event(stream: str, version: int, position: int) -> RecordedEvent:
    return RecordedEvent(stream, version, position, "bank.deposited", 1, None, {}, 0.0)


def test_ord1_the_saga_checkers_catch_a_double_a_skip_a_reorder_and_a_passed_watermark() -> None:
    stored = [_event("a", 1, 1), _event("b", 1, 2), _event("a", 2, 3)]
    # Streams handled concurrently may interleave across streams: not a violation.
    assert per_stream_violations([stored[1], stored[0], stored[2]], stored) == {
        "skipped": 0,
        "duplicated": 0,
        "out_of_order": 0,
    }
    broken = per_stream_violations([stored[2], stored[0], stored[0]], stored)
    assert broken["skipped"] == 1
    assert broken["duplicated"] == 1
    assert broken["out_of_order"] > 0

    class Ahead:
        position = 3  # a checkpoint already past the event being handled

    saga = RecordingProcess()
    saga.handle = Ahead()  # type: ignore[assignment]
    saga.react(_event("account-a", 1, 2))
    assert saga.watermark_passed == 1
