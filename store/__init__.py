"""The event store: an append-only log of events, the source of truth.

Open one with `open_store(path)` (a SQLite file) or `open_store("postgresql://...")`;
register event types on its `EventRegistry`; append with an expected version; read a
stream, the global log, or a stream as it stood at a past version or moment; keep
snapshots and subscriber checkpoints beside the events; hold leases (with epochs) on
named resources and fence appends and checkpoints with them, so that only the current
owner of a lease writes under it (see `acquire_lease`).
This package imports nothing else of esactors.
"""

from __future__ import annotations

from store._answer import CommitListener
from store._chain import ChainedAppend, ChainOutcome
from store._codec import EventRegistry, Upcaster
from store._errors import (
    ChainBroken,
    ConcurrencyError,
    CorruptEvent,
    EventDecodeError,
    EventTooLarge,
    IdempotencyConflict,
    InvalidAppend,
    InvalidArgument,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidLease,
    InvalidReadArgument,
    InvalidSnapshot,
    InvalidStoreOption,
    InvalidStreamId,
    LeaseLost,
    NaiveDatetime,
    ReadTooLarge,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreUnavailable,
    TooManyEvents,
    UnknownEventType,
    UnregisteredEventType,
)
from store._open import open_store
from store._options import StoreOptions, StoreSettings
from store._protocol import EventStore
from store._records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Lease,
    RecordedEvent,
    Snapshot,
    StoreStatistics,
)
from store._sqlite import SQLiteEventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "ChainBroken",
    "ChainOutcome",
    "ChainedAppend",
    "CommitListener",
    "ConcurrencyError",
    "CorruptEvent",
    "EventDecodeError",
    "EventRegistry",
    "EventStore",
    "EventTooLarge",
    "IdempotencyConflict",
    "InvalidAppend",
    "InvalidArgument",
    "InvalidCheckpoint",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidLease",
    "InvalidReadArgument",
    "InvalidSnapshot",
    "InvalidStoreOption",
    "InvalidStreamId",
    "Lease",
    "LeaseLost",
    "NaiveDatetime",
    "ReadTooLarge",
    "RecordedEvent",
    "SQLiteEventStore",
    "Snapshot",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreOptions",
    "StoreSettings",
    "StoreStatistics",
    "StoreUnavailable",
    "TooManyEvents",
    "UnknownEventType",
    "UnregisteredEventType",
    "Upcaster",
    "open_store",
]
