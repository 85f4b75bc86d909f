from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import SQLiteEventStore, open_store
from tests.store._events import make_registry


@pytest.fixture(params=["file", "memory"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a contract test's store lives: a file in tmp_path, or ":memory:"."""
    return str(tmp_path / "events.db") if request.param == "file" else ":memory:"


@pytest.fixture
async def store(store_path: str) -> AsyncIterator[SQLiteEventStore]:
    async with open_store(store_path, registry=make_registry()) as opened:
        yield opened
