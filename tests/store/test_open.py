"""`open_store` picks the backend from its target: a PostgreSQL URL, or a SQLite file."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from store import SQLiteEventStore, StoreOptions, StoreUnavailable, open_store


async def test_a_path_or_memory_opens_sqlite(tmp_path: Path) -> None:
    async with open_store(tmp_path / "e.db") as on_disk:
        assert isinstance(on_disk, SQLiteEventStore)
    async with open_store(":memory:") as in_memory:
        assert isinstance(in_memory, SQLiteEventStore)


@pytest.mark.parametrize("url", ["postgresql://u:secret@db/x", "POSTGRES://db/x"])
async def test_a_postgres_url_without_the_extra_says_how_to_install_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "store._postgres", None)  # as if not installed
    with pytest.raises(StoreUnavailable, match=r"pip install 'esactors\[postgres\]'") as info:
        open_store(url)
    assert "secret" not in str(info.value)


async def test_a_postgres_url_without_asyncpg_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_asyncpg(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")

    monkeypatch.setattr(importlib, "import_module", no_asyncpg)
    with pytest.raises(StoreUnavailable, match=r"asyncpg is missing.*esactors\[postgres\]"):
        open_store("postgresql://db/x")


async def test_another_missing_module_of_the_postgres_store_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'nowhere'", name="nowhere")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="nowhere"):
        open_store("postgresql://db/x")


async def test_a_postgres_url_opens_the_postgres_store(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    @asynccontextmanager
    async def open_postgres_store(url: str, **kwargs: Any) -> AsyncIterator[str]:
        calls.append((url, kwargs))
        yield "the postgres store"

    fake = types.ModuleType("store._postgres")
    fake.open_postgres_store = open_postgres_store  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "store._postgres", fake)
    async with open_store("postgres://db/x", max_read_limit=5) as opened:
        got: object = opened
    assert got == "the postgres store"
    assert calls == [
        (
            "postgres://db/x",
            {"registry": None, "schema": None, "options": StoreOptions(max_read_limit=5)},
        )
    ]
