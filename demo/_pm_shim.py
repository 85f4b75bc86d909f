"""TEMPORARY: the process-manager API the actor runtime is about to ship.

`Dispatch` and `ProcessManager` are defined here, with the exact shape the runtime in
`actors/` will have, so that the demo's process managers can be written and tested as
pure classes now. When the runtime lands, delete this module and import both names from
`actors` instead (the demo imports them only from here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from actors import Aggregate, Command, Event, Rejected
from store import RecordedEvent

__all__ = ["Dispatch", "ProcessManager"]


class Dispatch(msgspec.Struct, frozen=True):
    """A command a process manager wants sent: to instance `aggregate_id` of `aggregate`.

    Attributes:
        aggregate: the aggregate type that handles `command`.
        aggregate_id: the instance (its stream is `aggregate.stream_id(aggregate_id)`).
        command: the command to send.
    """

    aggregate: type[Aggregate[Any, Any, Any]]
    aggregate_id: str
    command: Command


class ProcessManager:
    """A stateless process manager (saga): events in, commands out, as pure functions.

    Subclass it, set `name` and `event_types`, and write `react` (and `compensate` when
    a refused command has to be undone). The runtime feeds it every recorded event of
    `event_types` in position order, resuming from its checkpoint, and sends each
    dispatch with a deterministic command id derived from `(name, position, index)`, so
    a redelivered event never applies a command twice.

    Class attributes:
        name: permanent: the checkpoint name and the prefix of its command ids.
        event_types: the event types it reacts to.
        stream_prefix: only events of streams whose id starts with this (None: all).
    """

    name: ClassVar[str]
    event_types: ClassVar[tuple[type[Event], ...]] = ()
    stream_prefix: ClassVar[str | None] = None

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """The commands to send because of `recorded` (pure; may be empty)."""
        raise NotImplementedError

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        """The commands to send because `dispatch` (made for `recorded`) was refused
        with `error` (pure; default: nothing)."""
        return ()
