"""Answering a committed batch: its commit listeners first, then each caller, counted.

The writer task calls `answer_batch` once a batch committed (or was refused in part):
the keyed writes get their rows or errors, the commit listeners see the batch's events
in position order, and only then does each appender get its `AppendResult` or the error
that refused it alone. `Counters` keeps what the store's `statistics()` reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from store import faults, telemetry
from store._batch import _Append, _BatchResult, _recorded, _Write, _WriteResult
from store._errors import LeaseLost
from store._logging import LibraryLogger
from store._records import AppendResult, RecordedEvent, StoreStatistics
from store._telemetry import record_commit

__all__ = ["CommitListener", "Counters", "answer_batch"]

CommitListener = Callable[[Sequence[RecordedEvent]], None]
"""Called by the writer, in position order, with the events of each committed batch."""


class Counters:
    """What the store committed and refused since it was opened (event-loop side)."""

    __slots__ = (
        "appends",
        "batches",
        "commit_seconds",
        "commit_seconds_max",
        "events",
        "rejected",
    )

    def __init__(self) -> None:
        self.appends = 0
        self.events = 0
        self.rejected = 0
        self.batches = 0
        self.commit_seconds = 0.0
        self.commit_seconds_max = 0.0

    def count(
        self, committed: int, events: int, rejected: int, writes: list[_Write], seconds: float
    ) -> None:
        """Count a batch: `committed` appends of `events` events, `rejected` refused,
        `writes` keyed writes, committed in `seconds` (a batch that committed nothing
        is not counted as one)."""
        self.rejected += rejected
        if committed or writes:
            self.batches += 1
            self.appends += committed
            self.events += events
            self.commit_seconds += seconds
            self.commit_seconds_max = max(self.commit_seconds_max, seconds)

    def statistics(self, pending: int, last_position: int) -> StoreStatistics:
        """The counters as `StoreStatistics`, with the queue's length and the last
        position answered."""
        batches = self.batches
        return StoreStatistics(
            appends=self.appends,
            events=self.events,
            rejected=self.rejected,
            batches=batches,
            events_per_batch=self.events / batches if batches else 0.0,
            appends_per_batch=self.appends / batches if batches else 0.0,
            commit_ms_mean=1000 * self.commit_seconds / batches if batches else 0.0,
            commit_ms_max=1000 * self.commit_seconds_max,
            pending=pending,
            last_position=last_position,
        )


async def answer_batch(
    appends: list[_Append],
    writes: list[_Write],
    result: _BatchResult,
    listeners: list[CommitListener],
    counters: Counters,
    log: LibraryLogger,
) -> None:
    """Answer a committed batch's callers, after its `listeners` have seen it; count
    it in `counters` (a listener's error is logged to `log` and otherwise ignored)."""
    if telemetry.active and appends:
        record_commit(appends, result)
    _answer_writes(writes, result)
    if faults.enabled:
        await faults.hit_async("after_commit_before_publish")
    if listeners:
        _publish(appends, writes, result, listeners, counters, log)
        if faults.enabled:
            await faults.hit_async("after_commit_before_reply")
        _answer_appends(appends, result)
        return
    if faults.enabled:
        await faults.hit_async("after_commit_before_reply")
    _count_and_answer_appends(appends, writes, result, counters)


def _publish(
    appends: list[_Append],
    writes: list[_Write],
    result: _BatchResult,
    listeners: list[CommitListener],
    counters: Counters,
    log: LibraryLogger,
) -> None:
    """Count the batch and hand its committed events to the `listeners` (before any
    appender is answered)."""
    published: list[RecordedEvent] = []
    recorded_at = result.recorded_at
    committed = events = rejected = 0
    for item, outcome in zip(appends, result.outcomes, strict=True):
        if isinstance(outcome, AppendResult):
            if not outcome.duplicate:
                committed += 1
                events += len(item.rows)
                _recorded(item, outcome, recorded_at, published)
        else:
            rejected += 1
    counters.count(committed, events, rejected, writes, result.commit_seconds)
    if published:
        for listener in tuple(listeners):
            try:
                listener(published)
            except Exception:  # isolated and reported; the writer goes on
                # (LibraryLogger logs a traceback with error(exc_info=True): no exception())
                log.error(  # noqa: G201
                    "store.listener_failed", listener=repr(listener), exc_info=True
                )


def _answer_appends(appends: list[_Append], result: _BatchResult) -> None:
    """Answer each appender of the batch with its outcome."""
    for item, outcome in zip(appends, result.outcomes, strict=True):
        future = item.future
        if not future.done():
            if isinstance(outcome, AppendResult):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)


def _count_and_answer_appends(
    appends: list[_Append], writes: list[_Write], result: _BatchResult, counters: Counters
) -> None:
    """Count the batch and answer each appender, in one pass (no listener to see the
    batch first)."""
    committed = events = rejected = 0
    for item, outcome in zip(appends, result.outcomes, strict=True):
        future = item.future
        if isinstance(outcome, AppendResult):
            if not outcome.duplicate:
                committed += 1
                events += len(item.rows)
            if not future.done():
                future.set_result(outcome)
        else:
            rejected += 1
            if not future.done():
                future.set_exception(outcome)
    counters.count(committed, events, rejected, writes, result.commit_seconds)


def _answer_writes(writes: list[_Write], result: _BatchResult) -> None:
    """Answer the keyed writes of a committed batch: their error if they failed
    together, else each its row (or None), or `LeaseLost` for one whose fence failed."""
    error = result.write_error
    if error is not None:
        for write in writes:
            if not write.future.done():
                write.future.set_exception(error)
    elif result.write_results is not None:
        _answer_write_results(writes, result.write_results)
    else:
        for write in writes:
            if not write.future.done():
                write.future.set_result(None)


def _answer_write_results(writes: list[_Write], results: list[_WriteResult]) -> None:
    """Answer the keyed writes from their results: the row asked for, or `LeaseLost`
    for a write whose fence failed."""
    for write, (lost, row) in zip(writes, results, strict=True):
        future = write.future
        if future.done():
            continue
        if lost and write.fence is not None:
            name, owner, epoch = write.fence
            holder, holder_epoch = (None, None) if row is None else (str(row[0]), int(row[1]))
            future.set_exception(LeaseLost(name, owner, epoch, holder, holder_epoch))
        else:
            future.set_result(row)
