"""Small helpers shared by the demo domains: stream ids back to aggregate ids."""

from __future__ import annotations

from typing import Any

from actors import Aggregate
from store import RecordedEvent

__all__ = ["aggregate_id"]


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
