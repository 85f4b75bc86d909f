"""The peer side of `bench.compare --db postgresql://...`: the same bank deposits with the
`eventsourcing` library's PostgreSQL persistence module (psycopg 3 and its pool).

Imported only when the `bench` extra is installed. The application is `bench._peer`'s
`PeerBank`, unchanged; only its persistence module differs. Each run gets tables of its
own: a fresh schema, created here (the library creates its tables in it) and dropped
after. The library commits with the server's `synchronous_commit` (on by default): as
durable as esactors' `synchronous="FULL"`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import sql

from bench._peer import PeerBank, deposit_and_check

__all__ = ["peer_schema", "run_peer_deposits_postgres"]


def _env(url: str) -> dict[str, str]:
    """The library's `POSTGRES_*` settings for the server a `postgresql://` URL names."""
    parts = urlsplit(url)
    return {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
    }


def _conninfo(url: str) -> str:
    """`url` without the query parameters psycopg would not take (`schema`)."""
    parts = urlsplit(url)
    query = "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query) if k != "schema")
    return parts._replace(query=query).geturl()


@contextmanager
def peer_schema(url: str) -> Iterator[str]:
    """A new schema for the peer's tables; dropped, with them, on exit."""
    name = f"compare_peer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def run_peer_deposits_postgres(
    url: str, accounts: int, plan: Sequence[tuple[int, int]], workers: int
) -> tuple[float, float]:
    """Open `accounts` accounts (not timed), then run the deposits of `plan` on `workers`
    threads, in a fresh schema on the server `url` names; returns the seconds taken and
    the client process's CPU seconds meanwhile.

    As `bench._peer.run_peer_deposits`: worker w takes the commands of the accounts
    whose index is w modulo `workers`, in plan order, so no two threads save the same
    account at once; no command is retried. The pool has one connection per worker.
    """
    with peer_schema(url) as schema:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            **_env(url),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": str(workers),
            "POSTGRES_MAX_OVERFLOW": "0",
        }
        app = PeerBank(env=env)
        try:
            seconds, cpu = deposit_and_check(app, accounts, plan, workers)
        finally:
            app.close()
        with psycopg.connect(_conninfo(url)) as check:
            table = sql.Identifier(schema, "peerbank_events")
            row = check.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        events = row[0] if row is not None else 0
    if events != accounts + len(plan):
        raise RuntimeError(f"peer stored {events} events, expected {accounts + len(plan)}")
    return seconds, cpu
