"""Noticing commits of other processes on a PostgreSQL schema: `LISTEN`.

Every batch the writer commits sends `NOTIFY` on its schema's channel (`channel_name`),
in the batch's own statement, with the batch's last position as the payload
(`store._postgres_batch`); PostgreSQL delivers it only once that transaction committed.
A `Listener` holds one connection of its own (not a pooled one) listening on that
channel and keeps the highest position notified. A notification is only a hint: the
store reads the log itself, and after every (re)connect it reads the head once, since
nothing tells it what was committed while it was not listening.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Final

import asyncpg

from store._errors import StoreClosed
from store._postgres_connect import _Connect, _connect, _translate

__all__ = ["Listener", "channel_name"]

# PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes: a longer channel name is
# an error for `pg_notify` and truncated by `LISTEN`.
_MAX_CHANNEL_BYTES: Final = 63
# The largest position (a bigint).
_MAX_POSITION: Final = 2**63 - 1
_PREFIX: Final = "esactors."
# The prefix of a hashed name: differs from `_PREFIX`, so no schema's name spelled out
# can equal another's hash.
_HASHED: Final = "esactors#"


def channel_name(schema: str) -> str:
    """The notification channel of the store in `schema`: one per schema, so stores in
    different schemas of a database do not wake each other. `esactors.<schema>` while
    that fits in 63 bytes, else `esactors#` and 40 hex digits of the name's SHA-256 (never
    truncated: two long names sharing a prefix get different channels). Compared
    exactly (case included): `LISTEN` must quote it, `pg_notify` takes it as text."""
    name = _PREFIX + schema
    if len(name.encode()) <= _MAX_CHANNEL_BYTES:
        return name
    return _HASHED + hashlib.sha256(schema.encode()).hexdigest()[:40]


class Listener:
    """One connection listening on a store's channel; the highest position notified.

    `head` only grows. `changed()` is an event set at the next notification that raises
    `head` or when the connection is lost, whichever comes first. Runs on the store's
    asyncio loop (asyncpg calls the callbacks there)."""

    def __init__(
        self,
        where: str,
        connect: _Connect,
        channel: str,
        own_pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.head = 0
        """The highest position notified (or read by the store's catch-up), 0 at first."""
        self.others = 0
        """The highest position notified by a session other than `own_pid()`'s (the
        store's writer): commits of other processes, 0 until one is notified."""
        self._own_pid = own_pid
        self.on_others: list[Callable[[int], None]] = []
        """Called with `others` each time a notification raises it (on the loop; they
        must not block, and one that raises is dropped from the list)."""
        self._where = where
        self._connect_args = connect
        self._channel = channel
        self._conn: asyncpg.Connection | None = None
        self._changed = asyncio.Event()
        self._closed = False
        self.connects = 0
        """How many times it connected (1 after the first `connect`)."""

    @property
    def listening(self) -> bool:
        """Whether its connection is open (as far as the client knows: a network that
        silently dropped it is noticed only by the store's timeout read)."""
        conn = self._conn
        return conn is not None and not conn.is_closed()

    def changed(self) -> asyncio.Event:
        """The event the next raise of `head` (or loss of the connection) sets."""
        return self._changed

    def note(self, position: int) -> None:
        """Raise `head` to `position` (a head the store read) and wake the waiters."""
        if position > self.head:
            self.head = position
            self._wake()

    async def connect(self) -> None:
        """Open the connection and `LISTEN` (ending a lost one first).

        Raises `StoreUnavailable` (or another `StoreError`) when connecting or `LISTEN`
        fails, `StoreClosed` once `close` was called (before or meanwhile); nothing stays
        open then. Cancelled meanwhile, it leaves nothing open."""
        if self._closed:
            raise StoreClosed(f"the store {self._where} is closed")
        old, self._conn = self._conn, None
        if old is not None:
            old.terminate()
        conn = await _connect(self._where, self._connect_args)
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException as exc:  # cancelled too: nothing stays open
            conn.terminate()
            if isinstance(exc, Exception):
                raise _translate(exc, "listening", self._where) from exc
            raise
        if self.closed:  # closed while connecting
            conn.terminate()
            raise StoreClosed(f"the store {self._where} is closed")
        conn.add_termination_listener(self._on_lost)
        self._conn = conn
        self.connects += 1

    async def close(self) -> None:
        """Close the connection (idempotent); waiters wake and find it closed."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=self._connect_args.timeout)
            except BaseException:
                conn.terminate()
                raise
        self._wake()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # Ours are a bigint in decimal; anything else (another client's) is ignored.
        if type(payload) is str and payload.isascii() and payload.isdigit():
            position = int(payload)
            if position <= _MAX_POSITION:
                if pid != self._own_pid() and position > self.others:
                    self.others = position
                    for listener in tuple(self.on_others):
                        try:
                            listener(position)
                        except Exception:  # noqa: BLE001 - a broken listener stops hearing
                            self.on_others.remove(listener)
                self.note(position)

    def _on_lost(self, conn: object) -> None:
        if conn is self._conn:
            self._conn = None
        self._wake()
