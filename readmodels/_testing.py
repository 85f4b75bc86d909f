"""Given-then tests for projections, without a store, a bus or a task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from readmodels._projection import Projection, event_tags
from store import EventRegistry, RecordedEvent

__all__ = ["ProjectionSpec"]

View = TypeVar("View")

_RECORDED_AT = 1_700_000_000.0  # a fixed moment: specs are deterministic


class ProjectionSpec(Generic[View]):
    """Check a projection as a pure fold: `given` events, `then` the view.

    ```python
    spec = ProjectionSpec(Balances())
    spec.given(Deposited(5), Deposited(7), stream_id="acct-1").then(
        lambda view: view["acct-1"] == 12
    )
    ```
    `given` accepts plain event structs (recorded with the given `stream_id`, versions
    counting on per stream and positions counting on globally) or `RecordedEvent`s as
    they are. Events the projection does not subscribe to (`event_types`,
    `stream_prefix`) are left out, as the bus would. A spec is immutable: `given`
    returns a new one with more events.

    Args:
        projection: the projection under test.
        registry: when given, plain events take their tag and schema version from it
            (and must be registered); otherwise from their msgspec tag, schema 1.
    """

    def __init__(
        self,
        projection: Projection[View],
        *,
        registry: EventRegistry | None = None,
        _events: tuple[RecordedEvent, ...] = (),
    ) -> None:
        self.projection = projection
        self.registry = registry
        self.events = _events

    def given(
        self, *events: msgspec.Struct | RecordedEvent, stream_id: str = "stream-1"
    ) -> ProjectionSpec[View]:
        """A spec with `events` recorded after the ones given so far.

        Raises:
            TypeError: a plain event has no string tag (or is not registered).
        """
        versions: dict[str, int] = {}
        for recorded in self.events:
            versions[recorded.stream_id] = max(
                versions.get(recorded.stream_id, 0), recorded.version
            )
        position = self.events[-1].position if self.events else 0
        out = list(self.events)
        for event in events:
            if isinstance(event, RecordedEvent):
                recorded = event
            else:
                tag, schema_version = self._tag(event, stream_id)
                version = versions.get(stream_id, 0) + 1
                recorded = RecordedEvent(
                    stream_id=stream_id,
                    version=version,
                    position=position + 1,
                    event_type=tag,
                    schema_version=schema_version,
                    event=event,
                    metadata={},
                    recorded_at=_RECORDED_AT,
                )
            versions[recorded.stream_id] = max(
                versions.get(recorded.stream_id, 0), recorded.version
            )
            position = max(position, recorded.position)
            out.append(recorded)
        return ProjectionSpec(self.projection, registry=self.registry, _events=tuple(out))

    def _tag(self, event: msgspec.Struct, stream_id: str) -> tuple[str, int]:
        if self.registry is not None:
            encoded = self.registry.encode(event)
            if encoded is None:
                raise TypeError(
                    f"event {type(event).__qualname__} for stream {stream_id!r} is not"
                    " registered in the spec's registry"
                )
            return encoded[0], encoded[1]
        config: Any = getattr(type(event), "__struct_config__", None)
        tag = getattr(config, "tag", None)
        if not isinstance(tag, str) or not tag:
            raise TypeError(
                f"event {event!r} for stream {stream_id!r} has no string tag: give its"
                " class a msgspec tag, or pass RecordedEvents"
            )
        return tag, 1

    def view(self) -> View:
        """Fold the given events (those the projection subscribes to) into a fresh view."""
        projection = self.projection
        types = event_tags(projection)
        prefix = projection.stream_prefix
        view = projection.initial_view()
        for recorded in self.events:
            if types is not None and recorded.event_type not in types:
                continue
            if prefix is not None and not recorded.stream_id.startswith(prefix):
                continue
            view = projection.apply(view, recorded)
        return view

    def then(self, expected: Callable[[View], object] | View) -> View:
        """Assert the folded view: a predicate must return true, a value must be equal.

        Returns:
            The folded view, for further checks.

        Raises:
            AssertionError: with the view and what was expected.
        """
        view = self.view()
        if callable(expected):
            if not expected(view):
                raise AssertionError(
                    f"projection {type(self.projection).__name__}: view {view!r} after"
                    f" {len(self.events)} events does not satisfy {expected!r}"
                )
        elif view != expected:
            raise AssertionError(
                f"projection {type(self.projection).__name__}: view after"
                f" {len(self.events)} events is {view!r}, expected {expected!r}"
            )
        return view
