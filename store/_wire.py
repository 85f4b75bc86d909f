"""The frames between a store and its writer process (`writer="process"`).

Each frame is a 4-byte little-endian length, then one msgpack-encoded struct below,
decoded with its type: a malformed frame fails to decode instead of being trusted.
The store sends `Setup` once, then one `Batch` per transaction; the writer process
answers `Ready` once, then `Done` or `Failed` per batch, in the order it got them.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgspec

HEADER: Final = struct.Struct("<I")

Param = Any
"""A value bound to a keyed write's statement (snapshot, checkpoint): str, int, float,
bytes or None. msgpack keeps these apart by itself (a union of str and bytes is not a
type msgspec decodes), and the values only ever go to sqlite3's binding, which takes
exactly these types: anything else fails that batch's write, as in the store's own
process."""


class AppendWire(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One append as the writer's transaction sees it (the fields `_BatchWriter` reads):
    the writer process runs its batch on these as decoded, without copying them."""

    stream_id: str
    expected: int
    rows: list[tuple[str, int, bytes, int]]  # tag, schema version, payload, checksum
    metadata_bytes: bytes | None  # the append's metadata, encoded
    command_id: str | None
    digest: bytes | None  # of the command's events, when it has a command id
    fence: tuple[str, str, int] | None = None  # the lease's name, owner and epoch
    chained: int = -1  # the index in the batch of the append this one follows, or -1


class Setup(msgspec.Struct, frozen=True, array_like=True, tag="setup"):
    path: str
    options: dict[str, str | bool | int | float]


class WriteWire(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A keyed write (snapshot, checkpoint, lease): see `store._batch._Write`."""

    sql: str
    params: list[Param]
    fence: tuple[str, str, int] | None  # run only while this lease is held at its epoch
    returning: bool  # answer the statement's first row


class Batch(msgspec.Struct, frozen=True, array_like=True, tag="batch"):
    appends: list[AppendWire]
    writes: list[WriteWire]


class Ready(msgspec.Struct, frozen=True, array_like=True, tag="ready"):
    pid: int


class Done(msgspec.Struct, frozen=True, array_like=True, tag="done"):
    """A committed batch. `results[i]` is append i's (first version, last version, first
    position, last position); an append that did not commit has zeros there and a row
    in `others`: (index, kind, text, a, b), kind "duplicate" (results[i] holds the first
    commit), "conflict" (a = expected, b = actual), "idempotency" (text = the stream
    the command id was recorded on), "lease_lost" (text = the lease's owner now, ""
    when there is no such lease; a = its epoch), "chain_broken" (a = its expected
    version) or an error class name (text = its
    message). `write_results`: per keyed write, (lost, row) as `_batch._WriteResult`
    when one was fenced or returning, else None."""

    results: list[tuple[int, int, int, int]]
    others: list[tuple[int, str, str, int, int]]
    recorded_at: float
    seconds: float
    write_error: tuple[str, str] | None  # class name, message
    last_position: int
    write_results: list[tuple[bool, list[Param] | None]] | None = None


class Failed(msgspec.Struct, frozen=True, array_like=True, tag="failed"):
    """The batch failed as a unit: nothing of it was written."""

    error: str  # class name
    message: str


ToWriter = Setup | Batch
FromWriter = Ready | Done | Failed

encoder: Final = msgspec.msgpack.Encoder()
to_writer: Final = msgspec.msgpack.Decoder(ToWriter)
from_writer: Final = msgspec.msgpack.Decoder(FromWriter)


def frame(message: ToWriter | FromWriter) -> bytes:
    payload = encoder.encode(message)
    return HEADER.pack(len(payload)) + payload
