"""`open_store`: a PostgreSQL URL opens the PostgreSQL store, anything else SQLite."""

from __future__ import annotations

import importlib
import os
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, cast

from store._codec import EventRegistry
from store._errors import StoreUnavailable
from store._protocol import EventStore
from store._sqlite import SQLiteEventStore, open_sqlite_store

__all__ = ["open_store"]

_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})
_POSTGRES_MODULES: Final = frozenset({"store._postgres", "asyncpg"})


def open_store(
    target: str | os.PathLike[str],
    *,
    registry: EventRegistry | None = None,
    **options: Any,
) -> AbstractAsyncContextManager[SQLiteEventStore]:
    """Open (creating and migrating it if needed) the event store at `target`.

    Use it as `async with open_store(target) as store:`.

    Args:
        target: a SQLite file path (created with mode 0600), or ":memory:" for a
            private in-memory store that lives as long as the context; or a
            `postgresql://` (or `postgres://`) URL, which opens the PostgreSQL store
            (needs `pip install 'esactors[postgres]'`).
        registry: the event types the store can append and read (a new, empty one if
            omitted; register types on `store.registry`).
        **options: fields of `StoreOptions` (`synchronous`, `busy_timeout`, limits...).

    On exit the writer commits every append it has accepted, the WAL is checkpointed
    and the connections are closed; appends made after exit raise `StoreClosed`.

    Raises:
        StoreUnavailable: the file or its directory cannot be opened or written (or,
            for a PostgreSQL URL, the PostgreSQL store is not installed).
        StoreCorrupted: the file is not a SQLite database or is damaged.
    """
    if isinstance(target, str) and target.partition("://")[0].lower() in _POSTGRES_SCHEMES:
        # Typed as SQLite's store, as `open_store` always was (callers annotate it so):
        # the PostgreSQL store is an `EventStore` but has no SQLite-only methods (backup).
        return cast(
            AbstractAsyncContextManager[SQLiteEventStore], _open_postgres(target, registry, options)
        )
    return open_sqlite_store(target, registry=registry, **options)


def _open_postgres(
    url: str, registry: EventRegistry | None, options: dict[str, Any]
) -> AbstractAsyncContextManager[EventStore]:
    """The PostgreSQL store, imported only now: SQLite users need neither it nor asyncpg."""
    try:
        module = importlib.import_module("store._postgres")
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing not in _POSTGRES_MODULES and not missing.startswith("asyncpg."):
            raise  # not the extra missing: an error of the store's own, raised as it is
        raise StoreUnavailable(
            f"cannot open the PostgreSQL store at {_redacted(url)!r}: it needs the postgres"
            f" extra ({exc.name} is missing): pip install 'esactors[postgres]'"
        ) from exc
    opener = module.open_postgres_store
    store: AbstractAsyncContextManager[EventStore] = opener(url, registry=registry, **options)
    return store


def _redacted(url: str) -> str:
    """`url` without its password (it goes into an error message)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"
