"""Noticing commits of other processes on a SQLite file: a watcher thread.

A thread of its own reads `PRAGMA data_version` on a connection of its own every
`watch_interval` seconds. The value changes when any other connection (this store's
writer included) has committed; only then does the thread read the head, and when the
head moved it wakes the event loop. Polling on a thread rather than on the event loop
costs a fraction: a timer wake-up of the loop costs several times one of a sleeping
thread (docs/deployment.md gives the idle figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from typing import Final

import anyio

__all__ = ["Watcher"]

_SELECT_HEAD: Final = "SELECT max(position) FROM events"


class Watcher:
    """Follows the head of one SQLite file; `wait` returns once it is past a position."""

    def __init__(self, path: str, interval: float, head: int) -> None:
        self.head = head
        self._path = path
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._changed = anyio.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="esactors-watch", daemon=True)
        self._thread.start()

    async def wait(self, after: int, timeout: float) -> int:  # noqa: ASYNC109
        """The head once it is above `after`, or after `timeout` seconds whatever it is."""
        with anyio.move_on_after(timeout):
            while self.head <= after:
                if self._changed.is_set():
                    self._changed = anyio.Event()
                await self._changed.wait()
        return self.head

    def _wake(self) -> None:
        self._changed.set()  # on the loop's thread: the event `wait` waits on now

    def close(self) -> None:
        """Stop the thread and wait for it (at most one interval)."""
        self._stopped = True
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        seen = -1
        try:
            while True:
                # A plain sleep: half the CPU of an `Event.wait` with a timeout here.
                time.sleep(self._interval)
                if self._stopped:
                    return
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            self._path, timeout=0, isolation_level=None, check_same_thread=False
                        )
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == seen:
                        continue
                    row = conn.execute(_SELECT_HEAD).fetchone()
                except sqlite3.Error:
                    continue  # busy or locked for a moment: the next check tells
                seen = version
                head = int(row[0] or 0)
                if head > self.head:
                    self.head = head
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        self._loop.call_soon_threadsafe(self._wake)
        finally:
            if conn is not None:
                conn.close()
