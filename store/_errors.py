"""Errors raised by the event store.

```
StoreError
├── ConcurrencyError           expected version does not match the stream
├── IdempotencyConflict        a command id reused for a different append
├── StoreClosed                the store no longer accepts work
├── StoreFull                  the database reached its size limit (SQLITE_FULL)
├── StoreCorrupted             the database file is damaged or not a database
├── StoreUnavailable           the file cannot be opened or written (permissions, locks)
├── EventDecodeError           a stored event cannot be turned back into its type
│   ├── UnknownEventType       no registered type (or upcaster) for its tag and version
│   └── CorruptEvent           its payload fails the checksum or does not decode
├── ReadTooLarge               a whole-stream read over the read limit (page it)
└── InvalidAppend              a bad argument; nothing was written
    ├── InvalidStreamId        empty, too long, or with characters the policy refuses
    ├── InvalidExpectedVersion not an int, or an int no stream can have
    ├── UnregisteredEventType  the event's type is not in the registry
    ├── EventTooLarge          one encoded event is over the byte limit
    └── TooManyEvents          one append carries more events than the limit
```
Every message names the stream, version or type concerned and what to do; the same
values are kept on attributes. `InvalidAppend` subclasses `ValueError` as well, so code
that already catches `ValueError` for bad arguments keeps working.
"""

from __future__ import annotations

from store._records import ANY, NO_STREAM, STREAM_EXISTS

__all__ = [
    "ConcurrencyError",
    "CorruptEvent",
    "EventDecodeError",
    "EventTooLarge",
    "IdempotencyConflict",
    "InvalidAppend",
    "InvalidExpectedVersion",
    "InvalidStreamId",
    "ReadTooLarge",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "TooManyEvents",
    "UnknownEventType",
    "UnregisteredEventType",
]


class StoreError(Exception):
    """Base class of every error the event store raises."""


class ConcurrencyError(StoreError):
    """The stream is not at the version the append expected; nothing was written.

    Attributes:
        stream_id: the stream appended to.
        expected: the expected version given (an exact version, `NO_STREAM` or
            `STREAM_EXISTS`).
        actual: the stream's version when the append was checked (0: no stream).
    """

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not {_describe_expected(expected)};"
            " reload it and retry the command"
        )
        self.stream_id, self.expected, self.actual = stream_id, expected, actual

    def __reduce__(self) -> tuple[type[ConcurrencyError], tuple[str, int, int]]:
        return (type(self), (self.stream_id, self.expected, self.actual))


class IdempotencyConflict(StoreError):
    """A command id that already committed was reused for a different append.

    Retrying an append with the same command id, stream and events returns the first
    result; a different stream or different events under the same id is a bug in the
    caller's id scheme, so it is refused rather than silently answered.
    """

    def __init__(self, command_id: str, stream_id: str, recorded_stream_id: str) -> None:
        where = (
            f"with different events on stream {stream_id!r}"
            if stream_id == recorded_stream_id
            else f"on stream {stream_id!r} but it was recorded on {recorded_stream_id!r}"
        )
        super().__init__(
            f"command id {command_id!r} was already committed; it was reused {where}."
            " Command ids must identify one command: derive a new id for a new command"
        )
        self.command_id, self.stream_id = command_id, stream_id
        self.recorded_stream_id = recorded_stream_id


class StoreClosed(StoreError):
    """The store was closed (or is closing) and accepts no more work."""


class StoreFull(StoreError):
    """The database reached its size limit (SQLITE_FULL): free space or raise the limit.

    Nothing of the refused append was written; appends succeed again once there is room.
    """


class StoreCorrupted(StoreError):
    """The database file is damaged or is not a SQLite database (SQLITE_CORRUPT/NOTADB)."""


class StoreUnavailable(StoreError):
    """The database file cannot be opened or written: permissions, a read-only file,
    a missing directory, or a lock held longer than `busy_timeout`."""


class EventDecodeError(StoreError):
    """A stored event cannot be decoded into its registered type.

    Attributes:
        stream_id, version: where the event is stored.
        event_type, schema_version: its stored tag and shape version.
    """

    def __init__(
        self, message: str, stream_id: str, version: int, event_type: str, schema_version: int
    ) -> None:
        super().__init__(message)
        self.stream_id, self.version = stream_id, version
        self.event_type, self.schema_version = event_type, schema_version

    def __reduce__(self) -> tuple[type[EventDecodeError], tuple[str, str, int, str, int]]:
        return (
            type(self),
            (str(self), self.stream_id, self.version, self.event_type, self.schema_version),
        )


class UnknownEventType(EventDecodeError):
    """No registered type or upcaster matches a stored event's tag and schema version."""

    @classmethod
    def at(
        cls, stream_id: str, version: int, event_type: str, schema_version: int
    ) -> UnknownEventType:
        """The error for the event at `version` of `stream_id`, with a message that
        names the stream, version, type and schema version and says what to register."""
        return cls(
            f"stream {stream_id!r} version {version} holds event type {event_type!r}"
            f" schema {schema_version}, which is not registered: register the type,"
            " or an upcaster (or alias) from that tag and schema version",
            stream_id,
            version,
            event_type,
            schema_version,
        )


class CorruptEvent(EventDecodeError):
    """A stored event's bytes fail their checksum or do not decode into its type."""

    @classmethod
    def at(
        cls, stream_id: str, version: int, event_type: str, schema_version: int, reason: str
    ) -> CorruptEvent:
        """The error for the undecodable event at `version` of `stream_id`, naming the
        stream, version, type and schema version, with `reason` from the decoder."""
        return cls(
            f"stream {stream_id!r} version {version} ({event_type!r} schema {schema_version})"
            f" is corrupt: {reason}",
            stream_id,
            version,
            event_type,
            schema_version,
        )


class InvalidAppend(StoreError, ValueError):
    """An argument of an append (or read) is invalid; nothing was written."""


class InvalidStreamId(InvalidAppend):
    """A stream id is not a non-empty printable string within the length limit."""

    def __init__(self, stream_id: object, reason: str) -> None:
        shown = repr(stream_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid stream id {shown}: {reason}")
        self.stream_id, self.reason = stream_id, reason


class InvalidExpectedVersion(InvalidAppend, TypeError):
    """`expected_version` is not an int, or an int below the special values."""

    def __init__(self, stream_id: str, expected: object) -> None:
        super().__init__(
            f"expected_version for stream {stream_id!r} must be an int version >= 1,"
            f" NO_STREAM, STREAM_EXISTS or ANY, not {expected!r}"
        )
        self.stream_id, self.expected = stream_id, expected


class UnregisteredEventType(InvalidAppend):
    """An appended event's type is not registered with the store's codec."""

    def __init__(self, stream_id: str, event_type: type) -> None:
        super().__init__(
            f"event type {event_type.__qualname__} appended to stream {stream_id!r} is not"
            " registered: add it to the store's EventRegistry (it needs a permanent tag)"
        )
        self.stream_id, self.event_type = stream_id, event_type


class EventTooLarge(InvalidAppend):
    """One encoded event is larger than `max_event_bytes`."""

    def __init__(self, stream_id: str, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"event {event_type!r} for stream {stream_id!r} encodes to {size} bytes, over"
            f" the limit of {limit} bytes (max_event_bytes); store large data elsewhere"
            " and put a reference in the event"
        )
        self.stream_id, self.event_type, self.size, self.limit = stream_id, event_type, size, limit


class TooManyEvents(InvalidAppend):
    """One append carries more events than `max_events_per_append`."""

    def __init__(self, stream_id: str, count: int, limit: int) -> None:
        super().__init__(
            f"append to stream {stream_id!r} carries {count} events, over the limit of"
            f" {limit} (max_events_per_append)"
        )
        self.stream_id, self.count, self.limit = stream_id, count, limit


class ReadTooLarge(StoreError, ValueError):
    """A read without a `limit` would return more than `max_read_limit` events; nothing
    is returned rather than a silently shortened stream."""

    def __init__(self, stream_id: str, from_version: int, limit: int) -> None:
        super().__init__(
            f"stream {stream_id!r} holds more than {limit} events from version"
            f" {from_version} (max_read_limit): read it in pages, passing limit= and"
            " from_version=last.version + 1"
        )
        self.stream_id, self.from_version, self.limit = stream_id, from_version, limit


def _describe_expected(expected: int) -> str:
    if expected == NO_STREAM:
        return "NO_STREAM (expected it not to exist)"
    if expected == STREAM_EXISTS:
        return "STREAM_EXISTS (expected it to exist)"
    if expected == ANY:
        return "ANY"
    return f"the expected {expected}"
