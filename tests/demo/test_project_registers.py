"""`ActorSystem.project` registers the projection's event classes first."""

from __future__ import annotations

from pathlib import Path

import anyio

from actors import open_system
from demo.bank import Account, Balances, Deposit, OpenAccount


async def test_a_projection_started_before_any_aggregate_decodes_the_log(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with anyio.fail_after(30):
        async with open_system(path) as system:
            await system.aggregates(Account).ask("a", OpenAccount("a", "ann"))
            await system.aggregates(Account).ask("a", Deposit("a", 7))
        async with open_system(path) as system:
            balances = await system.project(Balances())  # no aggregate used yet
            await balances.wait_for(await system.store.last_position(), timeout=10)
            assert balances.view.balances == {"a": 7}
