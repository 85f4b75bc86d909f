"""Connecting to PostgreSQL: the URL and options taken apart and checked, the
connections' settings, connections opened, and driver and network errors as the store's
errors (naming host, port and database, never the password)."""

from __future__ import annotations

import asyncio
from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from store._errors import InvalidStoreOption, StoreError, StoreUnavailable
from store._options import StoreOptions, StoreSettings, resolve_options
from store._postgres_schema import check_schema_name

__all__: list[str] = []

# The errors of a connection that broke (the network, the server ending the session):
# a batch sent on it has an unknown outcome, and the writer connects again.
_CONNECTION_LOST: Final = (
    OSError,  # TimeoutError too: the server stopped answering within the command timeout
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.DatabaseDroppedError,
    asyncpg.IdleSessionTimeoutError,
    # asyncpg's protocol state broken by the server ending an idle session (asyncpg #1069)
    asyncpg.InternalClientError,
)

# PostgreSQL's largest lock_timeout, in ms (an int32).
_MAX_LOCK_TIMEOUT_MS: Final = 2**31 - 1


def _split_url(url: str, schema: str | None) -> tuple[str, str | None, str]:
    """The URL asyncpg connects with (without our `schema` parameter), the schema it or
    the option names, and the URL as errors show it (no password)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    if named and schema is not None and named[-1] != schema:
        raise InvalidStoreOption(
            "schema", schema, f"the schema the URL names ({named[-1]!r}), or none there"
        )
    if schema is None and named:
        schema = named[-1]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    database = parts.path.lstrip("/") or parts.username or "postgres"
    shown = f"postgresql://{host}:{port}/{database}"
    return dsn, schema, shown


def _checked_options(
    url: str, schema: str | None, options: StoreOptions | None, settings: StoreSettings
) -> tuple[str, str | None, str, StoreOptions]:
    """`open_postgres_store`'s arguments checked: the URL asyncpg connects with, the
    schema named (None: the connection's current one), the URL as errors show it, and
    the options (`options` with `settings` replacing its fields). Raises
    `StoreUnavailable` off asyncio, `InvalidStoreOption` for a bad option or schema
    name."""
    dsn, schema, where = _split_url(url, schema)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StoreUnavailable(
            f"the PostgreSQL store ({where}) runs on asyncio only (asyncpg needs it):"
            " run it under anyio's asyncio backend"
        ) from None
    opts = resolve_options(options, settings)
    if opts.writer != "thread":
        raise InvalidStoreOption(
            "writer", opts.writer, "'thread' (the PostgreSQL store writes on a connection)"
        )
    if schema is not None:
        try:
            check_schema_name(schema)
        except ValueError as exc:
            raise InvalidStoreOption("schema", schema, str(exc)) from None
    return dsn, schema, where, opts


def _connections(dsn: str, opts: StoreOptions) -> tuple[_Connect, dict[str, str]]:
    """How the writer connects (named `esactors-writer`), and the read pool's session
    settings (named `esactors-reader`)."""
    settings = {"synchronous_commit": "on" if opts.synchronous == "FULL" else "off"}
    # The writer waits for another connection's lock (the counter row, a migration's)
    # as long as SQLite's busy handler would: then the server cancels the statement and
    # nothing is written. The client waits a busy_timeout more for any answer, so a
    # server that stopped answering fails the batch (outcome unknown) instead of hanging.
    lock_wait = opts.busy_timeout * (opts.busy_retries + 1)
    lock_timeout_ms = min(max(int(lock_wait * 1000), 1), _MAX_LOCK_TIMEOUT_MS)
    writer_settings = {**settings, "lock_timeout": f"{lock_timeout_ms}ms"}
    connect = _Connect(
        dsn,
        opts.busy_timeout,
        _named(dsn, writer_settings, "esactors-writer"),
        lock_timeout_ms / 1000 + opts.busy_timeout,
    )
    return connect, _named(dsn, settings, "esactors-reader")


def _translate(exc: BaseException, what: str, where: str) -> StoreError:
    """The `StoreError` for a driver or network error while doing `what` at `where`
    (the URL without its password)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        # The server's reason names the role, never the password (it never sees it back).
        return StoreUnavailable(
            f"{what} at {where}: authentication failed ({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"{what} at {where}: the database does not exist")
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return StoreUnavailable(
            f"{what} at {where}: another connection held a lock longer than the store"
            f" waits (busy_timeout x (busy_retries + 1)); nothing was written ({exc})"
        )
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(f"{what} at {where}: the server did not answer in time")
    if isinstance(exc, (asyncpg.CannotConnectNowError, *_CONNECTION_LOST)):
        return StoreUnavailable(
            f"{what} at {where}: the server cannot be reached ({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(f"{what} at {where} failed: {exc.sqlstate}: {exc}")
    return StoreError(f"{what} at {where} failed: {type(exc).__name__}: {exc}")


class _Connect(NamedTuple):
    """How the store connects: the URL asyncpg takes, the timeout, the session settings,
    and how long a statement may take before the client gives up on the connection."""

    dsn: str
    timeout: float
    server_settings: dict[str, str]
    command_timeout: float | None = None


def _named(dsn: str, settings: dict[str, str], name: str) -> dict[str, str]:
    """`settings` with `application_name` set to `name` (what `pg_stat_activity` shows
    operators: 'esactors-writer', 'esactors-reader'), unless the URL names one."""
    if any(key == "application_name" for key, _ in parse_qsl(urlsplit(dsn).query)):
        return settings
    return {**settings, "application_name": name}


async def _connect(where: str, args: _Connect) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            args.dsn,
            timeout=args.timeout,
            server_settings=args.server_settings,
            command_timeout=args.command_timeout,
        )
    except Exception as exc:  # noqa: BLE001 - translated: never the password, always where
        raise _translate(exc, "connecting", where) from None
    return conn
