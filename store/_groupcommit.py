"""What every backend's store shares: appends queued for one writer, committed in groups.

`append` checks and encodes on the caller's task (`store/_append.py`), then queues; one
writer task takes everything queued (up to `max_batch_events` events) and commits it as
one batch, so the per-commit cost is paid per batch, not per append. A backend
subclasses `GroupCommitStore`: it commits one batch (`_commit_batch`) and answers the
queries of the checked calls (`store/_calls.py`); the queue, the writer's loop, commit
listeners and closing are here, answering a committed batch's callers and counting it
in `store/_answer.py`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, NoReturn, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from store import telemetry
from store._answer import CommitListener, Counters, answer_batch
from store._append import AppendPreparer
from store._batch import Redecision, _Append, _BatchResult, _fail_batch, _Write
from store._calls import _StoreCalls
from store._chain import ChainedAppend, ChainOutcome, append_one_by_one, next_expected
from store._codec import EventRegistry
from store._errors import ChainBroken, StoreClosed, StoreError
from store._logging import get_logger
from store._options import StoreOptions
from store._prepare import Fence
from store._records import AppendResult, Lease, StoreStatistics

__all__ = ["GroupCommitStore"]

S = TypeVar("S")

# A statement that changes nothing (in SQLite and PostgreSQL alike): queued behind every
# pending append, its commit tells `wait_settled` that they are settled.
_SETTLED_SQL: Final = "SELECT 1"
# Appends without a fence (clients') a batch takes beyond its fenced ones while
# process managers' commands come (see `_take`).
_UNFENCED_FLOOR: Final = 16
_FENCED_MEMORY: Final = 8


class GroupCommitStore(_StoreCalls):
    """The part of an event store every backend shares: `append` and its queue, the
    writer task's loop, handing each committed batch to its listeners and callers,
    statistics.

    A backend implements `_commit_batch` (one batch, one transaction) and the query
    hooks of `_StoreCalls` (reads, snapshots, checkpoints, their arguments already
    checked there); it may run a writer loop of its own in place of
    `_run_writer` (the SQLite writer process does), using `_take` and `_answer`.
    A backend whose batch transaction refuses an append whose `chained` one (by index
    in the batch) did not commit fresh sets `_chains`: `append_chain` then queues a
    whole chain at once; otherwise it appends one after another. A backend whose
    writer decides again, on what committed since, an append chained to one that
    committed decided again in an earlier batch (`_Append.stale`) sets
    `_redecides_stale`; otherwise such an append gets `ChainBroken`.
    """

    _chains = False
    _redecides_stale = False

    def __init__(
        self, path: str, registry: EventRegistry, options: StoreOptions, last_position: int
    ) -> None:
        self.path = path
        self.registry = registry
        self.options = options
        self._pending: deque[_Append | _Write] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        # Why the store stopped taking writes before it was closed (its writer failed).
        self._failure: StoreError | None = None
        self._writer_done = asyncio.Event()
        self._listeners: list[CommitListener] = []
        self._last_position = last_position  # of the last batch answered
        self._counters = Counters()
        self._since_fenced = _FENCED_MEMORY  # batches since one took fenced appends (`_take`)
        self._batch_serial = 0  # of the batch `_take` last took
        self._snapshot_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
        # The loop the store was opened on: its writer task and every future live there.
        self._loop = asyncio.get_running_loop()
        self._preparer = AppendPreparer(registry, options, self._loop)
        self._prepare = self._preparer.prepare
        self._valid_stream_ids = self._preparer.valid_stream_ids
        self._log = get_logger("store", path=path)
        telemetry.resolve()  # tracing and metrics on if the application set OpenTelemetry up
        # The task group the store serves in (the writer's), once `_serving` runs: a
        # backend starts the tasks of its own there, and they end with the store.
        self._tasks: anyio.abc.TaskGroup | None = None

    # -- appending ----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[msgspec.Struct],
        *,
        expected_version: int,
        command_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        fence: Lease | None = None,
    ) -> AppendResult:
        """Append `events` to `stream_id` atomically, after checking its version.

        Args:
            stream_id: the stream (aggregate instance) to append to.
            events: one or more registered event structs, in order.
            expected_version: the stream's current version as the caller knows it, or
                `NO_STREAM` (must not exist), `STREAM_EXISTS`, or `ANY` (no check).
            command_id: makes the append idempotent: if an append with this id already
                committed (same stream and events), its first result is returned with
                `duplicate=True` and nothing is written.
            metadata: string key/values stored with every event of this append.
            fence: a lease (from `acquire_lease`/`renew_lease`): the append commits only
                if, in its transaction, the store's row of that lease still has the
                fence's owner and epoch. Its expiry is not checked: an expired lease
                nobody took since is still safe to write under. A command id already
                committed is answered as a duplicate whatever the lease.

        Returns:
            Where the events landed, once they are committed (durably, under
            `synchronous=FULL`).

        Raises:
            ConcurrencyError: the stream is not at `expected_version`; nothing written.
            IdempotencyConflict: `command_id` committed before with other events.
            LeaseLost: `fence` is no longer held (another owner or epoch); this append
                alone was refused and wrote nothing.
            InvalidLease: `fence` is not a `Lease`; nothing written.
            InvalidStreamId: `stream_id` is not one the store can take; nothing written.
            InvalidAppend: a bad append (expected version, no events, an unregistered
                type, an event that would not decode as its type (`InvalidEvent`),
                size, command id, metadata); nothing written.
            StoreFull, StoreUnavailable, StoreCorrupted: the file could not take the
                write; nothing of this append was written.
            StoreClosed: the store is closing.

        Cancellation: cancelling the caller before the writer took the append withdraws
        it; once the writer has it, it commits or fails as a unit and only the reply is
        lost. Treat a cancelled append as of unknown outcome (retry with the same
        `command_id`).
        """
        if self._closing:
            raise self._closed(f"; append to {stream_id!r} refused")
        if type(stream_id) is not str or stream_id not in self._valid_stream_ids:
            self._check_stream_id(stream_id)
        item = self._prepare(stream_id, expected_version, events, command_id, metadata, fence)
        pending = self._pending
        if len(pending) >= self.options.max_pending_appends:
            await self._wait_for_room(stream_id)
        if telemetry.tracer is not None:
            item.queued_at = time.perf_counter()  # the commit span's wait
        pending.append(item)
        wake = self._wake
        if not wake.is_set():
            wake.set()
        try:
            return await item.future
        except BaseException:
            # The exception's traceback holds this frame. With `item` in it, that made a
            # cycle (frame, item, its future, the exception) through an append the
            # collector does not track (`_Append`), so it was never freed.
            del item
            raise

    async def append_chain(
        self,
        stream_id: str,
        chain: Sequence[ChainedAppend],
        *,
        expected_version: int,
    ) -> list[ChainOutcome]:
        """Append each of `chain` to `stream_id` in order, each only if the one before
        it committed as a fresh append (not refused, failed or a duplicate): the first
        expects `expected_version`, each next one the version the one before leaves.

        One commit can take the whole chain (an actor's batch of commands that each
        carry a command id): where `append` would wait for a commit per append. The
        chain is not one transaction: the appends before a refused one stay committed.

        Returns:
            One outcome per append, in order: its `AppendResult`, or the error it got,
            as `append` would raise it, or `ChainBroken` for one not written because
            the one before it did not commit as a fresh append.

        Cancellation: as for `append`, of each append of the chain.
        """
        if not self._chains or len(chain) < 2:
            return await append_one_by_one(self.append, stream_id, chain, expected_version)
        if self._closing:
            raise self._closed(f"; append to {stream_id!r} refused")
        if type(stream_id) is not str or stream_id not in self._valid_stream_ids:
            self._check_stream_id(stream_id)
        items: list[_Append] = []
        refused: Exception | None = None  # why the append after the last item was not queued
        expected = expected_version
        previous: _Append | None = None
        for link in chain:
            try:
                item = self._prepare(
                    stream_id, expected, link.events, link.command_id, link.metadata, link.fence
                )
            except Exception as exc:  # noqa: BLE001 - this append's outcome; the rest broken
                refused = exc
                break
            item.after = previous
            previous = item
            items.append(item)
            expected = next_expected(expected, len(link.events))
        if len(self._pending) >= self.options.max_pending_appends:
            await self._wait_for_room(stream_id)
        tracing = telemetry.tracer is not None
        for item in items:
            if tracing:
                item.queued_at = time.perf_counter()
            self._pending.append(item)
        self._wake.set()
        outcomes: list[ChainOutcome] = []
        try:
            for item in items:
                try:
                    outcomes.append(await item.future)
                except Exception as exc:  # noqa: BLE001 - this append's outcome
                    # Without its traceback: it holds this frame, whose `items` hold
                    # the futures holding the exception, through appends the collector
                    # does not track (`_Append`): a cycle it would never free.
                    outcomes.append(exc.with_traceback(None))
        finally:
            for item in items:  # cancelled: withdraw what the writer did not take
                if not item.future.done():
                    item.future.cancel()
        if refused is not None:
            outcomes.append(refused)
            for index in range(len(items) + 1, len(chain)):  # not sent: the rest broken
                expected = next_expected(expected, len(chain[index - 1].events))
                outcomes.append(ChainBroken(stream_id, expected))
        return outcomes

    def queue_append(
        self,
        stream_id: str,
        events: Sequence[msgspec.Struct],
        expected_version: int,
        metadata: Mapping[str, str] | None,
        after: _Append | None,
        redecide: Redecision | None = None,
    ) -> _Append | None:
        """Queue an append without waiting for it (no command id, no fence): the
        returned item's `future` gets what `append` would return or raise. With
        `after` (an item this returned before, for the same stream), it commits only
        if that one committed as a fresh append as decided, else it gets `ChainBroken`:
        the actors chain a command decided on the state an append in flight leaves.

        With `redecide`, where the backend can, an append whose expected version
        another append passed is not refused at once: `redecide` gets the events it
        missed and may decide the append's events again on the stream's version (see
        `store._batch.Redecision`): SQLite's thread writer in its transaction, under
        the write lock; PostgreSQL's writer before it sends the batch, on what other
        processes committed by then, and after a batch refused it, for the next one
        (`store._ahead`). Its result then shows the new
        place, and the commit listeners get the new events. An append chained to one decided again
        is decided again too, whatever its version, on what that one left (in a later
        batch, with the events appended since), or gets `ChainBroken`: its first
        version may then still be `expected_version + 1` (that one may have decided
        fewer events), so `redecide` itself must tell its caller it decided again.

        None, with nothing queued, when this backend cannot chain across batches or
        the queue is full (`max_pending_appends`): use `append`, which waits for room.
        Raises what `append` raises before queueing (a bad append, a closed store).
        Cancelling the future before the writer took the append withdraws it, as
        cancelling `append` does.
        """
        if not self._chains or len(self._pending) >= self.options.max_pending_appends:
            return None
        if self._closing:
            raise self._closed(f"; append to {stream_id!r} refused")
        if type(stream_id) is not str or stream_id not in self._valid_stream_ids:
            self._check_stream_id(stream_id)
        item = self._prepare(stream_id, expected_version, events, None, metadata, None)
        item.after = after
        item.redecide = redecide
        if telemetry.tracer is not None:
            item.queued_at = time.perf_counter()
        self._pending.append(item)
        wake = self._wake
        if not wake.is_set():
            wake.set()
        return item

    def _closed(self, refused: str = "") -> StoreError:
        """What a write gets once the store stopped taking them: the writer's failure,
        or `StoreClosed` (its message ending in `refused`)."""
        return self._failure or StoreClosed(f"the store {self.path!r} is closed{refused}")

    async def _wait_for_room(self, stream_id: str) -> None:
        while len(self._pending) >= self.options.max_pending_appends:
            self._room.clear()
            await self._room.wait()
            if self._closing:
                raise StoreClosed(
                    f"the store {self.path!r} closed; append to {stream_id!r} refused"
                )

    def check_stream_id(self, stream_id: object) -> None:
        """Raise `InvalidStreamId` unless this store can take `stream_id`: a non-empty,
        non-blank str of valid Unicode with no control, format or separator characters,
        of at most `max_stream_id_bytes` UTF-8 bytes. Every method taking a stream id
        checks it; call this to refuse an id before doing work of your own with it.
        Cheap for an id seen before (a set lookup).
        """
        if type(stream_id) is str and stream_id in self._valid_stream_ids:
            return
        self._check_stream_id(stream_id)

    def _check_stream_id(self, stream_id: object) -> None:
        self._preparer.check_stream_id(stream_id)

    async def wait_settled(self) -> None:
        """Return once every append submitted before this call has committed or failed,
        including appends whose callers were cancelled while the writer held them.

        A caller that gave up on an append (cancelled) learns its outcome by reading
        after this returns. It waits for the writer's queue as far as the call, not for
        appends submitted later. Raises `StoreClosed` (or the store's failure) once the
        store no longer writes: what was queued then has been failed.
        """
        await self._enqueue_write(_SETTLED_SQL, ())

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        """The highest committed global position, once it is above `after` (a commit of
        any process, this one's included), or after `timeout` seconds whatever it is.

        A hint for followers of the log, which then read it from their own position.
        This implementation asks the database every `watch_interval`; a backend
        overrides it with a cheaper signal (SQLite: `PRAGMA data_version`; PostgreSQL:
        `LISTEN`).
        """
        deadline = anyio.current_time() + timeout
        interval = self.options.watch_interval
        while True:
            head = max(await self.last_position(), self._last_position)
            remaining = deadline - anyio.current_time()
            if head > after or remaining <= 0:
                return head
            await anyio.sleep(min(interval, remaining))

    async def _enqueue_write(
        self,
        sql: str,
        params: tuple[Any, ...],
        fence: Fence | None = None,
        *,
        returning: bool = False,
    ) -> Any:
        """Queue a keyed write (in the backend's SQL) for the next batch; wait for it.

        Returns the statement's first row (a tuple, or None) with `returning`, else
        None. With `fence` the statement runs only while that lease is held at its
        epoch (checked in the batch's transaction); else `LeaseLost`."""
        if self._closing:
            raise self._closed()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(sql, params, future, fence, returning=returning))
        self._wake.set()
        return await future

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call `listener` after every commit with that batch's events, in position order.

        The listener runs on the writer task, before the appenders are answered: it must
        not block or await (hand the events to a queue). An exception it raises is logged
        and otherwise ignored. Returns a function that removes the listener.
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- the writer ---------------------------------------------------------------------

    async def _run_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The writer task: commit what is queued, one batch at a time, until closed."""
        task_status.started()
        pending = self._pending
        try:
            while True:
                if not pending:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                gather = self._gathering(len(pending))
                if gather > 0.0:
                    await anyio.sleep(gather)
                appends, writes = self._take(self._batch_size(len(pending)))
                if not appends and not writes:
                    if pending:  # chained appends whose batch is being answered
                        await anyio.lowlevel.checkpoint()
                    continue
                with anyio.CancelScope(shield=True):
                    await self._commit(appends, writes)
        finally:
            self._fail_pending(StoreClosed(f"the store {self.path!r} closed before the write"))
            self._writer_done.set()

    def _gathering(self, queued: int) -> float:
        """Seconds to let the queue (`queued` items now) grow before taking the next
        batch: none here; a backend whose batches wait for another process's lock may
        take them later, when that lock is about to be free (see `SQLiteEventStore`)."""
        return 0.0

    def _batch_size(self, queued: int) -> int:
        """How many of the `queued` items the writer takes into its next batch: all of
        them here; a backend may leave some queued for the next batch to overlap with
        answering this one (see `PostgresEventStore`)."""
        return queued

    def _take(self, most: int) -> tuple[list[_Append], list[_Write]]:
        """Take up to `most` queued items (and at most `max_batch_events` events).

        Fair to process managers: while their commands come (fenced by their leases,
        in this batch or one of the `_FENCED_MEMORY` before), a batch takes at most as many appends
        without a fence (clients') as fenced ones, plus `_UNFENCED_FLOOR`; the other
        clients' appends stay queued, in order, for the next batch, and so does every
        keyed write queued behind one of them (`wait_settled` waits for what was queued
        before it). A client waits while its append is queued, so under a heavy load of
        clients the process managers get about half of the writer's batches (and of
        the loop's time) and keep up, rather than falling ever further behind; without
        process managers nothing is held back.
        """
        pending = self._pending
        max_events = self.options.max_batch_events
        appends: list[_Append] = []
        writes: list[_Write] = []
        kept: list[_Append | _Write] = []  # left queued for the next batch, in order
        taken = 0
        fenced = 0
        unfenced = 0
        limit = _UNFENCED_FLOOR if self._since_fenced < _FENCED_MEMORY else None
        self._batch_serial = serial = self._batch_serial + 1
        while pending and taken < max_events and most > 0:
            item = pending.popleft()
            most -= 1
            if item.future.cancelled():
                continue
            if type(item) is _Append:
                after = item.after
                if after is not None and not self._link(item, after, serial):
                    if not item.future.done():  # its predecessor is in a batch in flight
                        kept.append(item)
                    continue
                if item.fence is not None:
                    fenced += 1
                    if limit is None:
                        limit = _UNFENCED_FLOOR
                elif limit is not None and unfenced >= limit + fenced:
                    kept.append(item)
                    continue
                else:
                    unfenced += 1
                item.batch, item.slot = serial, len(appends)
                appends.append(item)
                taken += len(item.rows)
            elif kept:
                kept.append(item)
            else:
                writes.append(cast(_Write, item))
        if kept:
            pending.extendleft(reversed(kept))
        self._since_fenced = 0 if fenced else min(self._since_fenced + 1, _FENCED_MEMORY)
        if not self._room.is_set():
            self._room.set()
        return appends, writes

    def _link(self, item: _Append, after: _Append, serial: int) -> bool:
        """Whether chained `item` can go in batch `serial`: its predecessor `after` is
        in that batch (`item.chained` is then its index), or committed fresh before: as
        decided, or decided again in the store when `item` can be too (`item.stale`).
        False when `after` is still in a batch not answered (`item` waits) or did not
        commit fresh as decided (`item` is answered `ChainBroken`).

        `after` in that batch may have been decided again already, by a writer that
        sends a refused append again (PostgreSQL): `item`, decided on what `after` was
        first decided to leave, is then decided again on what it now leaves (as the
        writer does for those refused with it), or answered `ChainBroken`: the versions
        could line up by chance and commit a decision made on a state that never was."""
        if after.batch == serial:
            if after.rebased and not item.rebased:
                version = after.expected + len(after.rows)  # where `after` now ends
                if not self._preparer.redecided(item, [], version):
                    item.after = None
                    item.future.set_exception(ChainBroken(item.stream_id, item.expected))
                    return False
            item.chained = after.slot
            return True
        future = after.future
        if not future.done():
            return False
        if not future.cancelled() and future.exception() is None and not future.result().duplicate:
            if not after.rebased:
                item.chained = -1
                item.after = None
                return True
            if item.redecide is not None and self._redecides_stale:
                # Decided on what `after` was first decided to leave; `after` committed
                # other events (decided again): so is `item`, on what they left.
                item.chained = -1
                item.after = None
                item.expected = future.result().last_version
                item.stale = True
                return True
        item.after = None  # nothing holds on to the one that failed
        item.future.set_exception(ChainBroken(item.stream_id, item.expected))
        return False

    async def _commit(self, appends: list[_Append], writes: list[_Write]) -> None:
        try:
            result = await self._commit_batch(appends, writes)
        except Exception as exc:  # noqa: BLE001 - the batch failed as a unit: tell each caller
            _fail_batch(appends, writes, self._translate_error(exc, "commit"))
            return
        await self._answer(appends, writes, result)

    @abc.abstractmethod
    async def _commit_batch(self, appends: list[_Append], writes: list[_Write]) -> _BatchResult:
        """Commit `appends` (each checked against its stream's version and its command
        id, refused alone on a mismatch) and `writes` in one transaction, positions
        assigned in order; return their outcomes once committed. Raise if the batch
        failed as a unit (nothing of it written): `_translate_error` names the error."""

    def _translate_error(self, exc: BaseException, what: str) -> StoreError:
        """The `StoreError` callers get for `exc`, raised while doing `what`; a backend
        translates its driver's errors (full, corrupted, unavailable)."""
        if isinstance(exc, StoreError):
            return exc
        return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")

    async def _answer(
        self, appends: list[_Append], writes: list[_Write], result: _BatchResult
    ) -> None:
        """Answer a committed batch's callers, after its listeners have seen it."""
        self._last_position = result.last_position
        await answer_batch(appends, writes, result, self._listeners, self._counters, self._log)

    def _fail_pending(self, error: StoreError) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(error)
        self._room.set()

    def _snapshot_decoder(self, state_type: type[Any]) -> msgspec.msgpack.Decoder[Any]:
        """The decoder of snapshots of `state_type`, built once (TypeError: msgspec
        cannot decode that type)."""
        decoder = self._snapshot_decoders.get(state_type)
        if decoder is None:
            decoder = self._snapshot_decoders[state_type] = msgspec.msgpack.Decoder(state_type)
        return decoder

    # -- statistics and lifecycle -------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        """Counters since the store was opened (a frozen snapshot)."""
        return self._counters.statistics(len(self._pending), self._last_position)

    @property
    def closed(self) -> bool:
        """Whether the store stopped accepting appends."""
        return self._closing

    async def _drain_and_close(self) -> None:
        self._closing = True
        self._wake.set()
        self._room.set()
        await self._writer_done.wait()

    @contextlib.asynccontextmanager
    async def _serving(
        self, run_writer: Callable[..., Coroutine[Any, Any, None]]
    ) -> AsyncIterator[None]:
        """Run the writer task `run_writer` (started with a task status) for the block;
        on exit, commit every append accepted and stop it. An error the block raises
        comes out as raised, not wrapped in an exception group."""
        try:
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                await tg.start(run_writer)
                try:
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain_and_close()
                    tg.cancel_scope.cancel()  # what a backend still runs there (reads)
        except BaseExceptionGroup as group:
            # The writer task does not raise, so the group wraps the error the caller's
            # own `async with` body raised: hand that back as it was raised, not wrapped.
            if len(group.exceptions) != 1 or not isinstance(group.exceptions[0], Exception):
                raise
            _reraise(group.exceptions[0])


def _reraise(error: Exception) -> NoReturn:
    """Raise `error` again, keeping the context it had (not the group it came out of)."""
    context, suppress = error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__context__, error.__suppress_context__ = context, suppress
        del error, context
