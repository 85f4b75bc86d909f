"""What an aggregate actor holds (`ActorState`: its stream, state, mailbox and flags),
and the plan of a batch (`_Planned`), shared by the modules that make up the actor:
`_actor_load` (building the state from the stream), `_actor_settle` (appending a plan
and answering by the outcome), `_actor_decide` (deciding a batch) and `_actor` (the
task's life, the inline fast path).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import anyio

from actors._aggregate import CommandResult
from actors._errors import ShuttingDown
from actors._host import ActorHost
from actors._mailbox import Envelope, Mailbox
from store import AppendResult, RecordedEvent

_backend: tuple[type[anyio.Event], type[anyio.CancelScope]] | None = None


def _event_and_scope() -> tuple[anyio.Event, anyio.CancelScope]:
    """A new `anyio.Event` and `anyio.CancelScope` of the running backend's classes,
    looked up once: `anyio.Event()` and `anyio.CancelScope()` ask which library runs on
    every call, twice per actor loaded (esactors runs on asyncio only)."""
    global _backend
    if _backend is None:
        _backend = (type(anyio.Event()), type(anyio.CancelScope()))
    event, scope = _backend
    return event(), scope()


__all__: list[str] = []


class _Planned:
    """A decided command: its events and the state/version after them.

    `error` is a verdict held back: a refusal (or a failure in decide) reached on a
    state not yet known to be the committed one. It is given only once that state is
    confirmed (see `AggregateActor._settle`); otherwise the command is decided again.
    """

    __slots__ = ("envelope", "error", "events", "followers", "state", "version")

    def __init__(
        self,
        envelope: Envelope,
        events: tuple[Any, ...],
        state: Any,
        version: int,
        error: Exception | None = None,
    ):
        self.envelope = envelope
        self.events = events
        self.state = state
        self.version = version
        self.error = error
        self.followers: list[Envelope] | None = None


class _Restart(Exception):
    """Internal: evolve failed; restart the actor (reload from the store, with backoff)."""


class _Reload(Exception):
    """Internal: a caller running inline was cancelled with its append in the store:
    wait until the store settled it, then reload."""


class _Quarantined(Exception):
    """Internal: the actor failed for good (its load, or `max_restarts`); the host
    quarantined its aggregate and `error` goes to the callers."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_MAX_FOREIGN = 256  # events of its stream an actor keeps from the follower

_NO_EVENTS = AppendResult("", 0, 0, 0, 0)
READ_STATE = object()
"""A mailbox message asking the actor for its state (answered in mailbox order)."""


class ActorState:
    """The fields of one aggregate actor, set up for its first load. The behaviour is
    layered on top: `_Loading`, `_Settling`, `_Deciding`, then `AggregateActor`."""

    __slots__ = (
        "_current",
        "_log",
        "_scope",
        "aggregate",
        "aggregate_id",
        "behind",
        "busy",
        "done",
        "failure",
        "foreign",
        "host",
        "in_a_row",
        "inline",
        "last_used",
        "mailbox",
        "position",
        "predecessor",
        "recent",
        "state",
        "store",
        "stream_id",
        "unsure",
        "version",
    )

    def __init__(
        self,
        host: ActorHost,
        aggregate_id: str,
        stream_id: str,
        predecessor: ActorState | None,
    ) -> None:
        self.host = host
        self.store = host.store
        self.aggregate = host.aggregate
        self.aggregate_id = aggregate_id
        self.stream_id = stream_id
        self.predecessor = predecessor
        self.mailbox = Mailbox(host.options.mailbox_capacity, host.load)
        self.done, self._scope = _event_and_scope()
        self.state: Any = self.aggregate.initial
        self.version = 0
        self.position = 0
        self.last_used = 0.0  # set by the registry (least recently used first)
        # command id -> (the command, its result): a resend of the same command is
        # answered from here; the same id with another command is an IdempotencyConflict.
        self.recent: OrderedDict[str, tuple[object, CommandResult[Any]]] = OrderedDict()
        self._log: Any = None
        self._current: list[Envelope] = []
        # `_scope`, the actor task's own, is entered once in `run`: shielded only while
        # it appends (a scope per append cost a third of the actor task's time).
        # The actor task is busy unless idle, waiting for work; `inline` is set while a
        # caller runs a command on its own task (see `claim`); `failure` is what such a
        # caller leaves for the actor task to deal with (restart, reload, quarantine).
        self.busy = True
        self.inline = False
        self.failure: BaseException | None = None
        self.in_a_row = 0  # restarts in a row, reset by a command that succeeds
        # The stream's version as another process wrote it, when the bus's follower, a
        # conflict or a confirmation saw it ahead of `version`: catch up before deciding
        # anything, from `foreign` (the events the follower read, in order) when they
        # reach it, else from the store. `unsure`: only a read of the store will do (an
        # outcome is unknown, or an append lost a race).
        self.behind = 0
        self.foreign: list[RecordedEvent] = []
        self.unsure = False


def _refusal(error: BaseException | None, stream_id: str) -> BaseException:
    if error is None or not isinstance(error, Exception):
        return ShuttingDown(
            f"the actor for {stream_id!r} stopped before handling the command; it was not applied"
        )
    return error


def _decide_again(segments: list[list[_Planned]], retry: list[Envelope]) -> None:
    """Send the commands of `segments` (which wrote nothing) back to be decided again."""
    for segment in segments:
        for planned in segment:
            retry.append(planned.envelope)
            retry.extend(planned.followers or ())
    segments.clear()
