"""What a process manager sends (`Dispatch`) and what it records when a step is refused
(`StepRefused`), so that a replay of the event finishes the compensation rather than
sending the refused step again.

When an aggregate refuses a step, the manager asks `compensate` for the commands that
undo it, then, before sending any of them, appends one `StepRefused` event to the stream
`process.refused-<step's command id>` (new stream, fenced by the partition's lease). It
holds the refusal (type and message) and the compensating commands, each encoded with
the import path of its aggregate and command classes. An event handled again later (a
crash or a lost lease before the checkpoint moved) finds that record: the step is not
sent again (it could be accepted now and contradict what was undone), and every
compensating command is sent again under its own id (`<step id>:c<j>`), so the ones
already stored answer as duplicates and the ones a crash cut off go out now.
"""

from __future__ import annotations

import importlib
from typing import Any

import msgspec

from actors._aggregate import Aggregate, Command, Event
from actors._errors import Rejected
from store import NO_STREAM, ConcurrencyError, EventStore, Lease

__all__ = ["Dispatch", "PlannedCommand", "StepRefused"]

_PREFIX = "process.refused-"


class Dispatch(msgspec.Struct, frozen=True):
    """A command a process manager sends: to instance `aggregate_id` of `aggregate`."""

    aggregate: type[Aggregate[Any, Any, Any]]
    aggregate_id: str
    command: Command


class PlannedCommand(msgspec.Struct, frozen=True):
    """One compensating command as stored: the classes by import path, the command as
    JSON."""

    aggregate: str
    aggregate_id: str
    command_type: str
    command: bytes


class StepRefused(Event, tag="esactors.step_refused"):
    """A process manager's step (`step`, its command id) was refused with `refusal`;
    `compensation` are the commands that undo it, in the order they are sent."""

    step: str
    refusal: str
    compensation: list[PlannedCommand]


class UnreadableRecord(Exception):
    """A stored `StepRefused` names a class this process cannot import or a command
    that no longer decodes."""


def refusal_stream(command_id: str) -> str:
    """The stream holding the record of the refused step `command_id`."""
    return _PREFIX + command_id


def _path(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _imported(path: str) -> Any:
    module, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise UnreadableRecord(f"cannot import {path!r}: {exc}") from None
    return found


def _encoded(step: Dispatch) -> PlannedCommand:
    return PlannedCommand(
        _path(step.aggregate),
        step.aggregate_id,
        _path(type(step.command)),
        msgspec.json.encode(step.command),
    )


def _decoded(planned: PlannedCommand) -> Dispatch:
    aggregate = _imported(planned.aggregate)
    command_type = _imported(planned.command_type)
    if not (isinstance(aggregate, type) and issubclass(aggregate, Aggregate)):
        raise UnreadableRecord(f"{planned.aggregate!r} is not an aggregate class")
    if not (isinstance(command_type, type) and issubclass(command_type, Command)):
        raise UnreadableRecord(f"{planned.command_type!r} is not a command class")
    try:
        command = msgspec.json.decode(planned.command, type=command_type)
    except msgspec.DecodeError as exc:
        raise UnreadableRecord(f"{planned.command_type} no longer decodes: {exc}") from None
    return Dispatch(aggregate, planned.aggregate_id, command)


async def record_refusal(
    store: EventStore,
    command_id: str,
    refusal: Rejected,
    compensation: tuple[Dispatch, ...],
    fence: Lease | None,
) -> tuple[Dispatch, ...]:
    """Store that step `command_id` was refused and how it is undone; returns the
    compensation to send: `compensation`, or the one recorded first (by a former holder
    of the partition) when there is one.

    Raises:
        LeaseLost: `fence` is no longer the partition's lease.
        StoreError: the store failed (nothing is sent; the event is handled again).
    """
    record = StepRefused(
        command_id, f"{type(refusal).__name__}: {refusal}", [_encoded(s) for s in compensation]
    )
    stream = refusal_stream(command_id)
    try:
        result = await store.append(
            stream,
            [record],
            expected_version=NO_STREAM,
            command_id=f"{command_id}:refused",
            fence=fence,
        )
    except ConcurrencyError:
        pass  # recorded already, by a former holder
    else:
        if not result.duplicate:
            return compensation
    recorded = await recorded_refusal(store, command_id)
    if recorded is None:
        raise UnreadableRecord(f"stream {stream!r} exists but holds no StepRefused record")
    return recorded


async def recorded_refusal(store: EventStore, command_id: str) -> tuple[Dispatch, ...] | None:
    """The compensation recorded for step `command_id`, or None when it was never
    refused.

    Raises:
        UnreadableRecord: the record names classes or commands that no longer load.
        StoreError: the store failed.
    """
    events = await store.read_stream(refusal_stream(command_id), limit=1)
    if not events:
        return None
    record = events[0].event
    if not isinstance(record, StepRefused):
        raise UnreadableRecord(
            f"stream {refusal_stream(command_id)!r} holds {type(record).__name__}, not a"
            " StepRefused record"
        )
    return tuple(_decoded(p) for p in record.compensation)
