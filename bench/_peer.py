"""The peer side of `bench.compare`: the same bank deposits with the `eventsourcing` library.

Imported only when the `bench` extra is installed (`pip install -e '.[bench]'`). The
application is the library's documented shape: an `Aggregate` whose methods are
decorated with `@event`, and an `Application` that gets the aggregate from its
repository, calls the method and saves it. Persistence is the library's SQLite module.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import SQLiteFactory

__all__ = ["PeerBank", "peer_sqlite_settings", "run_peer_deposits"]


class PeerAccount(Aggregate):
    """A bank account: opened for an owner, then deposits (int cents)."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        """Put `amount` cents into the account (one event)."""
        self.balance += amount


class PeerBank(Application[UUID]):
    """Opens accounts and takes deposits, one saved event per command."""

    def open_account(self, owner: str) -> UUID:
        """Open an account for `owner`; returns its id."""
        account = PeerAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: int) -> None:
        """Deposit `amount` cents: get the account, call its method, save the event."""
        account: PeerAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)

    def balance(self, account_id: UUID) -> int:
        """The account's balance, read back from its events."""
        account: PeerAccount = self.repository.get(account_id)
        return account.balance


def open_peer(path: Path) -> PeerBank:
    """A `PeerBank` on a fresh SQLite file (the library's SQLite persistence module)."""
    return PeerBank(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
        }
    )


def peer_sqlite_settings(app: PeerBank) -> tuple[str, int]:
    """The journal mode and `synchronous` level of a connection from the app's pool.

    The library sets WAL on its first connection and never sets `synchronous`, so its
    connections run at SQLite's compiled-in default; this reads both back from one.
    """
    factory = app.factory
    if not isinstance(factory, SQLiteFactory):
        raise TypeError(f"the peer runs on SQLite, not {type(factory).__name__}")
    with factory.datastore.get_connection(commit=False) as connection:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode")
        (mode,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous")
        (level,) = cursor.fetchone()
    return str(mode), int(level)


def run_peer_deposits(
    path: Path, accounts: int, plan: Sequence[tuple[int, int]], workers: int
) -> tuple[float, float, str, int]:
    """Open `accounts` accounts (not timed), then run the deposits of `plan` on `workers`
    threads; returns (seconds, CPU seconds of the process meanwhile, journal mode,
    synchronous level).

    `plan` is (account index, amount) per command. Worker w takes the commands of the
    accounts whose index is w modulo `workers`, in plan order, so no two threads save
    the same account at once (as one actor per account does); no command is retried.
    """
    app = open_peer(path)
    try:
        mode, level = peer_sqlite_settings(app)
        seconds, cpu = deposit_and_check(app, accounts, plan, workers)
    finally:
        app.close()
    with closing(sqlite3.connect(path)) as check:
        (events,) = check.execute("SELECT count(*) FROM stored_events").fetchone()
    if events != accounts + len(plan):
        raise RuntimeError(f"peer stored {events} events, expected {accounts + len(plan)}")
    return seconds, cpu, mode, level


def deposit_and_check(
    app: PeerBank, accounts: int, plan: Sequence[tuple[int, int]], workers: int
) -> tuple[float, float]:
    """Open `accounts` accounts in `app` (not timed), run the deposits of `plan` on
    `workers` threads (worker w takes the accounts whose index is w modulo `workers`),
    check every balance; returns the seconds the deposits took and the process's CPU
    seconds meanwhile (every thread)."""
    ids = [app.open_account(f"owner-{i}") for i in range(accounts)]
    shares: list[list[tuple[UUID, int]]] = [[] for _ in range(workers)]
    for index, amount in plan:
        shares[index % workers].append((ids[index], amount))

    def work(share: list[tuple[UUID, int]]) -> None:
        deposit = app.deposit
        for account_id, amount in share:
            deposit(account_id, amount)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        started, cpu = time.perf_counter(), time.process_time()
        for future in [pool.submit(work, share) for share in shares]:
            future.result()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    expected: dict[int, int] = {}
    for index, amount in plan:
        expected[index] = expected.get(index, 0) + amount
    for index, total in expected.items():
        if app.balance(ids[index]) != total:
            raise RuntimeError(f"peer account {index} lost deposits")
    return seconds, cpu
