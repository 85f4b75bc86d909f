"""What a simulation does: its options, checked when made."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SimOptions", "SimulationError"]


class SimulationError(Exception):
    """The simulation cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What a simulation does.

    Attributes:
        db: the SQLite file (":memory:" works) or a `postgresql://` URL (its
            `?schema=` parameter names the schema); an existing store is added to and
            checked whole.
        seed: seeds every customer's choices.
        customers: customers acting at once (one task each).
        steps: commands the customers send in all (split evenly between them), or
            None with `duration`.
        duration: seconds the customers keep acting, instead of `steps`.
        couriers: deliveries under way at once.
        settle_timeout: seconds the process managers get to finish after the
            customers stop, and each read model to catch up.
    """

    db: str = "demo.db"
    seed: int = 1
    customers: int = 50
    steps: int | None = 2_000
    duration: float | None = None
    couriers: int = 4
    settle_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("customers", "couriers"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 100_000:
                raise SimulationError(f"--{name} must be an integer in 1..100000, not {value!r}")
        if (self.steps is None) == (self.duration is None):
            raise SimulationError("give exactly one of --steps and --duration")
        if self.steps is not None and (type(self.steps) is not int or self.steps < 1):
            raise SimulationError(f"--steps must be a positive integer, not {self.steps!r}")
        if self.duration is not None and not 0 < self.duration < math.inf:
            raise SimulationError(f"--duration must be > 0 seconds, not {self.duration!r}")
        if not 0 < self.settle_timeout < math.inf:
            raise SimulationError(
                f"settle_timeout must be > 0 seconds, not {self.settle_timeout!r}"
            )
