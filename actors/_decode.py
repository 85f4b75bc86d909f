"""Decoding commands from untrusted bytes (JSON or msgpack) into an aggregate's commands."""

from __future__ import annotations

import typing
from typing import Any, Final, Generic, Literal, cast

import msgspec

from actors._aggregate import Aggregate, Command, CommandT

__all__ = ["CommandDecoder", "InvalidCommand"]

DEFAULT_MAX_COMMAND_BYTES: Final = 64 * 1024


class InvalidCommand(ValueError):
    """Bytes that are not a valid command of an aggregate; nothing reached an actor.

    Attributes:
        aggregate: the aggregate class's name.
        reason: what was wrong (size over the limit, not JSON, a field of the wrong type,
            an unknown command type, ...).
    """

    def __init__(self, aggregate: str, reason: str) -> None:
        super().__init__(f"invalid command for {aggregate}: {reason}")
        self.aggregate = aggregate
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidCommand], tuple[str, str]]:
        return (InvalidCommand, (self.aggregate, self.reason))


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
