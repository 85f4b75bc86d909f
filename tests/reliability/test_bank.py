"""Money conservation through the transfer saga (BANK-1), under duplicate delivery,
cancelled asks and kill -9 of the process, checked at every position of the log."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from actors import open_system
from demo.bank import (
    Account,
    AccountOpened,
    BankTotals,
    Credited,
    Debited,
    Deposit,
    Deposited,
    OpenAccount,
    OrderCharged,
    Refunded,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdrawn,
)
from store import RecordedEvent, faults
from tests.reliability._report import Report, size, time_limit
from tests.reliability.oracle import settle, whole_log
from tests.reliability.test_durability import run_child

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(600))]

START = 1_000_000


def conservation_violations(events: Sequence[RecordedEvent]) -> dict[str, int]:
    """Fold the log one position at a time: at every position the money in balances plus
    the money in flight (debited, not yet credited or refunded) equals what was paid in
    minus what was paid out, and no transfer pays out more than it took; no balance is
    ever negative; each transfer is debited,
    credited and refunded at most once, never both credited and refunded."""
    balances: dict[str, int] = {}
    in_flight: dict[str, int] = {}
    paid_in = held = flying = 0
    legs: Counter[tuple[str, str]] = Counter()
    found = {"conservation": 0, "negative": 0, "duplicate_legs": 0, "credit_and_refund": 0}
    for recorded in events:
        account = recorded.stream_id.removeprefix("account-")
        match recorded.event:
            case AccountOpened():
                balances.setdefault(account, 0)
            case Deposited(amount=n):
                paid_in += n
                held += n
                balances[account] = balances.get(account, 0) + n
            case Withdrawn(amount=n) | OrderCharged(amount=n):
                paid_in -= n
                held -= n
                balances[account] = balances.get(account, 0) - n
            case Debited(transfer_id=t, amount=n):
                legs[t, "debit"] += 1
                held -= n
                flying += n
                in_flight[t] = in_flight.get(t, 0) + n
                balances[account] = balances.get(account, 0) - n
            case Credited(transfer_id=t, amount=n) | Refunded(transfer_id=t, amount=n):
                leg = "credit" if isinstance(recorded.event, Credited) else "refund"
                legs[t, leg] += 1
                held += n
                flying -= n
                in_flight[t] = in_flight.get(t, 0) - n
                balances[account] = balances.get(account, 0) + n
                if in_flight[t] < 0:  # paid out more than was taken: money made up
                    found["conservation"] += 1
            case _:
                continue
        if held + flying != paid_in:
            found["conservation"] += 1
        if balances.get(account, 0) < 0:
            found["negative"] += 1
    found["duplicate_legs"] = sum(1 for count in legs.values() if count > 1)
    transfers = {t for t, _ in legs}
    found["credit_and_refund"] = sum(
        1 for t in transfers if legs[t, "credit"] and legs[t, "refund"]
    )
    found["stuck"] = sum(1 for amount in in_flight.values() if amount != 0)
    return found


CLEAN = {
    "conservation": 0,
    "negative": 0,
    "duplicate_legs": 0,
    "credit_and_refund": 0,
    "stuck": 0,
}


def _event(position: int, stream_id: str, event: object) -> RecordedEvent:
    tag = type(event).__struct_config__.tag  # type: ignore[attr-defined]
    return RecordedEvent(stream_id, position, position, tag, 1, event, {}, 0.0)


def test_bank1_the_checker_catches_a_doubled_credit_and_a_lost_refund() -> None:
    good = [
        _event(1, "account-a", AccountOpened(owner="x")),
        _event(2, "account-a", Deposited(amount=100)),
        _event(3, "account-a", Debited(transfer_id="t", target="b", amount=40)),
        _event(4, "account-b", Credited(transfer_id="t", source="a", amount=40)),
    ]
    assert conservation_violations(good) == CLEAN
    doubled = [*good, _event(5, "account-b", Credited(transfer_id="t", source="a", amount=40))]
    found = conservation_violations(doubled)
    assert found["duplicate_legs"] == 1
    assert found["conservation"] == 1
    lost = good[:3]  # debited, never credited nor refunded
    assert conservation_violations(lost)["stuck"] == 1
    both = [*good, _event(5, "account-a", Refunded(transfer_id="t", amount=40, reason="x"))]
    assert conservation_violations(both)["credit_and_refund"] == 1


async def test_bank1_transfers_conserve_money_under_duplicates_and_cancelled_asks(
    tmp_path: Path, report: Report
) -> None:
    accounts, transfers_n = size(200, 1_000), size(2_000, 50_000)
    cancelled = 0
    async with open_system(tmp_path / "bank.db", idle_timeout=None) as system:
        router = system.aggregates(Account)
        transfers = system.aggregates(Transfer)
        process = await system.run_process_manager(TransferProcess())
        totals = await system.project(BankTotals())
        for i in range(accounts):
            await router.ask(f"{i}", OpenAccount(account_id=f"{i}", owner="o"), command_id=f"o{i}")
            await router.ask(f"{i}", Deposit(account_id=f"{i}", amount=START), command_id=f"s{i}")
        faults.configure("bus_deliver:dup:p0.1", seed=3)

        async def client(number: int) -> None:
            nonlocal cancelled
            rng = random.Random(number)
            for n in range(transfers_n // 64):
                source, target = rng.sample(range(accounts), 2)
                amount = rng.randint(1, 5_000) if rng.random() > 0.02 else START * 2
                transfer_id = f"t{number}-{n}"
                command = RequestTransfer(
                    transfer_id=transfer_id, source=f"{source}", target=f"{target}", amount=amount
                )
                if rng.random() < 0.05:
                    with anyio.move_on_after(rng.random() * 0.002) as scope:
                        await transfers.ask(transfer_id, command, command_id=transfer_id)
                    if scope.cancelled_caught:
                        cancelled += 1
                        # Resent with the same id: applied once whatever the first did.
                        await transfers.ask(transfer_id, command, command_id=transfer_id)
                else:
                    await transfers.ask(transfer_id, command, command_id=transfer_id)

        async with anyio.create_task_group() as tg:
            for number in range(64):
                tg.start_soon(client, number)
        faults.configure(None)
        with anyio.fail_after(120):
            head = await settle(system.store, process)
            await totals.wait_for(head, timeout=60)
        events = await whole_log(system.store)
        found = conservation_violations(events)
        view = totals.view
    report.record(
        "BANK-1",
        variant="in-process: 10% duplicate delivery, 5% cancelled asks",
        transfers=transfers_n,
        cancelled_asks=cancelled,
        samples=len(events),
        conservation_errors=found["conservation"],
        negative_balances=found["negative"],
        duplicate_legs=found["duplicate_legs"],
        stuck_sagas=found["stuck"],
        read_model_equal=int(view.conserved() and view.balances == accounts * START),
    )
    assert found == CLEAN
    assert view.conserved()
    assert view.in_flight == 0
    assert view.balances == accounts * START  # transfers only move money


async def test_bank1_transfers_conserve_money_across_kill9(tmp_path: Path, report: Report) -> None:
    db = tmp_path / "bank.db"
    kills = size(2, 5)
    rng = random.Random("bank1-kill")
    for round_ in range(kills):
        lines, code = await run_child(
            db,
            seed=round_,
            kill_after_acks=rng.randint(50, 400),
            extra=("--accounts", "30", "--clients", "16", "--transfers"),
        )
        assert code == -9
        del lines
    async with open_system(db) as system:
        system.aggregates(Account)
        system.aggregates(Transfer)
        process = await system.run_process_manager(TransferProcess())
        with anyio.fail_after(120):
            await settle(system.store, process)
        events = await whole_log(system.store)
    found = conservation_violations(events)
    report.record(
        "BANK-1",
        variant="child process killed with SIGKILL, saga resumed",
        kills=kills,
        samples=len(events),
        conservation_errors=found["conservation"],
        negative_balances=found["negative"],
        duplicate_legs=found["duplicate_legs"],
        stuck_sagas=found["stuck"],
    )
    assert found == CLEAN
