"""The bank against an in-memory model, step by step (PBT-1).

A Hypothesis state machine drives a real system on a SQLite file: accounts opened,
deposits, withdrawals (the model predicts each refusal), transfers through the
`TransferProcess` saga, retries under the same command id, concurrent bursts, crashes
(the system abandoned mid-flight by cancelling it, then the same file reopened),
projection rebuilds and cancelled asks. Hypothesis has no async state machines, so the
machine owns an `asyncio.Runner` and every rule is one `runner.run(...)`; each step
opens the system on the file, so nothing but the file carries over between steps. A
command whose outcome the caller did not learn (cancelled, crashed) is sent again under
its command id, which returns its first outcome if it was stored: the model applies
each command exactly once. After every step: balances and stream versions equal the
model, the read model equals the model at its position, the balances sum to deposits
minus withdrawals, and no balance is negative.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import ActorSystem, Rejected, open_system
from demo.bank import (
    Account,
    AccountNotOpen,
    Balances,
    BalancesView,
    Deposit,
    Deposited,
    InsufficientFunds,
    OpenAccount,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdraw,
)
from store import RecordedEvent
from tests.reliability._report import SOAK, Report, size, time_limit
from tests.reliability.oracle import settle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(600))]

IDS = ("p0", "p1", "p2", "p3", "p4")
account_ids = st.sampled_from(IDS)
amounts = st.integers(1, 10**6)
STEP_LIMIT = 30.0
stats = {"steps": 0, "examples": 0, "recovered": 0}


async def _settle(system: ActorSystem, saga: Any) -> None:
    """Wait until the saga has handled everything, including what it appended itself."""
    await settle(system.store, saga, STEP_LIMIT)


class BankMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.dir = Path(tempfile.mkdtemp(prefix="pbt1-"))
        self.path = self.dir / "bank.db"
        self.balances: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.deposits = 0
        self.withdrawals = 0
        self.done: list[tuple[str, Deposit | Withdraw, str]] = []
        self.ids = itertools.count(1)
        stats["examples"] += 1

    def teardown(self) -> None:
        self.runner.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model -------------------------------------------------------------------

    def _cid(self) -> str:
        return f"c{next(self.ids)}"

    def _expect(self, account: str, command: Deposit | Withdraw) -> type[Rejected] | None:
        if account not in self.balances:
            return AccountNotOpen
        if isinstance(command, Withdraw) and command.amount > self.balances[account]:
            return InsufficientFunds
        return None

    def _apply(self, account: str, command: Deposit | Withdraw) -> None:
        sign = 1 if isinstance(command, Deposit) else -1
        self.balances[account] += sign * command.amount
        self.versions[account] += 1
        if sign > 0:
            self.deposits += command.amount
        else:
            self.withdrawals += command.amount

    def _run(self, body: Any) -> None:
        async def step() -> None:
            with anyio.fail_after(STEP_LIMIT * 2):
                async with open_system(self.path) as system:
                    await body(system)

        self.runner.run(step())
        stats["steps"] += 1

    async def _send(
        self, system: ActorSystem, account: str, command: Deposit | Withdraw, cid: str
    ) -> bool:
        """Send a money command whose outcome the model predicts; True if it applied."""
        expected = self._expect(account, command)
        router = system.aggregates(Account)
        if expected is not None:
            with pytest.raises(expected):
                await router.ask(account, command, command_id=cid)
            return False
        result = await router.ask(account, command, command_id=cid)
        assert not result.duplicate
        self._apply(account, command)
        self.done.append((account, command, cid))
        return True

    async def _recover(self, system: ActorSystem, pending: list[tuple[str, Any, str]]) -> None:
        """Learn the outcome of commands the caller lost: send each again under its id."""
        for account, command, cid in pending:
            try:
                result = await system.aggregates(Account).ask(account, command, command_id=cid)
            except Rejected:
                continue
            if any(c == cid for _, _, c in self.done):
                assert result.duplicate
                continue
            stats["recovered"] += int(result.duplicate)
            self._apply(account, command)
            self.done.append((account, command, cid))

    # -- rules -----------------------------------------------------------------------

    @rule(account=account_ids)
    def open_account(self, account: str) -> None:
        async def body(system: ActorSystem) -> None:
            result = await system.aggregates(Account).ask(account, OpenAccount(account, account))
            if account in self.balances:
                assert result.events == ()
            else:
                assert len(result.events) == 1
                self.balances[account] = 0
                self.versions[account] = 1

        self._run(body)

    @rule(account=account_ids, amount=amounts)
    def deposit(self, account: str, amount: int) -> None:
        async def body(system: ActorSystem) -> None:
            await self._send(system, account, Deposit(account, amount), self._cid())

        self._run(body)

    @rule(account=account_ids, amount=amounts)
    def withdraw(self, account: str, amount: int) -> None:
        async def body(system: ActorSystem) -> None:
            await self._send(system, account, Withdraw(account, amount), self._cid())

        self._run(body)

    @rule(source=account_ids, dest=account_ids, amount=amounts)
    def transfer(self, source: str, dest: str, amount: int) -> None:
        target = dest
        if source == target:
            return
        transfer_id = f"t{next(self.ids)}"

        async def body(system: ActorSystem) -> None:
            saga = await system.run_process_manager(TransferProcess())
            await system.aggregates(Transfer).ask(
                transfer_id, RequestTransfer(transfer_id, source, target, amount)
            )
            await _settle(system, saga)
            if source not in self.balances or amount > self.balances[source]:
                return  # the debit is refused; the transfer fails with no money moved
            self.versions[source] += 2  # debited, then settled or refunded
            if target in self.balances:
                self.balances[source] -= amount
                self.balances[target] += amount
                self.versions[target] += 1

        self._run(body)

    @rule(data=st.data())
    def retry_same_command_id(self, data: st.DataObject) -> None:
        if not self.done:
            return
        account, command, cid = data.draw(st.sampled_from(self.done))

        async def body(system: ActorSystem) -> None:
            result = await system.aggregates(Account).ask(account, command, command_id=cid)
            assert result.duplicate  # the first outcome again, nothing stored

        self._run(body)

    @rule(
        burst=st.lists(
            st.tuples(account_ids, st.booleans(), st.integers(1, 10**5)), min_size=1, max_size=20
        )
    )
    def concurrent_burst(self, burst: list[tuple[str, bool, int]]) -> None:
        commands = [(a, Deposit(a, n) if up else Withdraw(a, n), self._cid()) for a, up, n in burst]

        async def body(system: ActorSystem) -> None:
            router = system.aggregates(Account)
            outcomes: list[tuple[str, Any, str, bool]] = []

            async def one(account: str, command: Any, cid: str) -> None:
                try:
                    await router.ask(account, command, command_id=cid)
                except (AccountNotOpen, InsufficientFunds):
                    # Refusals depend on the order the burst ran in; any other is a bug.
                    outcomes.append((account, command, cid, False))
                else:
                    outcomes.append((account, command, cid, True))

            async with anyio.create_task_group() as tg:
                for account, command, cid in commands:
                    tg.start_soon(one, account, command, cid)
            for account, command, cid, applied in outcomes:
                if applied:
                    assert account in self.balances
                    self._apply(account, command)
                    self.done.append((account, command, cid))

        self._run(body)

    @rule(burst=st.lists(st.tuples(account_ids, st.integers(1, 10**5)), min_size=2, max_size=10))
    def crash_restart(self, burst: list[tuple[str, int]]) -> None:
        commands = [(a, Deposit(a, n), self._cid()) for a, n in burst]

        async def crash() -> None:
            # Abandon the system mid-flight: its scope is cancelled as soon as one ask
            # came back; the rest are in the mailboxes, the writer, or not sent yet.
            with anyio.fail_after(STEP_LIMIT), anyio.CancelScope() as scope:
                async with open_system(self.path) as system:
                    router = system.aggregates(Account)

                    async def one(account: str, command: Deposit, cid: str) -> None:
                        try:
                            await router.ask(account, command, command_id=cid)
                        except Rejected:
                            pass
                        scope.cancel()

                    async with anyio.create_task_group() as tg:
                        for account, command, cid in commands:
                            tg.start_soon(one, account, command, cid)

        self.runner.run(crash())

        async def body(system: ActorSystem) -> None:
            await self._recover(system, commands)

        self._run(body)

    @rule()
    def rebuild_projection(self) -> None:
        async def body(system: ActorSystem) -> None:
            live = await system.project(Balances())
            head = await system.store.last_position()
            await live.wait_for(head, timeout=STEP_LIMIT)
            before = dict(live.view.balances)
            await live.rebuild()
            assert dict(live.view.balances) == before == self.balances

        self._run(body)

    @rule(
        burst=st.lists(st.tuples(account_ids, amounts), min_size=2, max_size=6),
        victim=st.integers(0, 5),
    )
    def cancel_random_inflight(self, burst: list[tuple[str, int]], victim: int) -> None:
        commands = [(a, Deposit(a, n), self._cid()) for a, n in burst]
        chosen = victim % len(commands)

        async def body(system: ActorSystem) -> None:
            router = system.aggregates(Account)
            lost: list[tuple[str, Any, str]] = []

            async def one(k: int, account: str, command: Deposit, cid: str) -> None:
                with anyio.CancelScope() as scope:
                    if k == chosen:
                        scope.cancel()  # cancelled at its first checkpoint, mid-ask
                    try:
                        await router.ask(account, command, command_id=cid)
                    except Rejected:
                        return
                    self._apply(account, command)
                    self.done.append((account, command, cid))
                    return
                lost.append((account, command, cid))

            async with anyio.create_task_group() as tg:
                for k, (account, command, cid) in enumerate(commands):
                    tg.start_soon(one, k, account, command, cid)
            await self._recover(system, lost)

        self._run(body)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        async def body(system: ActorSystem) -> None:
            router = system.aggregates(Account)
            for account in IDS:
                state = await router.state(account)
                assert state.balance == self.balances.get(account, 0), account
                assert state.balance >= 0
                assert state.pending == ()  # every transfer settled
                stream = await system.store.read_stream(f"account-{account}", limit=None)
                assert len(stream) == self.versions.get(account, 0), account
            view = await system.project(Balances())
            head = await system.store.last_position()
            await view.wait_for(head, timeout=STEP_LIMIT)
            assert view.position >= head
            assert dict(view.view.balances) == self.balances
            assert sum(self.balances.values()) == self.deposits - self.withdrawals

        self._run(body)


BankMachine.TestCase.settings = settings(
    max_examples=size(30, 5_000),
    stateful_step_count=size(20, 50),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None if not SOAK else settings().database,
)


def test_pbt1_stateful_bank_vs_model(report: Report) -> None:
    stats.update(steps=0, examples=0, recovered=0)
    BankMachine.TestCase().runTest()
    report.record(
        "PBT-1",
        examples=stats["examples"],
        steps=stats["steps"],
        recovered_after_crash_or_cancel=stats["recovered"],
        failing_examples=0,
    )
    assert stats["examples"] > 0
    assert stats["steps"] > 0


def test_pbt1_the_invariants_catch_a_read_model_that_counts_deposits_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Balances.apply

    def doubled(self: Balances, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        view = original(self, view, recorded)
        return original(self, view, recorded) if isinstance(recorded.event, Deposited) else view

    monkeypatch.setattr(Balances, "apply", doubled)

    class Broken(BankMachine):
        pass

    Broken.TestCase.settings = settings(
        max_examples=20,
        stateful_step_count=20,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    with pytest.raises(AssertionError):
        Broken.TestCase().runTest()
