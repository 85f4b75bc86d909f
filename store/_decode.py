"""Stored rows back into records and snapshots: checksums, upcasting, decode errors."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from store._codec import EventRegistry, UpcasterFailed
from store._errors import CorruptEvent, EventDecodeError, UnknownEventType
from store._logging import LibraryLogger
from store._prepare import _type_name
from store._records import RecordedEvent, Snapshot

S = TypeVar("S")

_meta_decoder = msgspec.msgpack.Decoder(dict[str, str])


def _decode_groups(
    registry: EventRegistry, ranges: list[tuple[str, int, int]], rows: list[Any]
) -> list[list[RecordedEvent] | EventDecodeError]:
    """Rows of several streams (ordered by version within each), decoded stream by
    stream, one answer per entry of `ranges`: its events, or the error decoding them
    raised (which leaves the other streams' answers alone)."""
    by_stream: dict[str, list[Any]] = {stream_id: [] for stream_id, _, _ in ranges}
    for row in rows:
        by_stream[row[1]].append(row)
    out: list[list[RecordedEvent] | EventDecodeError] = []
    for stream_id, _, _ in ranges:
        try:
            out.append(_decode_rows(registry, by_stream[stream_id]))
        except EventDecodeError as exc:
            out.append(exc)
    return out


def _decode_rows(registry: EventRegistry, rows: list[Any]) -> list[RecordedEvent]:
    """Rows of (position, stream id, version, tag, schema version, payload, metadata,
    command id, recorded at, checksum) as records, each checked against its checksum."""
    # The registry's decode, its common case inlined: this loop runs once per event
    # read (another process's commits among them).
    by_tag = registry._by_tag
    decode = registry.decode
    out: list[RecordedEvent] = []
    append = out.append
    crc32 = zlib.crc32
    for position, stream_id, version, tag, schema_version, data, meta, cid, at, crc in rows:
        if type(data) is not bytes or crc32(data) != crc:
            raise CorruptEvent.at(
                stream_id, version, tag, schema_version, "its payload fails its checksum"
            )
        try:
            entry = by_tag.get(tag)
            if entry is not None and entry.schema_version == schema_version:
                event = entry.decoder.decode(data)
            else:
                event = decode(tag, schema_version, data)
            metadata = _meta_decoder.decode(meta) if meta else {}
        except LookupError:
            raise UnknownEventType.at(stream_id, version, tag, schema_version) from None
        except UpcasterFailed as exc:
            raise EventDecodeError(
                f"stream {stream_id!r} version {version} ({tag!r} schema {schema_version})"
                f" cannot be read: {exc}; fix that upcaster",
                stream_id,
                version,
                tag,
                schema_version,
            ) from exc
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            TypeError,
            UnicodeDecodeError,
        ) as exc:
            raise CorruptEvent.at(stream_id, version, tag, schema_version, str(exc)) from exc
        append(
            RecordedEvent(
                stream_id, version, position, tag, schema_version, event, metadata, at, cid
            )
        )
    return out


def _snapshot(
    row: Any,
    stream_id: str,
    state_type: type[S],
    schema_version: int,
    decoder_for: Callable[[type[Any]], msgspec.msgpack.Decoder[Any]],
    log: LibraryLogger,
) -> Snapshot[S] | None:
    """The snapshot in `row` (version, state type, schema version, payload, checksum,
    recorded at) if it has `state_type` at `schema_version` and decodes cleanly."""
    version, type_name, stored_schema, data, checksum, recorded_at = row
    if type_name != _type_name(state_type) or stored_schema != schema_version:
        return None
    if type(data) is not bytes or zlib.crc32(data) != checksum:
        log.warning("store.snapshot_corrupt", stream_id=stream_id, version=version)
        return None
    try:
        state = decoder_for(state_type).decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.warning("store.snapshot_undecodable", stream_id=stream_id, version=version)
        return None
    return Snapshot(stream_id, int(version), state, int(stored_schema), float(recorded_at))
