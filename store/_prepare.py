"""The checks and encoding done to a call's arguments before any I/O: no store state."""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, cast

import msgspec

from store._codec import EventRegistry
from store._errors import (
    EventTooLarge,
    InvalidAppend,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidLease,
    InvalidReadArgument,
    InvalidSnapshot,
    InvalidStreamId,
    NaiveDatetime,
    TooManyEvents,
    UnregisteredEventType,
    top_field,
    validation_path,
)
from store._options import StoreOptions
from store._records import Lease

_MIN_TTL: Final = 0.01
_MAX_TTL: Final = 86_400.0
_MAX_VERSION: Final = 2**62
"""The largest version, position or schema version a store keeps (a SQLite integer)."""
_VALID_STREAM_ID_CACHE_LIMIT: Final = 100_000
_meta_encoder = msgspec.msgpack.Encoder()

Row = tuple[str, int, bytes, int]
"""An encoded event: its tag, schema version, payload and the payload's CRC-32."""


def _check_new_stream_id(stream_id: object, valid: set[str], max_bytes: int) -> None:
    """Raise `InvalidStreamId` unless `stream_id` is one a store can take; remember it
    in `valid` (a bounded set of exact strs that passed) if it is."""
    if type(stream_id) is str and stream_id in valid:
        return
    if type(stream_id) is not str:
        raise InvalidStreamId(stream_id, "it must be a str")
    if not stream_id or stream_id.isspace():
        raise InvalidStreamId(stream_id, "it is empty or blank")
    try:
        size = len(stream_id.encode())
    except UnicodeEncodeError:
        raise InvalidStreamId(stream_id, "it is not valid Unicode (lone surrogate)") from None
    if not stream_id.isprintable():
        raise InvalidStreamId(stream_id, "it contains control, format or separator characters")
    if size > max_bytes:
        raise InvalidStreamId(
            stream_id,
            f"it is {size} bytes long, over the limit of {max_bytes} (max_stream_id_bytes)",
        )
    if len(valid) >= _VALID_STREAM_ID_CACHE_LIMIT:
        valid.clear()
    valid.add(stream_id)


# -- appends ----------------------------------------------------------------------------


def _encode_events(
    registry: EventRegistry, stream_id: str, events: Sequence[Any], options: StoreOptions
) -> list[Row]:
    """The rows of an append's `events`, each checked to decode back as its type."""
    count = len(events)
    if count == 0:
        raise InvalidAppend(f"append to stream {stream_id!r} carries no events")
    if count > options.max_events_per_append:
        raise TooManyEvents(stream_id, count, options.max_events_per_append)
    # The registry's encode, inlined: this loop runs once per event on the command path.
    entries = registry._by_type
    encode = registry._encoder.encode
    limit = options.max_event_bytes
    crc32 = zlib.crc32
    rows: list[Row] = []
    for event in events:
        entry = entries.get(type(event))
        if entry is None:
            raise UnregisteredEventType(stream_id, type(event))
        try:
            data = encode(event)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidAppend(
                f"event {type(event).__qualname__} for stream {stream_id!r} cannot be"
                f" encoded: {exc}"
            ) from exc
        if len(data) > limit:
            raise EventTooLarge(stream_id, entry.tag, len(data), limit)
        # What a reader will do with these bytes, done now: msgspec does not check
        # field types when a struct is built, and an event stored that does not
        # decode would fail every reader of its stream.
        try:
            entry.decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            reason = str(exc)
            raise InvalidEvent(
                stream_id, entry.tag, type(event), validation_path(reason), reason
            ) from exc
        rows.append((entry.tag, entry.schema_version, data, crc32(data)))
    return rows


def _encode_metadata(stream_id: str, metadata: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
    """An append's metadata, checked, as a dict and encoded."""
    meta = _check_metadata(stream_id, metadata)
    try:
        return meta, _meta_encoder.encode(meta)
    except UnicodeEncodeError as exc:
        raise InvalidAppend(
            f"metadata for stream {stream_id!r} is not valid Unicode (lone surrogate): {exc}"
        ) from None


def _check_metadata(stream_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
    out = dict(metadata)
    for key, value in out.items():
        if type(key) is not str or type(value) is not str:
            raise InvalidAppend(
                f"metadata for stream {stream_id!r} must map str to str;"
                f" got {key!r}: {type(value).__name__}"
            )
    return out


def _command_digest(stream_id: str, command_id: object, rows: Sequence[Row]) -> bytes:
    """The digest of an append's events under its `command_id`, once that is checked."""
    if not isinstance(command_id, str) or not 0 < len(command_id) <= 256:
        raise InvalidAppend(
            f"command_id for stream {stream_id!r} must be a non-empty str of at most"
            f" 256 characters, not {command_id!r}"
        )
    try:
        command_id.encode()
    except UnicodeEncodeError:
        # Caught here, not at the INSERT, where it would fail the whole batch.
        raise InvalidAppend(
            f"command_id {command_id!r} for stream {stream_id!r} is not valid"
            " Unicode (lone surrogate)"
        ) from None
    return _digest(stream_id, rows)


def _digest(stream_id: str, rows: Sequence[Row]) -> bytes:
    h = hashlib.blake2b(stream_id.encode(), digest_size=16)
    for tag, schema_version, data, _crc in rows:
        h.update(b"\x00%s\x00%d\x00" % (tag.encode(), schema_version))
        h.update(data)
    return h.digest()


# -- reads ------------------------------------------------------------------------------


def _bound(call: str, name: str, value: object) -> int:
    """A version or position argument of a read, clamped to what SQLite can bind."""
    if type(value) is not int:
        raise InvalidReadArgument(call, name, value, "an int")
    return max(-_MAX_VERSION, min(value, _MAX_VERSION))


def _limit(call: str, limit: int | None, cap: int) -> int:
    """A read's page size, at most `cap` (`max_read_limit`), which is also the default."""
    if limit is None:
        return cap
    if type(limit) is not int or limit < 1:
        raise InvalidReadArgument(call, "limit", limit, "a positive int (a page size)")
    return min(limit, cap)


def _moment(call: str, at: object) -> float:
    """`read_stream_until`'s `at` (an aware datetime, or POSIX seconds) as POSIX seconds."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise NaiveDatetime(call, at)
        return at.timestamp()
    if type(at) in (int, float):
        seconds = float(cast(float, at))
        if not math.isnan(seconds):
            return seconds
    raise InvalidReadArgument(
        call, "at", at, "an aware datetime or POSIX seconds (an int or float, not NaN)"
    )


def _tags(values: object) -> list[str] | None:
    """`values` as a list of str tags of valid Unicode, or None if it is not one (a
    str is one tag, not a sequence of them: refused too)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return None
    tags = list(values)
    if all(type(t) is str and _encodable(t) for t in tags):
        return tags
    return None


def _event_types(call: str, event_types: object) -> list[str] | None:
    """`read_all`'s `event_types` filter, checked (None: no filter)."""
    if event_types is None:
        return None
    tags = _tags(event_types)
    if tags is None:
        raise InvalidReadArgument(
            call, "event_types", event_types, "a sequence of str tags (valid Unicode)"
        )
    return tags


def _check_stream_prefix(call: str, stream_prefix: object) -> None:
    if stream_prefix is not None and (
        type(stream_prefix) is not str or not _encodable(stream_prefix)
    ):
        raise InvalidReadArgument(
            call, "stream_prefix", stream_prefix, "a str (valid Unicode) or None"
        )


def _check_command_id(command_id: object) -> None:
    """`find_command`'s argument: one an append could have used."""
    if type(command_id) is not str or not 0 < len(command_id) <= 256 or not _encodable(command_id):
        raise InvalidReadArgument(
            "find_command",
            "command_id",
            command_id,
            "a non-empty str of at most 256 characters (valid Unicode)",
        )


def _encodable(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate), so SQLite can bind it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# -- snapshots and checkpoints ----------------------------------------------------------


def _encode_snapshot(
    registry: EventRegistry,
    decoder_for: Callable[[type[Any]], msgspec.msgpack.Decoder[Any]],
    stream_id: str,
    version: object,
    state: object,
    schema_version: object,
) -> bytes:
    """`state` encoded for `save_snapshot`, once it and its versions are checked."""
    if type(version) is not int or not 0 <= version <= _MAX_VERSION:
        raise InvalidSnapshot(
            stream_id, f"its version must be an int from 0 to 2**62, not {version!r}"
        )
    if type(schema_version) is not int or not 1 <= schema_version <= _MAX_VERSION:
        raise InvalidSnapshot(
            stream_id,
            f"its schema_version must be an int from 1 to 2**62, not {schema_version!r}",
        )
    state_type = type(state)
    try:
        data = registry.encode_state(state)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidSnapshot(
            stream_id, f"its state {state_type.__qualname__} cannot be encoded: {exc}"
        ) from exc
    # What `load_snapshot(stream_id, type(state))` will do with these bytes, done now.
    try:
        decoder_for(state_type).decode(data)
    except (TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        reason = str(exc)
        raise InvalidSnapshot(
            stream_id,
            f"its state {state_type.__qualname__} would not load back as its type:"
            f" {reason}; build it with values of the declared field types",
            top_field(validation_path(reason)),
        ) from exc
    return data


def _type_name(tp: type[Any]) -> str:
    """How a snapshot names its state's type."""
    return f"{tp.__module__}.{tp.__qualname__}"


def _check_checkpoint(name: object, position: object) -> None:
    """`save_checkpoint`'s arguments."""
    _check_checkpoint_name(name)
    if type(position) is not int or not 0 <= position <= _MAX_VERSION:
        raise InvalidCheckpoint(
            name, f"its position must be an int from 0 to 2**62, not {position!r}"
        )


def _check_checkpoint_name(name: object) -> None:
    if type(name) is not str or not name:
        raise InvalidCheckpoint(name, "its name must be a non-empty str")
    if not _encodable(name):
        # Caught here, not at the INSERT, where it would fail the whole batch.
        raise InvalidCheckpoint(name, "its name is not valid Unicode (lone surrogate)")


# -- leases -----------------------------------------------------------------------------

Fence = tuple[str, str, int]
"""A fence as the batch writers take it: the lease's name, owner and epoch."""


def _check_lease_key(call: str, field: str, value: object, max_bytes: int) -> None:
    """A lease's `name` or `owner`: a non-empty printable str of valid Unicode, at most
    `max_bytes` UTF-8 bytes (the stream-id limit)."""
    expected = f"a non-empty printable str of at most {max_bytes} UTF-8 bytes (max_stream_id_bytes)"
    if type(value) is not str or not value or value.isspace() or not value.isprintable():
        raise InvalidLease(call, field, value, expected)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidLease(call, field, value, expected + " (valid Unicode)") from None
    if size > max_bytes:
        raise InvalidLease(call, field, value, expected)


def _check_ttl(call: str, ttl: object) -> float:
    """A lease's time to live, in seconds, as a float."""
    if type(ttl) in (int, float):
        seconds = float(cast(float, ttl))
        if math.isfinite(seconds) and _MIN_TTL <= seconds <= _MAX_TTL:
            return seconds
    raise InvalidLease(call, "ttl", ttl, f"a finite number of seconds from {_MIN_TTL} to 86400")


def _check_lease(call: str, field: str, lease: object, max_bytes: int) -> Lease:
    """A `Lease` argument (`lease` of renew and release, `fence` of a write), with fields
    of the types a store hands out."""
    if type(lease) is not Lease:
        raise InvalidLease(call, field, lease, "a Lease (as acquire_lease returns it)")
    epoch = lease.epoch
    if type(epoch) is not int or not 1 <= epoch <= _MAX_VERSION:
        raise InvalidLease(call, field, lease, "a Lease whose epoch is an int from 1 to 2**62")
    for key in (lease.name, lease.owner):
        if type(key) is not str or not key or not key.isprintable() or not _encodable(key):
            raise InvalidLease(
                call, field, lease, "a Lease whose name and owner are non-empty printable strs"
            )
        if len(key.encode()) > max_bytes:
            raise InvalidLease(
                call, field, lease, f"a Lease whose name and owner are at most {max_bytes} bytes"
            )
    return lease


def _fence(call: str, fence: object, max_bytes: int) -> Fence | None:
    """A write's `fence` argument (a `Lease` or None) as the batch writers take it."""
    if fence is None:
        return None
    lease = _check_lease(call, "fence", fence, max_bytes)
    return (lease.name, lease.owner, lease.epoch)
