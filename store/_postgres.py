"""The PostgreSQL event store: the SQLite store's contract on a server, for many processes.

One writer connection per store (`store._postgres_writer`) commits every waiting append
as one batch, in one round trip (`store._postgres_batch.write_batch`); the position
counter row it locks orders the commits of every process writing to the database, so
positions are gap-free and in commit order. Reads go through a small pool of other connections. Each batch notifies
the schema's channel at its commit; `wait_for_commit` listens there on a connection of
its own (`store._postgres_listen`). The queue, answering callers and listeners are
`GroupCommitStore`'s, as for SQLite. Needs asyncpg (the `postgres` extra) and the
asyncio event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, TypeVar, Unpack

import anyio
import asyncpg

from store._ahead import decide_ahead, plain, refused_again
from store._batch import _Append, _BatchResult, _Outcome, _Write
from store._codec import EventRegistry
from store._decode import _decode_groups, _decode_rows
from store._errors import (
    ConcurrencyError,
    EventDecodeError,
    InvalidCheckpoint,
    LeaseLost,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from store._groupcommit import GroupCommitStore
from store._options import StoreOptions, StoreSettings
from store._postgres_batch import CheckpointWrite, SnapshotWrite
from store._postgres_connect import (
    _CONNECTION_LOST,
    _checked_options,
    _Connect,
    _connect,
    _connections,
    _named,
    _translate,
)
from store._postgres_listen import Listener, channel_name
from store._postgres_queries import _Queries
from store._postgres_schema import current_schema, migrate
from store._postgres_writer import CHECKPOINT, SNAPSHOT, PostgresWriter
from store._prepare import Fence
from store._records import Lease, RecordedEvent

__all__ = ["PostgresEventStore", "open_postgres_store"]

S = TypeVar("S")

_READ_POOL_SIZE: Final = 4
# A queue at least this long is committed in two halves (`_batch_size`).
_SPLIT_FROM: Final = 64
# The most events of other processes the writer reads before a batch (`_decide_ahead`):
# past them, only the last ones (an append that missed older ones is checked as any);
# and the most a batch's refused appends may have missed, in all, for the writer to
# read them and decide those appends again (`_answer`).
_AHEAD_LIMIT: Final = 2_000
# The most pages of the follower's reads kept for that look (`_keep_log_read`).
_LOG_PAGES_KEPT: Final = 16
# How many times the writer decides again an append its batch refused as a conflict
# and sends it in a later batch (`_answer`), before its caller gets the conflict.
_RETRIES: Final = 2


class _Connecting:
    """A connect of the listener under way: `done` is set when it ended, `error` is
    what it failed with (None: listening, and the head read)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: StoreError | None = None


class PostgresEventStore(GroupCommitStore):
    """An append-only event log in a PostgreSQL schema. Obtain one with `open_store` and a
    `postgresql://` URL.

    Every method is safe to call from many tasks at once. Appends are group-committed by
    one writer connection; reads use a pool of other connections. Several processes may
    open the same schema: positions follow commit order across all of them. Lease
    statements run on the pool's connections (each its own transaction, on the server's
    clock); a batch's fenced appends are checked by its own statement.
    """

    _chains = True  # the batch function refuses an append whose chained one did not commit

    def __init__(
        self,
        target: str,
        connect: _Connect,
        schema: str,
        registry: EventRegistry,
        options: StoreOptions,
        writer: asyncpg.Connection,
        readers: asyncpg.Pool,
        last_position: int,
    ) -> None:
        super().__init__(target, registry, options, last_position)
        self.schema = schema
        """The PostgreSQL schema holding the store's tables."""
        self._connect_args = connect
        self._writer = PostgresWriter(target, connect, schema, options.busy_timeout, writer)
        self._readers = readers
        self._queries = _Queries(schema)
        self._readers_closed = False
        # `wait_for_commit`'s listening connection, opened by its first call.
        self._listener = Listener(
            target,
            connect._replace(
                server_settings=_named(connect.dsn, {}, "esactors-listener"),
                command_timeout=connect.timeout,
            ),
            channel_name(schema),
            self._writer_pid,
        )
        self._caught_up = 0  # the listener's connect the head was read after
        # Other processes' commits read for `_decide_ahead` up to this position.
        self._ahead_seen = last_position
        # `read_log`'s last pages (the follower's) for `_from_log`: the last position
        # each covers, its last events (`_AHEAD_LIMIT` of them in all), their types.
        self._log_reads: deque[tuple[int, list[RecordedEvent], list[str] | None]] = deque()
        self._log_kept = 0  # the events in `_log_reads`
        # `read_log`'s connection (the bus's follower), opened by its first call.
        self._log_conn: asyncpg.Connection | None = None
        self._log_lock = anyio.Lock(fast_acquire=True)  # no turn of the loop when free
        # The task connecting it now (in the store's task group), if one is.
        self._listening: _Connecting | None = None

    # -- the writer ---------------------------------------------------------------------

    async def _commit_batch(self, appends: list[_Append], writes: list[_Write]) -> _BatchResult:
        if appends and self._listener.others > self._ahead_seen:
            await self._decide_ahead(appends)
        return await self._writer.commit(appends, writes, self._last_position)

    async def _decide_ahead(self, appends: list[_Append]) -> None:
        """Other processes committed since the last batch (their notifications say up
        to where): read what they committed, at most `_AHEAD_LIMIT` events, and decide
        again the appends of this batch whose streams they moved (`decide_ahead`), so
        that those commit on the stream's latest version instead of coming back as
        conflicts. The batch's statement still checks every version: an append whose
        stream moved again after the read is refused as before. A read that fails
        leaves the batch as it was."""
        others = self._listener.others
        low = max(self._ahead_seen, others - _AHEAD_LIMIT) + 1
        self._ahead_seen = others
        if not any(map(plain, appends)):
            return
        tags = self.registry.tags()
        events, low = self._from_log(low, others, tags)
        if low <= others:
            with contextlib.suppress(StoreError):  # decided on those before it, if any
                events += await self._read_all(low, others, tags, None, _AHEAD_LIMIT)
        decide_ahead(appends, events, self._preparer.redecided)

    async def _answer(
        self, appends: list[_Append], writes: list[_Write], result: _BatchResult
    ) -> None:
        """Answer a committed batch, all but the appends it refused as conflicts that
        the writer decides again, with the appends chained to them (`refused_again`):
        another process committed to their streams between the writer's look and its
        statement. Those are decided again on what they missed and sent first in the
        next batch (`_decide_refused`), so their callers neither read the stream nor
        race again from the start."""
        chains = refused_again(appends, result.outcomes, _RETRIES, _AHEAD_LIMIT)
        if not chains:
            await super()._answer(appends, writes, result)
            return
        again = {slot for chain in chains for slot in chain}
        kept = [slot for slot in range(len(appends)) if slot not in again]
        outcomes = result.outcomes
        await super()._answer(
            [appends[slot] for slot in kept],
            writes,
            _BatchResult(
                [outcomes[slot] for slot in kept],
                result.recorded_at,
                result.commit_seconds,
                result.write_error,
                result.last_position,
                result.write_results,
            ),
        )
        await self._decide_refused(
            [[(appends[slot], _refusal(outcomes[slot])) for slot in chain] for chain in chains]
        )

    async def _decide_refused(self, chains: list[list[tuple[_Append, StoreError]]]) -> None:
        """Read the events each chain's first append missed (one query for all of
        them), decide it again on them, and each append chained to it on what the one
        before it now leaves; queue them first, in order, for the next batch. One that
        cannot be (a failed read, a declined redecision) gets its refusal, and so do
        those chained to it; all of them when the store is closing. A caller who gave
        up meanwhile is skipped, and those chained to it get their refusals."""
        ranges = []
        for chain in chains:
            first, refused = chain[0]
            ranges.append((first.stream_id, first.expected + 1, _actual(refused)))
        found: Sequence[list[RecordedEvent] | StoreError | None] = [None] * len(chains)
        if not self._closing:
            with contextlib.suppress(StoreError):
                found = await self._read_streams(ranges)
        again: list[_Append] = []
        redecided = self._preparer.redecided
        for chain, events, (_stream, low, actual) in zip(chains, found, ranges, strict=True):
            missed = (
                events if isinstance(events, list) and len(events) == actual - low + 1 else None
            )
            version = actual
            for index, (item, refused) in enumerate(chain):
                future = item.future
                if (
                    missed is not None
                    and not future.done()
                    and redecided(item, missed if index == 0 else [], version)
                ):
                    item.retried += 1
                    again.append(item)
                    version = item.expected + len(item.rows)
                    continue
                missed = None  # the rest of the chain gets its refusals
                if not future.done():
                    self._counters.rejected += 1
                    future.set_exception(refused)
        self._pending.extendleft(reversed(again))

    def _from_log(self, low: int, high: int, tags: list[str]) -> tuple[list[RecordedEvent], int]:
        """The events of positions `low` to `high` held by the follower's last reads
        (`_log_reads`, of the same types), in order, and the first position after the
        last they cover: the bus's follower reads other processes' commits as soon as
        they are notified, most often before the writer's next batch. A position they
        skip is this process's own commit or was read earlier; should it hold an event
        an append missed, `decide_ahead` does not find all of them and leaves the
        append as it was."""
        events: list[RecordedEvent] = []
        taken = low - 1  # the last position covered so far
        for covered, page, page_tags in self._log_reads:
            if covered <= taken or page_tags != tags:
                continue
            events.extend(e for e in page if taken < e.position <= high)
            taken = min(covered, high)
            if taken >= high:
                break
        return events, taken + 1

    def _batch_size(self, queued: int) -> int:
        """Half of a long queue: the other half is ready to go as soon as this batch
        commits, so the server works on it while the event loop answers this one's
        callers (who append again meanwhile). Taking everything would leave the server
        idle while they run."""
        return queued if queued < _SPLIT_FROM else -(-queued // 2)

    def _translate_error(self, exc: BaseException, what: str) -> StoreError:
        return _translate(exc, what, self.path)

    # -- the queries of the checked calls (store/_calls.py) ---------------------------

    async def _read_stream(
        self, stream_id: str, low: int, high: int, limit: int
    ) -> list[RecordedEvent]:
        return await self._read(self._queries.read_stream, stream_id, low, high, limit)

    async def _read_streams(
        self, ranges: list[tuple[str, int, int]]
    ) -> list[list[RecordedEvent] | EventDecodeError]:
        rows = await self._call(
            "fetch",
            self._queries.read_streams,
            ([r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges]),
        )
        return _decode_groups(self.registry, ranges, rows)

    async def _first_version_after(self, stream_id: str, moment: float) -> int | None:
        value = await self._value(self._queries.first_version_after, stream_id, moment)
        return None if value is None else int(value)

    async def _read_all(
        self, low: int, high: int, tags: list[str] | None, prefix: str | None, limit: int
    ) -> list[RecordedEvent]:
        return await self._read(self._queries.read_all, low, high, tags, prefix, limit)

    async def _stream_version(self, stream_id: str) -> int:
        return int(await self._value(self._queries.stream_version, stream_id) or 0)

    async def last_position(self) -> int:
        """The highest committed position in the schema (0 when empty), whoever wrote it."""
        return int(await self._value(self._queries.last_position) or 0)

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        """The highest committed position in the schema once it is above `after` (a
        commit of any process, this one's included), or after `timeout` seconds
        whatever it is. A hint: read the log from your own position after it.

        Every batch committed to the schema notifies its channel with its last position;
        the first call that has to wait opens a connection of the store's own that
        listens there (named `esactors-listener`), kept until the store closes. The head
        known (the highest position notified, read, or committed by this store) above
        `after` is answered at once; otherwise the call waits for a notification. At the
        timeout it reads the head (the fallback should a notification never come, e.g.
        a connection the network dropped silently). After every (re)connect it reads the
        head once before waiting, since nothing notified what committed meanwhile. A
        lost connection wakes the waiters: a call connects again (at most once; lost
        again, it answers the head read then), and connecting may take up to
        `busy_timeout` beyond `timeout`. A notification whose payload is not a decimal
        position is ignored.

        Raises:
            StoreUnavailable: connecting or listening failed, or the read of the head
                did (a later call tries again).
            StoreClosed: the store is closed (or closes while the call waits).
        """
        listener = self._listener
        deadline = anyio.current_time() + timeout
        connected = False
        while True:
            if self._readers_closed or listener.closed:
                raise StoreClosed(f"the store {self.path} is closed")
            head = max(listener.head, self._last_position)
            if head > after:
                return head
            remaining = deadline - anyio.current_time()
            if not listener.listening or self._caught_up != listener.connects:
                if not connected:  # once a call: a connection lost again, the next call
                    connected = True
                    await self._listen()
                    continue
                remaining = 0
            if remaining <= 0:
                head = max(await self.last_position(), self._last_position)
                listener.note(head)
                return head
            changed = listener.changed()
            with anyio.move_on_after(remaining):
                await changed.wait()

    async def _listen(self) -> None:
        """Connect the listener and read the head it may have missed, on a task of the
        store's (one at a time, whoever calls): a caller cancelled stops waiting and the
        connect goes on for the next call (asyncpg cancelled mid-connect can leave its
        half-made connection reporting errors to the event loop). Raises its error."""
        job = self._listening
        if job is None:
            tasks = self._tasks
            if tasks is None or self._readers_closed:
                raise StoreClosed(f"the store {self.path} is closed")
            job = self._listening = _Connecting()
            tasks.start_soon(self._connect_listener, job)
        await job.done.wait()
        if job.error is not None:
            raise job.error

    async def _connect_listener(self, job: _Connecting) -> None:
        listener = self._listener
        try:
            if not listener.listening:
                reconnect = listener.connects > 0
                await listener.connect()
                self._log.info(
                    "store.listening", channel=channel_name(self.schema), reconnect=reconnect
                )
            if self._caught_up != listener.connects:
                connects = listener.connects
                listener.note(await self.last_position())
                self._caught_up = connects
        except Exception as exc:  # noqa: BLE001 - the waiting callers raise it
            job.error = self._translate_error(exc, "listening")
        except BaseException:  # the store closing: cancelled
            job.error = StoreClosed(f"the store {self.path} is closed")
            raise
        finally:
            self._listening = None
            job.done.set()

    async def _command_row(self, command_id: str) -> Sequence[Any] | None:
        row = await self._row(self._queries.command, command_id)
        return None if row is None else tuple(row)

    async def _snapshot_row(self, stream_id: str) -> Sequence[Any] | None:
        row = await self._row(self._queries.snapshot, stream_id)
        return None if row is None else tuple(row)

    async def _checkpoint(self, name: str) -> int:
        if "\x00" in name:
            return 0  # never saved: PostgreSQL text cannot hold a NUL
        return int(await self._value(self._queries.checkpoint, name) or 0)

    async def _write_snapshot(
        self,
        stream_id: str,
        version: int,
        state_type: str,
        schema_version: int,
        data: bytes,
        checksum: int,
        recorded_at: float,
    ) -> None:
        snapshot = SnapshotWrite(
            stream_id, version, state_type, schema_version, data, checksum, recorded_at
        )
        await self._enqueue_write(SNAPSHOT, (snapshot,))

    async def _write_checkpoint(self, name: str, position: int, updated_at: float) -> None:
        if "\x00" in name:
            raise InvalidCheckpoint(name, "it contains a NUL character (PostgreSQL text cannot)")
        await self._enqueue_write(CHECKPOINT, (CheckpointWrite(name, position, updated_at),))

    async def _write_fenced_checkpoint(
        self, name: str, position: int, updated_at: float, fence: Fence
    ) -> None:
        if "\x00" in name:
            raise InvalidCheckpoint(name, "it contains a NUL character (PostgreSQL text cannot)")
        lease, owner, epoch = fence
        row = await self._row(
            self._queries.fenced_checkpoint, name, position, updated_at, lease, owner, epoch
        )
        written, holder, holder_epoch = row
        if not written:
            raise LeaseLost(
                lease, owner, epoch, holder, None if holder_epoch is None else int(holder_epoch)
            )

    async def _acquire_lease(self, name: str, owner: str, ttl: float) -> Lease | None:
        return _lease(await self._row(self._queries.acquire_lease, name, owner, ttl))

    async def _renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return _lease(
            await self._row(self._queries.renew_lease, lease.name, lease.owner, lease.epoch, ttl)
        )

    async def _release_lease(self, lease: Lease) -> None:
        await self._call(
            "execute", self._queries.release_lease, (lease.name, lease.owner, lease.epoch)
        )

    async def _read_leases(self, prefix: str) -> list[Lease]:
        rows = await self._call("fetch", self._queries.read_leases, (prefix,))
        return [lease for row in rows if (lease := _lease(row)) is not None]

    @property
    def others_head(self) -> int:
        """The highest position other processes' commits were notified up to (0 before
        the first): the follower reads at once for those, without waiting for this
        process's own publishes to cover the head."""
        return self._listener.others

    def add_others_listener(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call `listener(position)` on the event loop as soon as a notification raises
        `others_head` to `position` (the bus's follower reads at once, one turn of the
        loop before `wait_for_commit` would wake it). It must not block; one that
        raises is removed. Returns a function that removes it."""
        listeners = self._listener.on_others
        listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(listener)

        return remove

    def _writer_pid(self) -> int | None:
        conn = self._writer.conn
        return None if conn is None else conn.get_server_pid()

    async def _read_log(
        self, low: int, high: int, tags: list[str] | None, limit: int
    ) -> list[RecordedEvent]:
        """`read_log`'s query on its own connection, on the caller's task (one caller at
        a time: the follower) and shielded, so a cancelled caller lets the query finish
        rather than break the connection (what `_call`'s task does for the pool, at two
        more turns of the loop); a connection the server ended is opened again, once."""
        async with self._log_lock:
            if self._readers_closed or self._tasks is None:
                raise StoreClosed(f"the store {self.path} is closed")
            args = (low, high, tags, None, limit)
            try:
                with anyio.CancelScope(shield=True):
                    for attempt in range(2):
                        conn = self._log_conn
                        if conn is None or conn.is_closed():
                            settings = _named(self._connect_args.dsn, {}, "esactors-follower")
                            conn = self._log_conn = await _connect(
                                self.path, self._connect_args._replace(server_settings=settings)
                            )
                        try:
                            rows = await conn.fetch(self._queries.read_all, *args)
                            break
                        except _CONNECTION_LOST:
                            self._log_conn = None
                            if attempt:
                                raise
            except StoreError:
                raise
            except Exception as exc:  # the driver's, as the store's error
                raise _translate(exc, "read", self.path) from exc
        events = _decode_rows(self.registry, rows)
        self._keep_log_read(events, high if len(events) < limit else events[-1].position, tags)
        return events

    def _keep_log_read(
        self, events: list[RecordedEvent], covered: int, tags: list[str] | None
    ) -> None:
        """Keep a page the follower read, covering positions up to `covered` (a full
        page up to its last event, a shorter one up to where it was asked to read: the
        positions it skipped hold other types), for the writer's `_from_log`: the last
        `_AHEAD_LIMIT` events of the last pages (of at most `_LOG_PAGES_KEPT`), all it
        may use (older ones it skips)."""
        kept = self._log_reads
        if len(kept) >= _LOG_PAGES_KEPT:
            self._log_kept -= len(kept.popleft()[1])
        tail = events[-_AHEAD_LIMIT:]
        kept.append((covered, tail, tags))
        self._log_kept += len(tail)
        while self._log_kept > _AHEAD_LIMIT and len(kept) > 1:
            self._log_kept -= len(kept.popleft()[1])

    async def _read(self, sql: str, *args: Any) -> list[RecordedEvent]:
        rows = await self._call("fetch", sql, args)
        return _decode_rows(self.registry, rows)

    async def _row(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchrow", sql, args)

    async def _value(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, args)

    async def _call(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        """Run a read on a pooled connection, in a task of the store's: a caller that is
        cancelled stops waiting, and the query finishes normally (asyncpg cancelling a
        query mid-flight can break the pooled connection)."""
        tasks = self._tasks
        if self._readers_closed or tasks is None:
            raise StoreClosed(f"the store {self.path} is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        tasks.start_soon(self._read_into, future, method, sql, args)
        return await future

    async def _read_into(
        self, future: asyncio.Future[Any], method: str, sql: str, args: tuple[Any, ...]
    ) -> None:
        try:
            for _ in range(_READ_POOL_SIZE):
                try:
                    result = await getattr(self._readers, method)(sql, *args)
                    break
                except _CONNECTION_LOST:
                    # A pooled connection the server ended (closed now; each pooled one
                    # at most once): a read changes nothing, so it runs again.
                    continue
            else:
                result = await getattr(self._readers, method)(sql, *args)
        except Exception as exc:  # noqa: BLE001 - the reader's, never the store's task group's
            if not future.done():
                future.set_exception(_translate(exc, "read", self.path))
        else:
            if not future.done():
                future.set_result(result)

    async def _close_connections(self) -> None:
        """Close every connection of the store, ignoring their errors (the store is
        closing): the listener's, `read_log`'s, the read pool, the writer."""
        self._readers_closed = True
        with contextlib.suppress(Exception):
            await self._listener.close()
        if self._log_conn is not None:
            with contextlib.suppress(Exception):
                await self._log_conn.close()
        with contextlib.suppress(Exception):
            await self._readers.close()
        await self._writer.close()


def _refusal(outcome: _Outcome) -> StoreError:
    """The refusal of an append `refused_again` picked (never a result)."""
    assert isinstance(outcome, StoreError)
    return outcome


def _actual(refused: StoreError) -> int:
    """The version a refused first append of a chain was checked against."""
    assert isinstance(refused, ConcurrencyError)
    return refused.actual


def _lease(row: Any) -> Lease | None:
    """The lease in a `name, owner, epoch, expires_at` row, or None for no row."""
    if row is None:
        return None
    name, owner, epoch, expires_at = row
    return Lease(str(name), str(owner), int(epoch), float(expires_at))


@contextlib.asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    registry: EventRegistry | None = None,
    schema: str | None = None,
    options: StoreOptions | None = None,
    **settings: Unpack[StoreSettings],
) -> AsyncIterator[PostgresEventStore]:
    """Open (migrating it if needed) the event store in a PostgreSQL database.

    Args:
        url: `postgresql://user[:password]@host[:port]/database[?schema=name&...]`; other
            query parameters go to the server as asyncpg passes them.
        registry: the event types the store can append and read.
        schema: the schema holding the tables (default: the URL's `schema` parameter, or
            the connection's current schema); created if missing.
        options: the store's options as one `StoreOptions` (default: the defaults).
        **settings: `StoreOptions` fields as keywords (`StoreSettings`), each
            replacing that field of `options`. Here, `synchronous="FULL"` (default)
            commits with `synchronous_commit=on` (an acknowledged append survives a crash of the
            server); "NORMAL" with `off` (a server crash may lose the last commits).
            `busy_timeout` bounds connecting and reconnecting; a batch waits for
            another connection's lock up to `busy_timeout * (busy_retries + 1)` (then
            fails with `StoreUnavailable`, nothing written), and for the server's answer
            a `busy_timeout` longer (then fails as of unknown outcome: resend with the
            command ids). `writer` must be "thread" (the default: the writer here is a
            connection, not a thread). The connections are named `esactors-writer` and
            `esactors-reader` in `pg_stat_activity`, unless the URL sets
            `application_name`.

    Raises:
        StoreUnavailable: the server cannot be reached, refuses the credentials, or has
            no such database (named by host, port and database, never the password);
            or the event loop is not asyncio (asyncpg runs on asyncio only).
        InvalidStoreOption: a bad option (`writer="process"`, a bad schema name, one
            out of its range or one there is none of).
    """
    dsn, schema, where, opts = _checked_options(url, schema, options, settings)
    connect, reader_settings = _connections(dsn, opts)
    writer = await _connect(where, connect)
    readers, schema, last_position = await _open_schema(
        where, connect, writer, schema, reader_settings
    )
    store = PostgresEventStore(
        where, connect, schema, registry or EventRegistry(), opts, writer, readers, last_position
    )
    store._log.info("store.opened", schema=schema, position=last_position)
    try:
        async with store._serving(store._run_writer):
            yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store._close_connections()
        store._log.info("store.closed", position=store._last_position)


async def _open_schema(
    where: str,
    connect: _Connect,
    writer: asyncpg.Connection,
    schema: str | None,
    reader_settings: dict[str, str],
) -> tuple[asyncpg.Pool, str, int]:
    """On the new `writer` connection: the schema (None: the connection's current one)
    migrated, its last position, and the read pool; its errors as the store's (the
    connections terminated)."""
    readers: asyncpg.Pool | None = None
    try:
        try:
            if schema is None:
                schema = await current_schema(writer)
            await migrate(writer, schema)
            last_position = int(await writer.fetchval(_Queries(schema).last_position))
            readers = await asyncpg.create_pool(
                connect.dsn,
                min_size=1,
                max_size=_READ_POOL_SIZE,
                timeout=connect.timeout,
                server_settings=reader_settings,
            )
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            ValueError,
            RuntimeError,
        ) as exc:
            if isinstance(exc, RuntimeError | ValueError):
                raise StoreUnavailable(f"opening {where}: {exc}") from exc
            raise _translate(exc, "opening", where) from exc
    except BaseException:
        writer.terminate()
        if readers is not None:
            readers.terminate()
        raise
    assert readers is not None
    return readers, schema, last_position
