"""What an aggregate actor holds (`ActorState`: its stream, state, mailbox and flags),
and the plan of a batch (`_Planned`), shared by the modules that make up the actor:
`_actor_load` (building the state from the stream), `_actor_settle` (appending a plan
and answering by the outcome), `_actor_decide` (deciding a batch) and `_actor` (the
task's life, the inline fast path).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import anyio

from actors._aggregate import CommandResult
from actors._errors import ShuttingDown
from actors._host import ActorHost
from actors._mailbox import Envelope, Mailbox
from store import AppendResult, RecordedEvent
from store._logging import get_logger

_backend: tuple[type[anyio.Event], type[anyio.CancelScope]] | None = None


def _classes() -> tuple[type[anyio.Event], type[anyio.CancelScope]]:
    """The running backend's `anyio.Event` and `anyio.CancelScope` classes, looked up
    once: `anyio.Event()` and `anyio.CancelScope()` ask which library runs on every call
    (esactors runs on asyncio only)."""
    global _backend
    if _backend is None:
        _backend = (type(anyio.Event()), type(anyio.CancelScope()))
    return _backend


def _new_event() -> anyio.Event:
    """A new event (see `_classes`)."""
    return _classes()[0]()


def _new_scope() -> anyio.CancelScope:
    """A new cancel scope (see `_classes`)."""
    return _classes()[1]()


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
        "_logger",
        "_scope",
        "aggregate",
        "aggregate_id",
        "behind",
        "busy",
        "derailed",
        "done",
        "ended",
        "failure",
        "foreign",
        "holders",
        "host",
        "in_a_row",
        "inline",
        "last_used",
        "loaded",
        "mailbox",
        "position",
        "predecessor",
        "recent",
        "running",
        "state",
        "store",
        "stream_id",
        "tip",
        "tip_state",
        "tip_version",
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
        # Set when the actor ended (its successor waits for it): made on first wait.
        self.ended = False
        self.done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None  # the running task's (see `run`)
        self.state: Any = self.aggregate.initial
        self.version = 0
        self.position = 0
        self.last_used = 0.0  # set by the registry (least recently used first)
        # command id -> (the command, its result): a resend of the same command is
        # answered from here; the same id with another command is an IdempotencyConflict.
        # Made with the first command id (a live actor's fields are kept few: the
        # collector walks them all).
        self.recent: OrderedDict[str, tuple[object, CommandResult[Any]]] | None = None
        self._logger: Any = None  # made on first use (see `_log`)
        self._current: Sequence[Envelope] = ()
        # An actor has a task only while it has work, or while it waits idle for its
        # next command (up to `idle_actor_tasks` actors across the system do): a live
        # actor without one holds only its state and mailbox. `running`: it has a task
        # (started by `wake`). `busy`: that task is not waiting idle. `inline`: a caller
        # runs a command on its own task (see `claim`); `failure` is what such a caller
        # leaves for the actor task to deal with (restart, reload, quarantine).
        # `loaded`: the state was built from the store (by a task or a caller inline).
        self.running = False
        self.busy = False
        self.inline = False
        # While callers run inline, a command that arrives may ride: decided on the
        # state the last append in flight (`tip`) leaves and chained to it (see
        # `AggregateActor.ride`). `holders`: the callers running inline (the one that
        # claimed the actor and the riders); `derailed`: riders' commands to decide
        # again once the last of them is done (a link before theirs did not commit).
        self.tip: Any = None
        self.tip_state: Any = None
        self.tip_version = 0
        self.holders = 0
        self.derailed: list[Envelope] | None = None
        self.loaded = False
        self.failure: BaseException | None = None
        self.in_a_row = 0  # restarts in a row, reset by a command that succeeds
        # The stream's version as another process wrote it, when the bus's follower, a
        # conflict or a confirmation saw it ahead of `version`: catch up before deciding
        # anything, from `foreign` (the events the follower read, in order) when they
        # reach it, else from the store. `unsure`: only a read of the store will do (an
        # outcome is unknown, or an append lost a race).
        self.behind = 0
        self.foreign: list[RecordedEvent] | None = None  # made by the first `offer`
        self.unsure = False

    @property
    def _log(self) -> Any:
        """This actor's logger, bound to its aggregate and stream (made on first use)."""
        log = self._logger
        if log is None:
            log = self._logger = get_logger(
                "actors", aggregate=self.host.name, stream_id=self.stream_id
            )
        return log


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
