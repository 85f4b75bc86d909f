"""Read models: projections that keep in-memory views of the event log up to date.

Write a `Projection` (`initial_view` and an in-place `apply`); `start_projection` (or
`projection.start`) runs it as a subscriber task that catches up from the store and then
follows the bus. Its `ProjectionHandle` answers queries from the view, waits for a
position (`wait_for`, read your own writes), rebuilds by replay, and parks poison events
in dead letters that can be replayed after a fix. `readmodels.testing` has
`ProjectionSpec` for given/then tests.
"""

from __future__ import annotations

from readmodels._errors import (
    ConsistencyTimeout,
    InvalidProjection,
    ProjectionStopped,
    ReadModelError,
    TooManyParked,
)
from readmodels._projection import (
    DeadLetter,
    Projection,
    ProjectionHandle,
    ProjectionOptions,
    ProjectionStatistics,
    start_projection,
)

__all__ = [
    "ConsistencyTimeout",
    "DeadLetter",
    "InvalidProjection",
    "Projection",
    "ProjectionHandle",
    "ProjectionOptions",
    "ProjectionStatistics",
    "ProjectionStopped",
    "ReadModelError",
    "TooManyParked",
    "start_projection",
]
