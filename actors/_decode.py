"""Decoding commands from untrusted bytes (JSON or msgpack) into an aggregate's commands,
and checking command objects sent to an aggregate against the same rules."""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any, Final, Generic, Literal, cast

import msgspec

from actors._aggregate import Aggregate, Command, CommandT

__all__ = ["CommandCheck", "CommandDecoder", "InvalidCommand"]

DEFAULT_MAX_COMMAND_BYTES: Final = 64 * 1024


class InvalidCommand(ValueError):
    """A command that is not a valid command of an aggregate: bytes that do not decode
    into one (`CommandDecoder`), or a command object sent to it (`ask`, `tell`) with a
    field of the wrong type or of a type the aggregate does not handle. Nothing reached
    an actor.

    Attributes:
        aggregate: the aggregate class's name.
        reason: what was wrong (size over the limit, not JSON, a field of the wrong type,
            an unknown command type, ...).
        command_type: the type name of the command (or other object) sent, or None when
            it is not known (bytes that did not decode).
        field: the command's field that is wrong, or None when the whole command is.
        aggregate_id: the instance the command was sent to, or None (decoded bytes).
    """

    def __init__(
        self,
        aggregate: str,
        reason: str,
        *,
        command_type: str | None = None,
        field: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        target = aggregate if aggregate_id is None else f"{aggregate} {_shown(aggregate_id)}"
        what = "command" if command_type is None else f"command {command_type}"
        where = "" if field is None else f"field {field!r}: "
        super().__init__(f"invalid {what} for {target}: {where}{reason}")
        self.aggregate = aggregate
        self.reason = reason
        self.command_type = command_type
        self.field = field
        self.aggregate_id = aggregate_id

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        rebuild = functools.partial(
            InvalidCommand,
            command_type=self.command_type,
            field=self.field,
            aggregate_id=self.aggregate_id,
        )
        return (rebuild, (self.aggregate, self.reason))


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _command_union(aggregate: type[Aggregate[Any, Any, Any]]) -> Any:
    for base in getattr(aggregate, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Aggregate):
            args = typing.get_args(base)
            if len(args) == 3:
                return args[1]
    raise TypeError(
        f"{aggregate.__qualname__} does not name its command type"
        " (subclass Aggregate[State, Command, Event])"
    )


class CommandDecoder(Generic[CommandT]):
    """Decodes bytes from an untrusted source into one of an aggregate's commands.

    The input is a tagged object (`{"type": "bank.deposit", "account_id": "a", "amount":
    5}` in JSON, the same map in msgpack). Its length is checked against `max_bytes`
    before any decoding; fields are checked against the command's annotations (ints stay
    ints: a float amount is refused), and unknown fields are refused. Only
    `InvalidCommand` escapes.

    Args:
        aggregate: the aggregate class; its second type argument (a command or a union
            of commands) is the accepted shape.
        format: "json" (default) or "msgpack".
        max_bytes: the largest input accepted (finite; default 64 KiB).
    """

    __slots__ = ("_decoder", "_max_bytes", "_name")

    def __init__(
        self,
        aggregate: type[Aggregate[Any, CommandT, Any]],
        *,
        format: Literal["json", "msgpack"] = "json",
        max_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ) -> None:
        if type(max_bytes) is not int or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        union = _command_union(aggregate)
        self._name = aggregate.__qualname__
        self._max_bytes = max_bytes
        if format == "json":
            self._decoder: msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any] = (
                msgspec.json.Decoder(union)
            )
        elif format == "msgpack":
            self._decoder = msgspec.msgpack.Decoder(union)
        else:
            raise ValueError(f"format must be 'json' or 'msgpack', not {format!r}")

    def decode(self, data: bytes | bytearray | memoryview) -> CommandT:
        """The command `data` encodes.

        Raises:
            InvalidCommand: `data` is over `max_bytes`, not bytes, malformed, or not a
                valid command of the aggregate (the message says which field and why).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidCommand(self._name, f"expected bytes, got {type(data).__name__}")
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if size > self._max_bytes:
            raise InvalidCommand(
                self._name, f"{size} bytes is over the limit of {self._max_bytes} (max_bytes)"
            )
        try:
            command = self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InvalidCommand(self._name, str(exc)) from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise InvalidCommand(self._name, f"cannot be decoded ({type(exc).__name__})") from None
        if not isinstance(command, Command):  # pragma: no cover - the union holds commands
            raise InvalidCommand(self._name, "it is not a command")
        return cast(CommandT, command)


def _command_types(aggregate: type[Aggregate[Any, Any, Any]]) -> frozenset[type] | None:
    """The command types `aggregate` declares it handles, or None when its command type
    argument is not a concrete command or union of commands (any command is let through
    then)."""
    try:
        union = _command_union(aggregate)
    except TypeError:
        return None
    members: list[object] = []
    pending: list[object] = [union]
    while pending:
        tp = pending.pop()
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            pending.extend(typing.get_args(tp))
        else:
            members.append(tp)
    found: set[type] = set()
    for tp in members:
        if not (isinstance(tp, type) and issubclass(tp, Command)) or tp is Command:
            return None
        found.add(tp)
    return frozenset(found)


_ENCODE = msgspec.msgpack.Encoder().encode
_ENCODE_FAILURES: Final = (TypeError, ValueError, OverflowError, RecursionError)
_AT_PATH = re.compile(r" - at `\$\.([^`]+)`$")


class CommandCheck:
    """Checks command objects sent to one aggregate, before they reach a mailbox: each
    must be an instance of one of the aggregate's command types, with every field of its
    declared type, exactly as `CommandDecoder` would have decoded it (ints stay ints: a
    float or a bool amount is refused; `Meta` constraints hold).

    The check is a strict msgpack round trip through a decoder built once per command
    type (a few hundred nanoseconds for a small command).

    Args:
        aggregate: the aggregate class.
        name: the aggregate's name in errors.
    """

    __slots__ = ("_allowed", "_decoders", "_name")

    def __init__(self, aggregate: type[Aggregate[Any, Any, Any]], name: str) -> None:
        self._name = name
        self._allowed = _command_types(aggregate)
        # None: a command type msgspec cannot decode (only its type is checked)
        self._decoders: dict[type, msgspec.msgpack.Decoder[Any] | None] = {}

    def check(self, aggregate_id: str, command: object) -> None:
        """Return if `command` is a valid command of the aggregate.

        Raises:
            InvalidCommand: naming the aggregate, `aggregate_id`, the command's type, the
                field and what was wrong.
        """
        try:
            decoder = self._decoders[type(command)]
        except KeyError:
            decoder = self._learn(aggregate_id, command)
        if decoder is not None:
            try:
                decoder.decode(_ENCODE(command))
            except (*_ENCODE_FAILURES, msgspec.DecodeError) as exc:
                raise self._refusal(aggregate_id, command, exc) from None

    def _learn(self, aggregate_id: str, command: object) -> msgspec.msgpack.Decoder[Any] | None:
        cls = type(command)
        allowed = self._allowed
        if not isinstance(command, Command) or (allowed is not None and cls not in allowed):
            if allowed is None:
                reason = "it is not a Command"
            else:
                names = ", ".join(sorted(tp.__qualname__ for tp in allowed))
                reason = f"{self._name} does not handle it (it handles {names})"
            raise InvalidCommand(
                self._name, reason, command_type=cls.__qualname__, aggregate_id=aggregate_id
            )
        try:
            decoder: msgspec.msgpack.Decoder[Any] | None = msgspec.msgpack.Decoder(cls)
        except TypeError:  # a field type msgspec cannot decode: check the type only
            decoder = None
        self._decoders[cls] = decoder
        return decoder

    def _refusal(self, aggregate_id: str, command: object, exc: Exception) -> InvalidCommand:
        cls = type(command)
        field: str | None = None
        if isinstance(exc, msgspec.DecodeError):
            reason = str(exc)
            at = _AT_PATH.search(reason)
            if at is not None:
                path = at.group(1)
                encoded = re.split(r"[.\[]", path, maxsplit=1)[0]
                names = dict(zip(cls.__struct_encode_fields__, cls.__struct_fields__, strict=True))  # type: ignore[attr-defined]
                field = names.get(encoded, encoded)
                if path == encoded:
                    reason = reason[: at.start()]
        else:
            for name in cls.__struct_fields__:  # type: ignore[attr-defined]
                try:
                    _ENCODE(getattr(command, name))
                except _ENCODE_FAILURES:
                    field = name
                    break
            if isinstance(exc, UnicodeError):
                reason = "a str in it is not valid Unicode (lone surrogate)"
            else:
                reason = f"it cannot be encoded ({type(exc).__name__}: {exc})"
        return InvalidCommand(
            self._name,
            reason,
            command_type=cls.__qualname__,
            field=field,
            aggregate_id=aggregate_id,
        )
