"""Errors raised by the event store.

```
StoreError
├── ConcurrencyError               expected version does not match the stream
├── IdempotencyConflict            a command id reused for a different append
├── StoreClosed                    the store no longer accepts work
├── StoreFull                      the database reached its size limit (SQLITE_FULL)
├── StoreCorrupted                 the database file is damaged or not a database
├── StoreUnavailable               the file cannot be opened or written (permissions, locks)
├── EventDecodeError               a stored event cannot be turned back into its type
│   ├── UnknownEventType           no registered type (or upcaster) for its tag and version
│   └── CorruptEvent               its payload fails the checksum or does not decode
├── ReadTooLarge                   a whole-stream read over the read limit (page it)
├── LeaseLost                      a fenced write's lease has another owner or epoch now;
│                                  nothing of that write was written
└── InvalidArgument                a bad argument; nothing was read or written
    ├── InvalidStreamId            empty, too long, or with characters the policy refuses
    ├── NaiveDatetime              a datetime without tzinfo where a moment is needed
    ├── InvalidReadArgument        a read's bound, limit, filter, moment or command id
    ├── InvalidSnapshot            a snapshot's version, schema version, or a state that
    │                              would not load back as its type
    ├── InvalidCheckpoint          a checkpoint's name or position
    ├── InvalidStoreOption         a store option outside its range (at open)
    ├── InvalidLease               a lease call's name, owner, ttl or fence
    └── InvalidAppend              a bad append; nothing of it was written
        ├── InvalidExpectedVersion not an int, or an int no stream can have
        ├── UnregisteredEventType  the event's type is not in the registry
        ├── InvalidEvent           an event that would not decode as its type (a field
        │                          holding a value of another type)
        ├── EventTooLarge          one encoded event is over the byte limit
        └── TooManyEvents          one append carries more events than the limit
```
Every message names the stream, version or type concerned and what to do; the same
values are kept on attributes. `InvalidArgument` subclasses `ValueError` as well, so code
that already catches `ValueError` for bad arguments keeps working. Catch `InvalidAppend`
for what only an append can get wrong, `InvalidArgument` for every bad argument
(an invalid stream id is one, for reads and appends alike).
"""

from __future__ import annotations

from datetime import datetime

from store._records import ANY, NO_STREAM, STREAM_EXISTS

__all__ = [
    "ChainBroken",
    "ConcurrencyError",
    "CorruptEvent",
    "EventDecodeError",
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
    "LeaseLost",
    "NaiveDatetime",
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


class ChainBroken(StoreError):
    """An append of a chain (`append_chain`) was not written because the append before
    it in the chain did not commit as a fresh append (it was refused, failed, was a
    duplicate, or was withdrawn); nothing of this one was written.

    Attributes:
        stream_id: the stream appended to.
        expected: the expected version this append carried.
    """

    def __init__(self, stream_id: str, expected: int) -> None:
        super().__init__(
            f"append to stream {stream_id!r} at expected version {expected} not written:"
            " the append before it in the chain did not commit as a fresh append"
        )
        self.stream_id, self.expected = stream_id, expected

    def __reduce__(self) -> tuple[type[ChainBroken], tuple[str, int]]:
        return (type(self), (self.stream_id, self.expected))


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

    def __reduce__(self) -> tuple[type[IdempotencyConflict], tuple[str, str, str]]:
        return (type(self), (self.command_id, self.stream_id, self.recorded_stream_id))


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


class InvalidArgument(StoreError, ValueError):
    """A bad argument to the store; nothing was read or written.

    Raised before any work starts, by the first check that can tell; the subclasses
    name what was wrong and keep it on attributes.
    """


class InvalidStreamId(InvalidArgument):
    """A stream id is not a non-empty printable string within the length limit.

    Attributes:
        stream_id: the id given (any object).
        reason: what is wrong with it.
    """

    def __init__(self, stream_id: object, reason: str) -> None:
        shown = repr(stream_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid stream id {shown}: {reason}")
        self.stream_id, self.reason = stream_id, reason

    def __reduce__(self) -> tuple[type[InvalidStreamId], tuple[object, str]]:
        return (type(self), (self.stream_id, self.reason))


class NaiveDatetime(InvalidArgument):
    """A datetime without `tzinfo` where a moment in time is needed.

    A naive datetime is no moment (it means another instant in every timezone), so it
    is refused rather than guessed.

    Attributes:
        what: the call and stream it was given to, e.g. `read_stream_until('account-a')`.
        value: the naive datetime.
    """

    def __init__(self, what: str, value: datetime) -> None:
        super().__init__(
            f"{what} got the naive datetime {value!r}: pass an aware datetime"
            " (e.g. datetime.now(UTC)) or POSIX seconds"
        )
        self.what, self.value = what, value

    def __reduce__(self) -> tuple[type[NaiveDatetime], tuple[str, datetime]]:
        return (type(self), (self.what, self.value))


class InvalidReadArgument(InvalidArgument):
    """An argument of a read is not what the read takes: a version or position bound,
    a page limit, a filter, a moment, or a command id.

    Attributes:
        call: the read and its stream, e.g. `read_stream('account-a')` or `read_all`.
        argument: the argument's name (`limit`, `from_version`, `stream_prefix`...).
        value: the value given.
        expected: what the argument takes.
    """

    def __init__(self, call: str, argument: str, value: object, expected: str) -> None:
        super().__init__(f"{call}: {argument} must be {expected}, not {value!r}")
        self.call, self.argument, self.value, self.expected = call, argument, value, expected

    def __reduce__(self) -> tuple[type[InvalidReadArgument], tuple[str, str, object, str]]:
        return (type(self), (self.call, self.argument, self.value, self.expected))


class InvalidSnapshot(InvalidArgument):
    """A snapshot was refused: a bad version or schema version, or a state that cannot
    be encoded or would not load back as its own type. Nothing was written.

    Attributes:
        stream_id: the stream of the snapshot.
        reason: what was wrong.
        field: the state's field at fault (e.g. `balance`), or "" when not one field.
    """

    def __init__(self, stream_id: str, reason: str, field: str = "") -> None:
        super().__init__(f"snapshot of stream {stream_id!r} refused: {reason}")
        self.stream_id, self.reason, self.field = stream_id, reason, field

    def __reduce__(self) -> tuple[type[InvalidSnapshot], tuple[str, str, str]]:
        return (type(self), (self.stream_id, self.reason, self.field))


class InvalidCheckpoint(InvalidArgument):
    """A checkpoint's name is not a non-empty str of valid Unicode, or its position is
    not an int >= 0. Nothing was written.

    Attributes:
        name: the checkpoint name given (any object).
        reason: what was wrong.
    """

    def __init__(self, name: object, reason: str) -> None:
        super().__init__(f"checkpoint {name!r} refused: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self) -> tuple[type[InvalidCheckpoint], tuple[object, str]]:
        return (type(self), (self.name, self.reason))


class InvalidStoreOption(InvalidArgument):
    """A store option (a `StoreOptions` field, or an `open_store` keyword) is outside
    its range, or there is no option of that name; the store was not opened.

    Attributes:
        name: the option.
        value: the value given.
        allowed: the values it takes (its range, or its choices); for an unknown
            option, the names of the options there are.
        unknown: whether there is no option named `name` (a misspelling).
    """

    def __init__(self, name: str, value: object, allowed: str, unknown: bool = False) -> None:
        if unknown:
            message = f"there is no store option {name} (given {value!r}); the options: {allowed}"
        else:
            message = f"store option {name} must be {allowed}, not {value!r}"
        super().__init__(message)
        self.name, self.value, self.allowed, self.unknown = name, value, allowed, unknown

    def __reduce__(self) -> tuple[type[InvalidStoreOption], tuple[str, object, str, bool]]:
        return (type(self), (self.name, self.value, self.allowed, self.unknown))


class InvalidLease(InvalidArgument):
    """An argument of a lease call (or an append's or checkpoint's `fence`) is not what it
    takes; nothing was read or written.

    Attributes:
        call: the call, e.g. `acquire_lease` or `append('account-a')`.
        field: the argument at fault: `name`, `owner`, `ttl`, `fence` or `lease`.
        value: the value given.
        expected: what the argument takes.
    """

    def __init__(self, call: str, field: str, value: object, expected: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{call}: {field} must be {expected}, not {shown}")
        self.call, self.field, self.value, self.expected = call, field, value, expected

    def __reduce__(self) -> tuple[type[InvalidLease], tuple[str, str, object, str]]:
        return (type(self), (self.call, self.field, self.value, self.expected))


class InvalidAppend(InvalidArgument):
    """An argument of an append is invalid; nothing of that append was written."""


class InvalidExpectedVersion(InvalidAppend, TypeError):
    """`expected_version` is not an int, or an int below the special values."""

    def __init__(self, stream_id: str, expected: object) -> None:
        super().__init__(
            f"expected_version for stream {stream_id!r} must be an int version >= 1,"
            f" NO_STREAM, STREAM_EXISTS or ANY, not {expected!r}"
        )
        self.stream_id, self.expected = stream_id, expected

    def __reduce__(self) -> tuple[type[InvalidExpectedVersion], tuple[str, object]]:
        return (type(self), (self.stream_id, self.expected))


class UnregisteredEventType(InvalidAppend):
    """An appended event's type is not registered with the store's codec."""

    def __init__(self, stream_id: str, event_type: type) -> None:
        super().__init__(
            f"event type {event_type.__qualname__} appended to stream {stream_id!r} is not"
            " registered: add it to the store's EventRegistry (it needs a permanent tag)"
        )
        self.stream_id, self.event_type = stream_id, event_type

    def __reduce__(self) -> tuple[type[UnregisteredEventType], tuple[str, type]]:
        return (type(self), (self.stream_id, self.event_type))


class InvalidEvent(InvalidAppend):
    """An appended event would not decode back into its registered type, so reading it
    would fail: a field holds a value of another type (msgspec does not check field
    types when a struct is built, so `Deposited(amount=1.5)` exists until it is read).

    Attributes:
        stream_id: the stream appended to.
        event_type: the event's tag.
        event_class: the event's class.
        field: the field at fault (e.g. `amount`), or "" when the decoder names none.
        path: where in the event, as the decoder says it (e.g. `$.amount`, `$.lines[2]`).
        reason: the decoder's message.
    """

    def __init__(
        self, stream_id: str, event_type: str, event_class: type, path: str, reason: str
    ) -> None:
        at = f" in field {path.removeprefix('$.')!r}" if path.startswith("$.") else ""
        shown = reason.removesuffix(f" - at `{path}`") if path else reason
        super().__init__(
            f"event {event_class.__qualname__} ({event_type!r}) for stream {stream_id!r}"
            f" would not read back as its type: {shown}{at}. Build it with values of the"
            " declared field types (msgspec does not check them on construction)"
        )
        self.stream_id, self.event_type, self.event_class = stream_id, event_type, event_class
        self.path, self.reason = path, reason
        self.field = top_field(path)

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[str, str, type, str, str]]:
        return (
            type(self),
            (self.stream_id, self.event_type, self.event_class, self.path, self.reason),
        )


class EventTooLarge(InvalidAppend):
    """One encoded event is larger than `max_event_bytes`."""

    def __init__(self, stream_id: str, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"event {event_type!r} for stream {stream_id!r} encodes to {size} bytes, over"
            f" the limit of {limit} bytes (max_event_bytes); store large data elsewhere"
            " and put a reference in the event"
        )
        self.stream_id, self.event_type, self.size, self.limit = stream_id, event_type, size, limit

    def __reduce__(self) -> tuple[type[EventTooLarge], tuple[str, str, int, int]]:
        return (type(self), (self.stream_id, self.event_type, self.size, self.limit))


class TooManyEvents(InvalidAppend):
    """One append carries more events than `max_events_per_append`."""

    def __init__(self, stream_id: str, count: int, limit: int) -> None:
        super().__init__(
            f"append to stream {stream_id!r} carries {count} events, over the limit of"
            f" {limit} (max_events_per_append)"
        )
        self.stream_id, self.count, self.limit = stream_id, count, limit

    def __reduce__(self) -> tuple[type[TooManyEvents], tuple[str, int, int]]:
        return (type(self), (self.stream_id, self.count, self.limit))


class LeaseLost(StoreError):
    """A fenced write (`append` or `save_checkpoint` with `fence=`) was refused: the lease
    is no longer held by the fence's owner at the fence's epoch (another owner took it
    over, or it was taken again). Nothing of that write was written; the other writes
    of its batch are unaffected.

    Attributes:
        name, owner, epoch: the fence's lease name, owner and epoch.
        holder, holder_epoch: the lease's owner and epoch when the write was refused, or
            None when the store has no such lease.
    """

    def __init__(
        self, name: str, owner: str, epoch: int, holder: str | None, holder_epoch: int | None
    ) -> None:
        if holder is None:
            now = "the store has no such lease"
        elif holder == owner:
            now = f"it was taken again by {holder!r} at epoch {holder_epoch}"
        else:
            now = f"it is held by {holder!r} at epoch {holder_epoch}"
        super().__init__(
            f"lease {name!r} of owner {owner!r} at epoch {epoch} is lost: {now}; the write"
            " fenced by it was refused (nothing written). Stop acting for this lease and"
            " acquire it again"
        )
        self.name, self.owner, self.epoch = name, owner, epoch
        self.holder, self.holder_epoch = holder, holder_epoch

    def __reduce__(
        self,
    ) -> tuple[type[LeaseLost], tuple[str, str, int, str | None, int | None]]:
        return (type(self), (self.name, self.owner, self.epoch, self.holder, self.holder_epoch))


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

    def __reduce__(self) -> tuple[type[ReadTooLarge], tuple[str, int, int]]:
        return (type(self), (self.stream_id, self.from_version, self.limit))


def validation_path(message: str) -> str:
    """The path a msgspec validation message ends with (`... - at `$.amount``), or ""."""
    _, sep, tail = message.rpartition(" - at `")
    return tail[:-1] if sep and tail.endswith("`") else ""


def top_field(path: str) -> str:
    """The top-level field of a path: `amount` of `$.amount`, `lines` of `$.lines[2]`."""
    if not path.startswith("$."):
        return ""
    name = path[2:]
    for stop in (".", "["):
        name = name.partition(stop)[0]
    return name


def _describe_expected(expected: int) -> str:
    if expected == NO_STREAM:
        return "NO_STREAM (expected it not to exist)"
    if expected == STREAM_EXISTS:
        return "STREAM_EXISTS (expected it to exist)"
    if expected == ANY:
        return "ANY"
    return f"the expected {expected}"
