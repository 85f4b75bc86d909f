"""The PostgreSQL store's writer connection: each batch committed in one round trip.

`PostgresWriter.commit` sorts a batch's keyed writes (snapshot and checkpoint upserts
ride in the batch function; a `wait_settled` barrier is answered with the batch), runs
`store._postgres_batch.write_batch` on the writer's connection and turns its outcomes
into the store's. It keeps the writer's stream versions (`StreamVersions`, from which
the batch proposes versions). A connection lost during a commit leaves that batch's
outcome unknown; the next batch connects again, with backoff, within `busy_timeout`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

import anyio
import asyncpg

from store import faults
from store._batch import _Append, _BatchResult, _Write
from store._errors import LeaseLost, StoreError, StoreUnavailable
from store._groupcommit import _SETTLED_SQL
from store._postgres_batch import (
    LEASE_LOST,
    AppendOutcome,
    CheckpointWrite,
    SnapshotWrite,
    StreamVersions,
    append_result,
    write_batch,
)
from store._postgres_connect import _CONNECTION_LOST, _Connect, _connect
from store._records import AppendResult

__all__ = ["CHECKPOINT", "SNAPSHOT", "PostgresWriter"]

# `_Write.sql` of the keyed writes the store queues (they ride in the batch function).
SNAPSHOT: Final = "snapshot"
CHECKPOINT: Final = "checkpoint"

# Reconnecting the writer after a lost connection: first delay, doubling, capped.
_RECONNECT_DELAY: Final = 0.05
_RECONNECT_DELAY_MAX: Final = 2.0


class PostgresWriter:
    """The writer connection of one store (`where`: its URL as errors show it) and what
    it knows: the stream versions of the batches it committed."""

    def __init__(
        self,
        where: str,
        connect: _Connect,
        schema: str,
        busy_timeout: float,
        conn: asyncpg.Connection,
    ) -> None:
        self._where = where
        self._connect_args = connect
        self._schema = schema
        self._busy_timeout = busy_timeout
        self.conn: asyncpg.Connection | None = conn
        """The connection, None after one was lost (until the next batch connects)."""
        self._versions = StreamVersions()

    async def commit(
        self, appends: list[_Append], writes: list[_Write], last_position: int
    ) -> _BatchResult:
        """Commit `appends` and the keyed `writes` in one statement (see
        `GroupCommitStore._commit_batch`); `last_position` is the store's before it.

        Raises `StoreUnavailable` when the connection was lost with the batch sent (its
        outcome unknown: resend with the command ids), or could not be made again."""
        snapshots: list[SnapshotWrite] = []
        checkpoints: list[CheckpointWrite] = []
        for write in writes:
            if write.sql == SNAPSHOT:
                snapshots.append(write.params[0])
            elif write.sql == CHECKPOINT:
                checkpoints.append(write.params[0])
            else:
                assert write.sql == _SETTLED_SQL  # a barrier: answered with the batch
        conn = await self._connection()
        started = time.perf_counter()
        recorded_at = time.time()
        if faults.enabled:
            faults.hit("before_begin")
        try:
            result = await write_batch(
                conn,
                self._schema,
                appends,
                recorded_at,
                snapshots=snapshots,
                checkpoints=checkpoints,
                versions=self._versions,
                fences=[item.fence for item in appends] if _any_fence(appends) else None,
                chained=_links(appends),
            )
        except _CONNECTION_LOST as exc:
            # The connection broke (or stopped answering) with the batch sent: it may have
            # committed. Its callers get an outcome-unknown error; the next batch
            # reconnects.
            self.conn = None
            with contextlib.suppress(Exception):
                conn.terminate()
            raise StoreUnavailable(
                f"the connection to {self._where} was lost during a commit: the outcome of"
                f" its {len(appends)} appends is unknown; resend them with their command"
                f" ids ({type(exc).__name__}: {exc})"
            ) from exc
        outcomes = [
            _lease_lost(item, outcome)
            if outcome.kind == LEASE_LOST
            else append_result(item, outcome)
            for item, outcome in zip(appends, result.outcomes, strict=True)
        ]
        for outcome in reversed(outcomes):
            if isinstance(outcome, AppendResult) and not outcome.duplicate:
                last_position = outcome.last_position
                break
        write_error = None
        if result.write_error is not None:
            write_error = StoreError(f"a snapshot or checkpoint write failed: {result.write_error}")
        return _BatchResult(
            outcomes, recorded_at, time.perf_counter() - started, write_error, last_position
        )

    async def _connection(self) -> asyncpg.Connection:
        """The writer's connection, connecting again (with backoff, within the busy
        timeout) after a lost one."""
        conn = self.conn
        if conn is not None and not conn.is_closed():
            return conn
        delay = _RECONNECT_DELAY
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn = self.conn = await _connect(self._where, self._connect_args)
                return conn
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
            await anyio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_MAX)

    async def close(self) -> None:
        """Close the connection, ignoring its errors (the store is closing)."""
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _any_fence(appends: list[_Append]) -> bool:
    for item in appends:
        if item.fence is not None:
            return True
    return False


def _links(appends: list[_Append]) -> list[int] | None:
    """Per append, the index in the batch of the one it is chained to (-1: none); None
    when no append of the batch is chained to another in it."""
    for item in appends:
        if item.chained >= 0:
            return [item.chained for item in appends]
    return None


def _lease_lost(item: _Append, outcome: AppendOutcome) -> LeaseLost:
    """The `LeaseLost` of fenced append `item`, refused by the batch function."""
    assert item.fence is not None
    name, owner, epoch = item.fence
    holder = outcome.recorded_stream
    return LeaseLost(name, owner, epoch, holder, None if holder is None else outcome.actual)
