"""Errors raised by the actor runtime, and the base of domain refusals.

```
Rejected                       decide refused the command (domain; subclass it)
InvalidCommand                 not a command the aggregate declares, or a field of the
                               wrong type (a ValueError; refused before any actor saw it)
ActorError
├── MailboxFull                tell (or an ask out of time) found the mailbox full
├── Overloaded                 too many commands wait across the system's mailboxes
├── ShuttingDown               the system stopped accepting commands
├── AskTimeout                 no reply within the ask's timeout (TimeoutError too)
├── CommandFailed              decide raised something other than Rejected
├── EvolveError                evolve raised on an event decide had just emitted
├── RecoveryError              a stored event could not be decoded or evolved at load
├── TooManyAttempts            the append kept conflicting with concurrent appends
├── RestartLimitExceeded       the actor failed too often in a row; it is quarantined
├── ReentrantAskError          an ask that would wait on itself (directly or in a cycle)
└── InvalidOption              an unknown option, or one outside its range (ValueError too)
```
Every message names the aggregate type and id (or stream) concerned and what to do;
the same values are kept on attributes, and the underlying error is the `__cause__`.
A bad aggregate id, or a bad argument of a read (`state_at`, `history`), gets the store's
own error, raised by the router before any actor is started: `store.InvalidStreamId`,
`store.NaiveDatetime` or `store.InvalidReadArgument` (all `store.InvalidArgument`).
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "AskTimeout",
    "CommandFailed",
    "EvolveError",
    "InvalidOption",
    "MailboxFull",
    "Overloaded",
    "Rejected",
    "RecoveryError",
    "ReentrantAskError",
    "RestartLimitExceeded",
    "ShuttingDown",
    "TooManyAttempts",
]


class Rejected(Exception):
    """Base of domain refusals: `decide` raises a subclass with the reason.

    The runtime passes a `Rejected` to the caller unchanged; nothing is stored and the
    actor carries on with its state untouched.
    """


class ActorError(Exception):
    """Base class of every error the actor runtime raises."""


class MailboxFull(ActorError):
    """The aggregate's mailbox is at capacity; the command was not enqueued.

    Attributes:
        stream_id: the aggregate instance's stream.
        capacity: the mailbox's capacity.
    """

    def __init__(self, stream_id: str, capacity: int) -> None:
        super().__init__(
            f"the mailbox of {stream_id!r} is full ({capacity} commands waiting);"
            " slow down, use ask (which waits for room), or raise mailbox_capacity"
        )
        self.stream_id, self.capacity = stream_id, capacity


class Overloaded(ActorError):
    """Too many commands wait in the system's mailboxes (`max_queued_commands`); this one
    was refused at once and not enqueued. Back off and resend it (with the same command
    id), or shed the load upstream.

    Attributes:
        stream_id: the aggregate instance the command was for.
        queued: commands waiting across the system when it was refused.
        limit: the system's `max_queued_commands`.
    """

    def __init__(self, stream_id: str, queued: int, limit: int) -> None:
        super().__init__(
            f"the actor system is overloaded: {queued} commands wait in its mailboxes"
            f" (max_queued_commands={limit}); the command for {stream_id!r} was refused,"
            " not enqueued: back off and resend it"
        )
        self.stream_id, self.queued, self.limit = stream_id, queued, limit


class ShuttingDown(ActorError):
    """The actor system is shutting down and refused (or could not finish) the command.

    A command refused with this error was not applied.
    """


class AskTimeout(ActorError, TimeoutError):
    """No reply came within the ask's timeout.

    If the command was already taken by the actor it is applied whole or not at all;
    its outcome is unknown to the caller: resend it with the same `command_id`.
    """

    def __init__(self, stream_id: str, timeout: float) -> None:
        super().__init__(
            f"no reply from {stream_id!r} within {timeout:g}s; the command may still be"
            " applied: resend it with the same command_id to learn its outcome"
        )
        self.stream_id, self.timeout = stream_id, timeout


class CommandFailed(ActorError):
    """`decide` raised an unexpected error (not a `Rejected`); nothing was stored.

    Attributes:
        aggregate: the aggregate type's name.
        aggregate_id: the instance.
        command_type: the command's type name.
    """

    def __init__(self, aggregate: str, aggregate_id: str, command_type: str, error: str) -> None:
        super().__init__(
            f"{aggregate} {aggregate_id!r} failed to decide {command_type}: {error}"
            " (a bug in decide: nothing was stored and the aggregate is unchanged)"
        )
        self.aggregate, self.aggregate_id, self.command_type = aggregate, aggregate_id, command_type


class EvolveError(ActorError):
    """`evolve` raised on an event `decide` had just emitted; nothing of the command was
    stored and the actor restarted from the store.

    Attributes:
        aggregate, aggregate_id: the instance.
        event_type: the type name of the event evolve refused.
    """

    def __init__(self, aggregate: str, aggregate_id: str, event_type: str, error: str) -> None:
        super().__init__(
            f"{aggregate} {aggregate_id!r} could not evolve {event_type}: {error}"
            " (decide and evolve disagree: nothing was stored; the actor restarted)"
        )
        self.aggregate, self.aggregate_id, self.event_type = aggregate, aggregate_id, event_type


class RecoveryError(ActorError):
    """Loading an aggregate failed: a stored event could not be decoded or evolved.

    Attributes:
        stream_id: the stream being loaded.
        version: the version of the offending event (0 when loading failed otherwise).
        event_type: its stored tag (or type name), or "" when unknown.
    """

    def __init__(self, stream_id: str, version: int, event_type: str, error: str) -> None:
        super().__init__(
            f"cannot load stream {stream_id!r}: event {event_type!r} at version {version}"
            f" fails: {error}. Fix the code or register an upcaster; until then commands"
            " for this aggregate are refused"
        )
        self.stream_id, self.version, self.event_type = stream_id, version, event_type


class TooManyAttempts(ActorError):
    """The command's append conflicted with a concurrent append (another process's, or
    another system's on the same store) on every attempt.

    The last `ConcurrencyError` is the `__cause__`; nothing of the command was stored.
    """

    def __init__(self, stream_id: str, attempts: int) -> None:
        super().__init__(
            f"stream {stream_id!r} changed under the command {attempts} times in a row"
            " (appended to by another process); nothing was stored: retry later, or find"
            " what else appends to it"
        )
        self.stream_id, self.attempts = stream_id, attempts


class RestartLimitExceeded(ActorError):
    """The actor failed (load or evolve) too many times in a row and is quarantined.

    Commands for it are refused with this error for `quarantine_for` seconds (doubled
    per quarantine in a row, up to `max_backoff`); the next one after that reloads it
    from the store.
    """

    def __init__(self, stream_id: str, restarts: int) -> None:
        super().__init__(
            f"the actor for {stream_id!r} failed {restarts} times in a row and is quarantined;"
            " see the cause, fix the data or code, then send again"
        )
        self.stream_id, self.restarts = stream_id, restarts


class ReentrantAskError(ActorError):
    """An ask whose target is already handling a message up the ask chain: it would
    wait on itself (a self-ask, or a cycle A→B→A) and deadlock.

    Attributes:
        stream_id: the target.
        chain: the actors handling, outermost first, when the ask was made.
    """

    def __init__(self, stream_id: str, chain: tuple[str, ...]) -> None:
        path = " -> ".join((*chain, stream_id))
        super().__init__(
            f"ask to {stream_id!r} from inside its own handling would deadlock ({path});"
            " use tell, or restructure the interaction"
        )
        self.stream_id, self.chain = stream_id, chain


class InvalidOption(ActorError, ValueError):
    """An option of the actor runtime is not one it takes, or not a value it takes:
    a field of `SystemOptions` or `ProcessManagerOptions`, a keyword of `open_system` or
    `ActorSystem.aggregates`, or an argument checked the same way (`spawn`'s
    `mailbox_capacity`, `snapshot_every`, `wait_for`'s `position` and `timeout`).
    Nothing was opened or started.

    Attributes:
        name: the option.
        value: the value given.
        expected: what it takes (its range or its type); for an unknown option, the
            options there are.
        where: what it is an option of, as the message begins ("" for `SystemOptions`).
        unknown: whether `name` is no option at all.
    """

    def __init__(
        self, name: str, value: object, expected: str, where: str = "", unknown: bool = False
    ) -> None:
        if unknown:
            message = f"{where}unknown option {name!r}; {expected}"
        else:
            message = f"{where}{name} must be {expected}, not {value!r}"
        super().__init__(message)
        self.name, self.value, self.expected = name, value, expected
        self.where, self.unknown = where, unknown

    def __reduce__(self) -> tuple[type[InvalidOption], tuple[str, object, str, str, bool]]:
        return (type(self), (self.name, self.value, self.expected, self.where, self.unknown))
