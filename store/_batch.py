"""The batch types every backend's group commit shares, and answering their callers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from store._errors import StoreError
from store._records import AppendResult, RecordedEvent

Redecision = Callable[[list[RecordedEvent], int], Sequence[Any] | None]
"""Given the events of the stream an append missed (in version order, each right after
the one before, the first right after the version it expected; when the append it is
chained to was decided again, those after the version that one ended at: none in the
same batch) and the stream's version after them, the events to append instead on that
version, or None to leave it refused. Called on SQLite's writer thread, inside its
transaction, or on PostgreSQL's event loop before the batch is sent."""


class _Append(msgspec.Struct, gc=False):
    """An append waiting for the writer. A struct, not a class with `__slots__`: built
    once per append on the event loop, where a C constructor costs a third as much.
    Not tracked by the garbage collector: the queue, the batch and its caller's task
    refer to it only while it is pending, and none of them outlives that. So no frame
    an exception from its future passes through may still hold it when the exception
    is kept (its traceback holds the frame): the collector cannot see that cycle, and
    it would never be freed (tests/actors/test_no_leaks.py)."""

    stream_id: str
    expected: int
    events: Sequence[Any]
    rows: list[tuple[str, int, bytes, int]]
    metadata: dict[str, str] | None
    metadata_bytes: bytes | None
    command_id: str | None
    digest: bytes | None
    future: asyncio.Future[AppendResult]
    fence: tuple[str, str, int] | None = None  # lease name, owner, epoch
    queued_at: float = 0.0  # perf_counter() when queued, stamped only while tracing
    # A chained append (`append_chain`): the append it commits only after, if any.
    after: _Append | None = None
    # Set when the writer takes it into a batch: that batch's serial, its index there,
    # and the index there of the append it is chained to (-1: none, or one committed).
    batch: int = -1
    slot: int = -1
    chained: int = -1
    # Decides the append's events again when another append passed its expected
    # version (`GroupCommitStore.queue_append`); `rebased` once it did: the append then
    # holds the events it decided, which commit on the stream's version then.
    redecide: Redecision | None = None
    rebased: bool = False
    # Chained to an append that committed, decided again, in an earlier batch: decided
    # on the state that one was first decided to leave, which never committed. It now
    # expects the version that one ended at, and the writer decides it again on what
    # that one left (and the events appended since) or breaks its chain.
    stale: bool = False
    # How many times the writer decided it again after its batch refused it as a
    # conflict, and sent it in a later batch (PostgreSQL: `store._ahead.refused_again`).
    retried: int = 0


class _BatchAppend(Protocol):
    """What the batch transaction reads of an append: an `_Append` on the writer
    thread, a decoded `_wire.AppendWire` in the writer process."""

    @property
    def stream_id(self) -> str: ...
    @property
    def expected(self) -> int: ...
    @property
    def rows(self) -> list[tuple[str, int, bytes, int]]: ...
    @property
    def metadata_bytes(self) -> bytes | None: ...
    @property
    def command_id(self) -> str | None: ...
    @property
    def digest(self) -> bytes | None: ...


class _FencedBatchAppend(_BatchAppend, Protocol):  # noqa: PYI046 - used by the SQLite batch
    """An append that may carry a fence and be chained: what the SQLite batch
    transaction reads."""

    @property
    def fence(self) -> tuple[str, str, int] | None:
        """The lease (name, owner, epoch) the append is fenced by, or None."""
        ...

    @property
    def chained(self) -> int:
        """The index, in the same batch, of the append this one commits only after
        (it is refused unless that one committed as a fresh append); -1 for none."""
        ...


class _Write:
    """A keyed write (snapshot, checkpoint, lease) that rides in the next batch
    transaction: a statement in the backend's SQL and its parameters.

    With `fence` (a lease's name, owner, epoch), the statement runs only if the lease
    row has that owner and epoch, in the same transaction; otherwise the caller gets
    `LeaseLost`. With `returning`, the caller gets the statement's first row (a tuple,
    or None when it returned none); otherwise None."""

    __slots__ = ("fence", "future", "params", "returning", "sql")

    def __init__(
        self,
        sql: str,
        params: tuple[Any, ...],
        future: asyncio.Future[Any],
        fence: tuple[str, str, int] | None = None,
        *,
        returning: bool = False,
    ) -> None:
        self.sql, self.params, self.future = sql, params, future
        self.fence, self.returning = fence, returning


_WriteResult = tuple[bool, tuple[Any, ...] | None]
"""What became of one keyed write of a committed batch: (lost, row). `lost`: its fence
failed and the statement did not run; `row` is then the lease's (owner, epoch) as found,
or None when there is no such lease. Otherwise `row` is the statement's first row when
the write asked for it (`returning`), or None."""


_Outcome = AppendResult | StoreError
"""What became of one append of a committed batch: its result, or why it was refused
(`ConcurrencyError`, `IdempotencyConflict`, `LeaseLost`, `ChainBroken`) while the rest of
the batch committed."""


class _BatchResult:
    """A committed batch: each append's outcome (in the batch's order), when it was
    recorded, how long the commit took, the keyed writes' error (they commit or fail
    together, apart from the appends), and the last position after it."""

    __slots__ = (
        "commit_seconds",
        "last_position",
        "outcomes",
        "recorded_at",
        "write_error",
        "write_results",
    )

    def __init__(
        self,
        outcomes: list[_Outcome],
        recorded_at: float,
        commit_seconds: float,
        write_error: StoreError | None,
        last_position: int,
        write_results: list[_WriteResult] | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.recorded_at = recorded_at
        self.commit_seconds = commit_seconds
        self.write_error = write_error
        self.last_position = last_position
        # per keyed write, in order, when any was fenced or returning (else None)
        self.write_results = write_results


def _fail_batch(appends: list[_Append], writes: list[_Write], error: StoreError) -> None:
    """Answer every caller of a batch that failed as a unit with `error`."""
    for item in appends:
        if not item.future.done():
            item.future.set_exception(error)
    for write in writes:
        if not write.future.done():
            write.future.set_exception(error)


def _recorded(
    item: _Append, result: AppendResult, recorded_at: float, out: list[RecordedEvent]
) -> None:
    """Add the records of committed append `item` to `out` (for commit listeners)."""
    stream_id = item.stream_id
    # Built only when a listener exists; one dict per append, shared by its events.
    metadata = {} if item.metadata is None else item.metadata
    command_id = item.command_id
    version = result.first_version
    position = result.first_position
    for event, (tag, schema_version, _data, _crc) in zip(item.events, item.rows, strict=True):
        out.append(
            RecordedEvent(
                stream_id,
                version,
                position,
                tag,
                schema_version,
                event,
                metadata,
                recorded_at,
                command_id,
            )
        )
        version += 1
        position += 1
