"""The wall clock moving backwards and forwards mid-load (CLK-1).

`recorded_at` is taken from `time.time()` inside the write transaction; it is
informational only. The test moves that clock back one hour, then forward one day, while
16 clients append, and checks that everything that orders or resumes work (stream
versions, global positions, snapshots, projection catch-up, restarts) depends only on
version and position, and that ask timeouts, which run on the event loop's monotonic
clock, neither fire early nor late. CLK-2 (persisted saga deadlines) does not apply: the
framework has no deadline or timer feature.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from actors import AskTimeout, open_system
from demo.bank import Account, Balances, Deposit, OpenAccount
from store import RecordedEvent
from tests.reliability._report import Report, size, time_limit
from tests.reliability.oracle import fold_balances, whole_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(180))]

HOUR = 3600.0
DAY = 86400.0


def ordering_violations(events: Sequence[RecordedEvent]) -> list[str]:
    """What is wrong with `events` as a consumer's view of the log: positions not
    strictly increasing, or a stream's versions not 1, 2, 3... in the order seen."""
    found: list[str] = []
    for a, b in itertools.pairwise(events):
        if b.position <= a.position:
            found.append(f"position {b.position} after {a.position}")
    versions: dict[str, int] = {}
    for recorded in events:
        expected = versions.get(recorded.stream_id, 0) + 1
        if recorded.version != expected:
            found.append(f"{recorded.stream_id} v{recorded.version} where v{expected} was due")
        versions[recorded.stream_id] = recorded.version
    return found


class JumpingClock:
    """`time.time` that is real, then one hour behind, then one day ahead."""

    def __init__(self, real: object) -> None:
        assert callable(real)
        self._real = real
        self.offset = 0.0

    def __call__(self) -> float:
        value = self._real()
        assert isinstance(value, float)
        return value + self.offset


def test_clk1_the_checker_catches_ordering_by_recorded_at() -> None:
    # The broken variant: a consumer that orders by timestamp after the clock went back.
    events = [
        RecordedEvent("account-a", 1, 1, "bank.deposited", 1, None, {}, 1_000.0),
        RecordedEvent("account-a", 2, 2, "bank.deposited", 1, None, {}, 1_000.0 - HOUR),
        RecordedEvent("account-b", 1, 3, "bank.deposited", 1, None, {}, 1_000.0 + DAY),
    ]
    assert ordering_violations(events) == []
    assert len(ordering_violations(sorted(events, key=lambda r: r.recorded_at))) > 0


async def test_clk1_wall_clock_jumps_change_no_order_and_fire_no_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    clock = JumpingClock(time.time)
    monkeypatch.setattr(time, "time", clock)
    path = tmp_path / "clock.db"
    accounts_n = size(40, 400)
    deposits = size(15, 50)
    total = accounts_n * (deposits + 1)
    rng = random.Random(61)
    amounts = {f"a{i}": [rng.randint(1, 5_000) for _ in range(deposits)] for i in range(accounts_n)}
    answered = 0
    spurious = 0
    with anyio.fail_after(120):
        async with open_system(path, ask_timeout=30.0) as system:
            router = system.aggregates(Account, snapshot_every=5)
            live = await system.project(Balances())

            async def client(ids: list[str]) -> None:
                nonlocal answered, spurious
                for account in ids:
                    commands: list[OpenAccount | Deposit] = [OpenAccount(account, account)]
                    commands += [Deposit(account, a) for a in amounts[account]]
                    for command in commands:
                        try:
                            await router.ask(account, command, timeout=30.0)
                        except AskTimeout:
                            spurious += 1  # 30 s of monotonic time never pass here
                            continue
                        answered += 1
                        if answered == total // 3:
                            clock.offset = -HOUR
                        elif answered == 2 * total // 3:
                            clock.offset = DAY

            ids = sorted(amounts)
            async with anyio.create_task_group() as tg:
                for k in range(16):
                    tg.start_soon(client, ids[k::16])
            head = await system.store.last_position()
            await live.wait_for(head, timeout=60)
            stored = await whole_log(system.store)
            live_view = dict(live.view.balances)
            # A projection started now catches up by position alone.
            late = await system.project(Balances())
            await late.wait_for(head, timeout=60)
            late_view = dict(late.view.balances)
        # Restart: aggregates load from snapshots taken under both clock jumps.
        async with open_system(path) as system:
            router = system.aggregates(Account, snapshot_every=5)
            reloaded = {a: ((s := await router.state(a)).balance, s.owner) for a in ids}
            versions = {a: len(await system.store.read_stream(f"account-{a}")) for a in ids}
            # One more command per account goes on from the right version.
            after = await router.ask(ids[0], Deposit(ids[0], 1))
    oracle = fold_balances(stored)
    stamps = [r.recorded_at for r in stored]
    went_back = sum(1 for a, b in itertools.pairwise(stamps) if b < a)
    violations = ordering_violations(stored)
    by_stream: dict[str, list[RecordedEvent]] = {}
    for recorded in stored:
        by_stream.setdefault(recorded.stream_id, []).append(recorded)
    stream_violations = sum(len(ordering_violations(v)) for v in by_stream.values())
    control = len(ordering_violations(sorted(stored, key=lambda r: r.recorded_at)))
    report.record(
        "CLK-1",
        events=len(stored),
        clock_steps_back=went_back,
        ordering_violations=len(violations) + stream_violations,
        spurious_timeouts=spurious,
        control_violations=control,
    )
    assert answered == total
    assert spurious == 0
    assert went_back > 0  # the jump reached the recorded timestamps
    assert violations == []
    assert stream_violations == 0
    assert [r.position for r in stored] == list(range(1, len(stored) + 1))
    assert live_view == oracle == late_view
    assert {a: b for a, (b, _) in reloaded.items()} == {a: oracle[a] for a in ids}
    assert all(owner == a for a, (_, owner) in reloaded.items())
    assert all(v == deposits + 1 for v in versions.values())
    assert after.version == deposits + 2
    assert control > 0  # ordering by recorded_at is caught by the same checker
