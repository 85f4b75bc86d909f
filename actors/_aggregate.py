"""Commands, events and the pure `Aggregate` (decide/evolve) the runtime drives."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar

import msgspec

__all__ = ["SECRET", "Aggregate", "Command", "CommandResult", "Event"]

SECRET: Final = msgspec.Meta(extra={"secret": True})
"""Marks a command or event field secret: `card: Annotated[str, SECRET]`. Its value is
shown as `***` in `repr()` (and so in error messages and logs that show the command or
event); it is stored and encoded as usual."""

_secret_fields: dict[type, tuple[str, ...]] = {}


def _secrets_of(cls: type) -> tuple[str, ...]:
    found = _secret_fields.get(cls)
    if found is None:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable hints: redact nothing, never fail repr
            hints = {}
        found = tuple(
            name
            for name, hint in hints.items()
            if typing.get_origin(hint) is typing.Annotated
            and any(
                isinstance(m, msgspec.Meta) and (m.extra or {}).get("secret")
                for m in hint.__metadata__
            )
        )
        _secret_fields[cls] = found
    return found


def _redacted_repr(self: msgspec.Struct) -> str:
    secrets = _secrets_of(type(self))
    parts = [
        f"{name}={'***' if name in secrets else repr(getattr(self, name))}"
        for name in self.__struct_fields__
    ]
    return f"{type(self).__name__}({', '.join(parts)})"


# Subclasses inherit `frozen=True` at runtime; this tells type checkers so too.
@typing.dataclass_transform(frozen_default=True, field_specifiers=(msgspec.field,))
class Command(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Base of commands: frozen, tagged structs (`class Deposit(Command, tag="bank.deposit")`).

    A command carries everything `decide` needs: ids, amounts, timestamps. Give each
    subclass an explicit, dotted, permanent tag. Decoding refuses unknown fields (commands
    often come from untrusted input; see `CommandDecoder`). Fields marked `SECRET` show as
    `***` in `repr()`.
    """

    __repr__ = _redacted_repr


@typing.dataclass_transform(frozen_default=True, field_specifiers=(msgspec.field,))
class Event(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of events: frozen, tagged structs (`class Deposited(Event, tag="bank.deposited")`).

    The tag is stored with every event and must never change (rename the class freely).
    Fields marked `SECRET` show as `***` in `repr()`.
    """

    __repr__ = _redacted_repr


StateT = TypeVar("StateT")
CommandT = TypeVar("CommandT", bound=Command)
EventT = TypeVar("EventT", bound=Event)

_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


class CommandResult(msgspec.Struct, Generic[EventT], frozen=True, gc=False):
    """The durable answer to a command: its events are committed.

    Attributes:
        events: the events the command produced (empty when it produced none).
        version: the aggregate's stream version after the command.
        position: the global position of the command's last event. For a command that
            produced no events, the position of the stream's last event known to the
            actor (0 for an empty stream): waiting for it on a read model still
            gives read-your-writes for this aggregate.
        duplicate: the command id was seen before; this is the first result again and
            nothing was stored this time.
    """

    events: tuple[EventT, ...]
    version: int
    position: int
    duplicate: bool = False


class Aggregate(Generic[StateT, CommandT, EventT]):
    """A pure aggregate: an initial state, `decide` and `evolve`. Subclass it with its
    three type arguments: `class Account(Aggregate[AccountState, AccountCommand,
    AccountEvent])`.

    Class attributes:
        initial: the state of a new instance (a frozen msgspec struct, so snapshots work).
        category: the stream category: instance `id` lives in stream `f"{category}-{id}"`.
            Defaults to the class name in lower case; set it explicitly, since renaming
            the class must not move the streams (lower case, digits, `_` and `.`).
        event_types: the event types to register with the store. Defaults to the
            members of the third type argument (a single type or a union); set it when
            the type argument is not concrete.
        snapshot_every: save a snapshot each time the version crosses a multiple of
            this many events (None: never, the default).
        state_version: the shape version of the state type, stored with snapshots;
            bump it when the state's shape changes (older snapshots are then ignored).

    Neither method awaits, does I/O, reads the clock or makes ids.
    """

    initial: StateT
    category: ClassVar[str]
    event_types: ClassVar[tuple[type[Event], ...]] = ()
    snapshot_every: ClassVar[int | None] = None
    state_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "category" not in cls.__dict__:
            cls.category = cls.__name__.lower()
        if not _CATEGORY.match(cls.category):
            raise ValueError(
                f"{cls.__qualname__}.category {cls.category!r} must be lower case letters,"
                " digits, '_' or '.' (it prefixes every stream id of the aggregate)"
            )
        if "event_types" not in cls.__dict__:
            derived = _event_types_of(cls)
            if derived:
                cls.event_types = derived
        every = cls.snapshot_every
        if every is not None and (type(every) is not int or every < 1):
            raise ValueError(
                f"{cls.__qualname__}.snapshot_every must be a positive int or None, not {every!r}"
            )

    def decide(self, state: StateT, command: CommandT) -> Sequence[EventT]:
        """The events `command` produces in `state` (may be empty).

        Raises:
            Rejected: (a subclass) the command is refused; the message says why.
        """
        raise NotImplementedError

    def evolve(self, state: StateT, event: EventT) -> StateT:
        """The state after `event` (a fact: never refuse it)."""
        raise NotImplementedError

    @classmethod
    def stream_id(cls, aggregate_id: str) -> str:
        """The stream of instance `aggregate_id`: `"<category>-<aggregate_id>"`."""
        return f"{cls.category}-{aggregate_id}"


def _event_types_of(cls: type) -> tuple[type[Event], ...]:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Aggregate):
            args = typing.get_args(base)
            if len(args) == 3:
                return _flatten(args[2])
    return ()


def _flatten(tp: object) -> tuple[type[Event], ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        out: list[type[Event]] = []
        for arg in typing.get_args(tp):
            out.extend(_flatten(arg))
        return tuple(out)
    if isinstance(tp, type) and issubclass(tp, Event) and tp is not Event:
        return (tp,)
    return ()
