"""The system's bus and `project`: read your own writes through a real projection."""

from __future__ import annotations

from actors import open_system
from readmodels import Projection
from store import RecordedEvent
from tests.actors.domain import Account, Deposit, Deposited, OpenAccount, Withdraw, Withdrawn


class Balances(Projection[dict[str, int]]):
    event_types = ("test.bank.deposited", "test.bank.withdrawn")

    def initial_view(self) -> dict[str, int]:
        return {}

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        event = recorded.event
        delta = event.amount if isinstance(event, Deposited) else 0
        if isinstance(event, Withdrawn):
            delta = -event.amount
        view[recorded.stream_id] = view.get(recorded.stream_id, 0) + delta
        return view


async def test_a_projection_started_by_the_system_sees_acknowledged_commands(
    store_path: str,
) -> None:
    async with open_system(store_path) as system:
        accounts = system.aggregates(Account)
        await accounts.ask("early", OpenAccount(owner="ada"))
        await accounts.ask("early", Deposit(amount=7))  # before the projection starts
        balances = await system.project(Balances())
        await accounts.ask("a1", OpenAccount(owner="bob"))
        await accounts.ask("a1", Deposit(amount=100))
        last = await accounts.ask("a1", Withdraw(amount=30))
        await balances.wait_for(last.position)
        assert balances.view == {"account-early": 7, "account-a1": 70}
        assert balances.running
    assert not balances.running  # the system's task group stopped it on exit
