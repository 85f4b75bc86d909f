"""Connecting to PostgreSQL: the URL taken apart, connections opened, and driver and
network errors as the store's errors (naming host, port and database, never the
password)."""

from __future__ import annotations

from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from store._errors import InvalidStoreOption, StoreError, StoreUnavailable

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
