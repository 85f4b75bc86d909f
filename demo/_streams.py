"""Small helpers shared by the demo domains: stream ids back to aggregate ids, tags."""

from __future__ import annotations

from typing import Any

from actors import Aggregate, Event
from store import RecordedEvent

__all__ = ["aggregate_id", "tags"]


def aggregate_id(recorded: RecordedEvent, aggregate: type[Aggregate[Any, Any, Any]]) -> str:
    """The instance id of `aggregate` whose stream `recorded` belongs to.

    Raises:
        ValueError: the stream is not one of `aggregate`'s.
    """
    prefix = aggregate.category + "-"
    stream_id = recorded.stream_id
    if not stream_id.startswith(prefix):
        raise ValueError(
            f"event {recorded.event_type!r} at position {recorded.position} is in stream"
            f" {stream_id!r}, not a {aggregate.__name__} stream ({prefix}...)"
        )
    return stream_id[len(prefix) :]


def tags(*event_types: type[Event]) -> frozenset[str]:
    """The permanent tags of `event_types` (what projections subscribe by)."""
    out = set()
    for tp in event_types:
        tag = tp.__struct_config__.tag
        if not isinstance(tag, str):
            raise TypeError(f"event type {tp.__qualname__} has no string tag")
        out.add(tag)
    return frozenset(out)
