"""The openers' options: typed keywords (`StoreSettings`) that cannot drift from
`StoreOptions`, a whole `StoreOptions` with keywords over it, and a misspelled option
refused by name before anything is opened."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from store import (
    InvalidStoreOption,
    StoreOptions,
    StoreSettings,
    open_store,
)
from store._postgres import open_postgres_store
from store._sqlite import open_sqlite_store

FIELDS = [field.name for field in dataclasses.fields(StoreOptions)]


def test_the_settings_are_the_fields_of_store_options_with_their_types() -> None:
    assert StoreSettings.__required_keys__ == frozenset()
    assert StoreSettings.__optional_keys__ == frozenset(FIELDS)
    assert typing.get_type_hints(StoreSettings) == typing.get_type_hints(StoreOptions)


# Each opener, at a target where nothing exists yet (the PostgreSQL port is one nothing
# listens on: the option is refused before any connection is tried).
OPENERS: dict[str, Callable[[Path], Any]] = {
    "open_store": lambda tmp: open_store(tmp / "events.db", max_events_per_apend=3),  # type: ignore[call-arg]
    "open_store(postgresql://)": lambda tmp: open_store(
        "postgresql://127.0.0.1:1/nowhere",
        max_events_per_apend=3,  # type: ignore[call-arg]
    ),
    "open_sqlite_store": lambda tmp: open_sqlite_store(tmp / "events.db", max_events_per_apend=3),  # type: ignore[call-arg]
    "open_postgres_store": lambda tmp: open_postgres_store(
        "postgresql://127.0.0.1:1/nowhere",
        max_events_per_apend=3,  # type: ignore[call-arg]
    ),
}


async def _open(opener: AbstractAsyncContextManager[Any]) -> None:
    async with opener:
        pass


@pytest.mark.parametrize("opener", OPENERS)
async def test_a_misspelled_option_is_refused_by_name_with_the_options_listed(
    tmp_path: Path, opener: str
) -> None:
    with pytest.raises(InvalidStoreOption) as caught:
        await _open(OPENERS[opener](tmp_path))
    error = caught.value
    assert (error.name, error.value, error.unknown) == ("max_events_per_apend", 3, True)
    assert isinstance(error, ValueError)
    message = str(error)
    assert "there is no store option max_events_per_apend" in message
    assert all(name in message for name in FIELDS)
    assert os.listdir(tmp_path) == []  # nothing opened


async def test_a_whole_options_struct_and_keywords_over_it(tmp_path: Path) -> None:
    tuned = StoreOptions(synchronous="NORMAL", max_read_limit=5)
    async with open_store(tmp_path / "a.db", options=tuned) as store:
        assert store.options == tuned
    async with open_store(tmp_path / "b.db", options=tuned, max_read_limit=7) as store:
        assert store.options == StoreOptions(synchronous="NORMAL", max_read_limit=7)
    async with open_store(tmp_path / "c.db", max_read_limit=7) as store:
        assert store.options == StoreOptions(max_read_limit=7)
    assert tuned.max_read_limit == 5  # the struct given is not changed


async def test_a_keyword_over_a_struct_is_checked_like_any_option(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreOption) as caught:
        async with open_store(tmp_path / "e.db", options=StoreOptions(), max_read_limit=0):
            pass
    assert (caught.value.name, caught.value.value, caught.value.unknown) == (
        "max_read_limit",
        0,
        False,
    )
    assert os.listdir(tmp_path) == []


async def test_options_that_are_not_a_store_options_are_refused(tmp_path: Path) -> None:
    given: Any = {"synchronous": "NORMAL"}
    with pytest.raises(InvalidStoreOption, match="a StoreOptions") as caught:
        async with open_store(tmp_path / "e.db", options=given):
            pass
    assert caught.value.name == "options"
    assert os.listdir(tmp_path) == []


async def test_a_schema_is_refused_for_a_sqlite_store(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreOption) as caught:
        async with open_store(tmp_path / "e.db", schema="billing"):
            pass
    assert (caught.value.name, caught.value.value) == ("schema", "billing")
    assert os.listdir(tmp_path) == []


async def test_the_postgres_store_takes_a_struct_and_keywords_over_it(postgres_url: str) -> None:
    tuned = StoreOptions(synchronous="NORMAL", max_read_limit=5)
    async with open_store(postgres_url, options=tuned, busy_retries=2) as store:
        assert store.options == dataclasses.replace(tuned, busy_retries=2)
