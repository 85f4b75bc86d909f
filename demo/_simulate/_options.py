"""What a simulation does: its options, checked when made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from actors import InvalidOption, ProcessManagerOptions

__all__ = ["MAX_PROCESSES", "SimOptions", "SimulationError"]

MAX_PROCESSES = 64
"""The most worker processes a simulation starts (`processes`)."""


class SimulationError(Exception):
    """The simulation cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What a simulation does.

    Attributes:
        db: the SQLite file (":memory:" works) or a `postgresql://` URL (its
            `?schema=` parameter names the schema); an existing store is added to and
            checked whole. None (with `processes` > 1 only): one temporary SQLite file
            shared by the workers, removed afterwards.
        seed: seeds every customer's choices.
        customers: customers acting at once (one task each).
        steps: commands the customers send in all (split evenly between them), or
            None with `duration`.
        duration: seconds the customers keep acting, instead of `steps`.
        couriers: deliveries under way at once.
        settle_timeout: seconds the process managers get to finish after the
            customers stop, and each read model to catch up.
        processes: worker OS processes sharing the store (1: this process runs it
            all); each runs its share of the customers and every process manager,
            under leases (each manager runs in one process at a time).
        lease_ttl: seconds a process manager's lease lasts unless renewed: a killed
            holder is replaced within about 1.2 times this.
        partitions: the partitions the bank's and the shop's process managers are
            each split into, each leased on its own, so that several processes share
            them (None: one per process).
        chaos: with `processes` > 1, kill a random worker with SIGKILL every
            `chaos_interval` seconds while the customers act (never the last one
            alive) and start a new one in its place.
        chaos_interval: seconds between two kills.
        ack_log: a file every acknowledged customer command (and restock) is appended
            to, as `stream_id<TAB>version<TAB>position`, before its customer sends the
            next one.
    """

    db: str | None = "demo.db"
    seed: int = 1
    customers: int = 50
    steps: int | None = 2_000
    duration: float | None = None
    couriers: int = 4
    settle_timeout: float = 300.0
    processes: int = 1
    lease_ttl: float = 2.0
    partitions: int | None = None
    chaos: bool = False
    chaos_interval: float = 3.0
    ack_log: str | None = None

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
        self._check_processes()
        if not _seconds(self.lease_ttl) or not 0.05 <= self.lease_ttl <= 3600:
            raise SimulationError(
                f"--lease-ttl must be a number of seconds from 0.05 to 3600, not {self.lease_ttl!r}"
            )
        if self.partitions is not None:
            try:  # the process managers' own check
                ProcessManagerOptions(partitions=self.partitions)
            except InvalidOption as error:
                raise SimulationError(f"--partitions: {error}") from None
        if not _seconds(self.chaos_interval) or not 0 < self.chaos_interval < math.inf:
            raise SimulationError(
                f"--chaos-interval must be a number of seconds > 0, not {self.chaos_interval!r}"
            )

    @property
    def manager_partitions(self) -> int:
        """The partitions of each process manager (`partitions`, or its default)."""
        return self.processes if self.partitions is None else self.partitions

    def _check_processes(self) -> None:
        processes = self.processes
        if type(processes) is not int or not 1 <= processes <= MAX_PROCESSES:
            raise SimulationError(
                f"--processes must be an integer from 1 to {MAX_PROCESSES}, not {processes!r}"
            )
        if processes == 1:
            if self.db is None:
                raise SimulationError("one process needs a --db (a file, ':memory:' or a URL)")
            if self.chaos:
                raise SimulationError(
                    "--chaos needs --processes 2 or more (it never kills the last live worker)"
                )
            return
        if self.db == ":memory:":
            raise SimulationError(
                f"--processes {processes} share one store: a SQLite file or a PostgreSQL"
                " URL, not --db :memory:"
            )
        if self.customers < processes:
            raise SimulationError(
                f"--processes {processes} divides the customers between them: give at"
                f" least {processes} --customers, not {self.customers}"
            )


def _seconds(value: object) -> bool:
    """Whether `value` is a number of seconds (an int or a float, not a bool)."""
    return type(value) in (int, float)
