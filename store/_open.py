"""`open_store`: a PostgreSQL URL opens the PostgreSQL store, anything else SQLite."""

from __future__ import annotations

import importlib
import os
from contextlib import AbstractAsyncContextManager
from typing import Final, Unpack, cast

from store._codec import EventRegistry
from store._errors import InvalidStoreOption, StoreUnavailable
from store._options import StoreOptions, StoreSettings, resolve_options
from store._protocol import EventStore
from store._sqlite import SQLiteEventStore, open_sqlite_store

__all__ = ["open_store"]

_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})
_POSTGRES_MODULES: Final = frozenset({"store._postgres", "asyncpg"})


def open_store(
    target: str | os.PathLike[str],
    *,
    registry: EventRegistry | None = None,
    schema: str | None = None,
    options: StoreOptions | None = None,
    **settings: Unpack[StoreSettings],
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
        schema: PostgreSQL only: the schema holding the tables (default: the URL's
            `schema` parameter, or the connection's current schema).
        options: the store's options as one `StoreOptions` (default: the defaults).
        **settings: `StoreOptions` fields as keywords (`StoreSettings`: `synchronous`,
            `busy_timeout`, limits...), each replacing that field of `options`:
            `open_store(path, options=tuned, synchronous="NORMAL")`.

    On exit the writer commits every append it has accepted, the WAL is checkpointed
    and the connections are closed; appends made after exit raise `StoreClosed`.

    Raises:
        InvalidStoreOption: an option out of its range, one there is none of (the
            error names it and lists the options), or a `schema` for a SQLite store;
            raised before anything is opened.
        StoreUnavailable: the file or its directory cannot be opened or written (or,
            for a PostgreSQL URL, the PostgreSQL store is not installed).
        StoreCorrupted: the file is not a SQLite database or is damaged.
    """
    opts = resolve_options(options, settings)
    if isinstance(target, str) and target.partition("://")[0].lower() in _POSTGRES_SCHEMES:
        # Typed as SQLite's store, as `open_store` always was (callers annotate it so):
        # the PostgreSQL store is an `EventStore` but has no SQLite-only methods (backup).
        return cast(
            AbstractAsyncContextManager[SQLiteEventStore],
            _open_postgres(target, registry, schema, opts),
        )
    if schema is not None:
        raise InvalidStoreOption("schema", schema, "None for a SQLite store (PostgreSQL's)")
    return open_sqlite_store(target, registry=registry, options=opts)


def _open_postgres(
    url: str, registry: EventRegistry | None, schema: str | None, options: StoreOptions
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
    store: AbstractAsyncContextManager[EventStore] = opener(
        url, registry=registry, schema=schema, options=options
    )
    return store


def _redacted(url: str) -> str:
    """`url` without its password (it goes into an error message)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"
