from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors import ActorSystem, open_system


@pytest.fixture(params=["memory", "file"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """ ":memory:" and a SQLite file: the runtime must behave alike on both."""
    return ":memory:" if request.param == "memory" else str(tmp_path / "actors.db")


@pytest.fixture
async def system(store_path: str) -> AsyncIterator[ActorSystem]:
    async with open_system(store_path, synchronous="NORMAL") as opened:
        yield opened
