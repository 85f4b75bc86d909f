"""The event codec: permanent tags, schema versions, upcasters, cached msgspec coders.

An event type is a tagged `msgspec.Struct` (`class Deposited(Event, tag="bank.deposited")`).
Its tag is stored with every event and must never change; its *schema version* says
which shape of the type a stored payload has. When a type's shape changes in a way a
defaulted field cannot absorb, bump its schema version and register an upcaster from
the old (tag, version) to the next; a renamed tag is an upcaster too (an alias).
Decoding runs the chain on the plain msgpack map, then converts it to the current type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, overload

import msgspec

__all__ = ["EventRegistry", "Upcaster"]

Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns an old payload (a plain dict of the stored fields) into the next shape."""

_MAX_UPCAST_STEPS = 64


class _Entry:
    __slots__ = ("decoder", "schema_version", "tag", "tag_field", "type")

    def __init__(self, tp: type[msgspec.Struct], tag: str, schema_version: int) -> None:
        self.type = tp
        self.tag = tag
        self.schema_version = schema_version
        self.tag_field: str = tp.__struct_config__.tag_field or "type"
        self.decoder = msgspec.msgpack.Decoder(tp)


class EventRegistry:
    """Maps event types to permanent tags and schema versions, and back.

    Register every event type before appending it (`registry.register(Deposited)`).
    The registry is shared by the writer and every reader of a store, so register
    before opening the store, or at least before the first append of a type.
    """

    def __init__(self, types: Iterable[type[msgspec.Struct]] = ()) -> None:
        self._by_type: dict[type[Any], _Entry] = {}
        self._by_tag: dict[str, _Entry] = {}
        self._upcasters: dict[tuple[str, int], tuple[str, int, Upcaster]] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._raw = msgspec.msgpack.Decoder(dict[str, Any])
        for tp in types:
            self.register(tp)

    def register(self, *types: type[msgspec.Struct], schema_version: int = 1) -> None:
        """Register event types under their msgspec tags, at `schema_version`.

        Registering the same type again at the same version is a no-op.

        Raises:
            TypeError: the type is not a tagged `msgspec.Struct`.
            ValueError: the tag already belongs to another type, or the version is < 1.
        """
        if schema_version < 1:
            raise ValueError(f"schema_version must be >= 1, not {schema_version}")
        for tp in types:
            if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
                raise TypeError(f"{tp!r} is not a msgspec.Struct type")
            tag = tp.__struct_config__.tag
            if not isinstance(tag, str) or not tag:
                raise TypeError(
                    f"event type {tp.__qualname__} has no string tag: declare it as"
                    f" class {tp.__name__}(Event, tag='context.name')"
                )
            known = self._by_tag.get(tag)
            if known is not None:
                if known.type is tp and known.schema_version == schema_version:
                    continue
                if known.type is not tp:
                    raise ValueError(
                        f"tag {tag!r} of {tp.__qualname__} already belongs to"
                        f" {known.type.__qualname__}; tags must be unique and permanent"
                    )
            entry = _Entry(tp, tag, schema_version)
            self._by_type[tp] = entry
            self._by_tag[tag] = entry

    @overload
    def upcaster(
        self,
        tag: str,
        from_version: int,
        fn: Upcaster,
        *,
        to_tag: str | None = None,
        to_version: int | None = None,
    ) -> Upcaster: ...

    @overload
    def upcaster(
        self,
        tag: str,
        from_version: int,
        fn: None = None,
        *,
        to_tag: str | None = None,
        to_version: int | None = None,
    ) -> Callable[[Upcaster], Upcaster]: ...

    def upcaster(
        self,
        tag: str,
        from_version: int,
        fn: Upcaster | None = None,
        *,
        to_tag: str | None = None,
        to_version: int | None = None,
    ) -> Upcaster | Callable[[Upcaster], Upcaster]:
        """Register `fn` to turn payloads of (`tag`, `from_version`) into the next shape.

        The result is read as (`to_tag` or `tag`, `to_version` or `from_version + 1`);
        chains run until a registered type at its current schema version is reached.
        An alias for a renamed tag is `upcaster(old_tag, v, to_tag=new_tag, to_version=w)`
        with no function. Usable as a decorator: `@registry.upcaster("bank.opened", 1)`
        (without `fn`, the step is the identity until the decorated function replaces it).
        """
        target = (to_tag or tag, to_version if to_version is not None else from_version + 1)
        if target == (tag, from_version):
            raise ValueError(f"upcaster for {tag!r} v{from_version} would not change anything")
        self._upcasters[(tag, from_version)] = (target[0], target[1], fn or _identity)
        if fn is not None:
            return fn

        def decorate(step: Upcaster) -> Upcaster:
            self._upcasters[(tag, from_version)] = (target[0], target[1], step)
            return step

        return decorate

    def alias(self, old_tag: str, new_type: type[msgspec.Struct], *, old_version: int = 1) -> None:
        """Read events stored under `old_tag` (at `old_version`) as `new_type`, unchanged."""
        entry = self._by_type.get(new_type)
        if entry is None:
            raise ValueError(f"register {new_type.__qualname__} before aliasing a tag to it")
        self.upcaster(old_tag, old_version, to_tag=entry.tag, to_version=entry.schema_version)

    def is_registered(self, tp: type[Any]) -> bool:
        """Whether instances of `tp` can be appended."""
        return tp in self._by_type

    def tag_of(self, tp: type[Any]) -> str:
        """The permanent tag of a registered type (KeyError when not registered)."""
        return self._by_type[tp].tag

    def types(self) -> tuple[type[msgspec.Struct], ...]:
        """Every registered type, in registration order."""
        return tuple(self._by_type)

    def tags(self) -> list[str]:
        """Every tag this registry decodes, sorted: its types' and those an upcaster or
        an alias reads."""
        return sorted({*self._by_tag, *(tag for tag, _ in self._upcasters)})

    # -- hot paths --------------------------------------------------------------------

    def encode(self, event: msgspec.Struct) -> tuple[str, int, bytes] | None:
        """(tag, schema_version, payload) of a registered event; None when unregistered."""
        entry = self._by_type.get(type(event))
        if entry is None:
            return None
        return entry.tag, entry.schema_version, self._encoder.encode(event)

    def decode(self, tag: str, schema_version: int, data: bytes) -> Any:
        """Decode a stored payload into its current type, upcasting old shapes.

        Raises:
            UpcasterFailed: an upcaster on the way raised or returned a non-dict.
            LookupError: no type or upcaster for (tag, schema_version); the caller turns it
                into `UnknownEventType` with the stream and version.
            msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError: the payload
                does not fit (a str that is not UTF-8 is a UnicodeDecodeError).
        """
        entry = self._by_tag.get(tag)
        if entry is not None and entry.schema_version == schema_version:
            return entry.decoder.decode(data)
        return self._upcast(tag, schema_version, self._raw.decode(data))

    def _upcast(self, tag: str, version: int, payload: dict[str, Any]) -> Any:
        for _ in range(_MAX_UPCAST_STEPS):
            entry = self._by_tag.get(tag)
            if entry is not None and entry.schema_version == version:
                payload[entry.tag_field] = entry.tag
                return msgspec.convert(payload, entry.type)
            step = self._upcasters.get((tag, version))
            if step is None:
                raise LookupError((tag, version))
            source = (tag, version)
            tag, version, fn = step
            try:
                payload = fn(payload)
            except Exception as exc:
                raise UpcasterFailed(*source, repr(exc)) from exc
            if not isinstance(payload, dict):
                raise UpcasterFailed(*source, f"it returned {type(payload).__name__}, not a dict")
        raise LookupError((tag, version))

    # -- snapshots: any msgspec-encodable state ----------------------------------------

    def encode_state(self, state: object) -> bytes:
        """`state` (a msgspec struct or plain data) as msgpack bytes, for a snapshot."""
        return self._encoder.encode(state)


class UpcasterFailed(Exception):
    """An upcaster raised or returned a non-dict; the store reports it with the stream
    and version as an `EventDecodeError` (kept apart from `LookupError`, which means
    no upcaster at all)."""

    def __init__(self, tag: str, version: int, reason: str) -> None:
        super().__init__(f"the upcaster from {tag!r} schema {version} failed: {reason}")
        self.tag, self.version, self.reason = tag, version, reason


def _identity(payload: dict[str, Any]) -> dict[str, Any]:
    return payload
