"""The lines a simulation's parent and its workers exchange (one JSON object a line)."""

from __future__ import annotations

import msgspec

from demo._simulate._report import Invariant, WorkerFigures

__all__: list[str] = []


class _Go(msgspec.Struct, frozen=True, tag="go", tag_field="kind"):
    """Parent to worker: the customers start; with a duration, they stop at `deadline`
    (`time.time()`: a worker started in place of a killed one keeps the same end)."""

    deadline: float | None = None


class _Settle(msgspec.Struct, frozen=True, tag="settle", tag_field="kind"):
    """Parent to worker: every worker's customers stopped; wait for the sagas to end."""


class _Check(msgspec.Struct, frozen=True, tag="check", tag_field="kind"):
    """Parent to worker: every worker settled; check the store and report, then exit."""


class _Ready(msgspec.Struct, frozen=True, tag="ready", tag_field="kind"):
    """Worker to parent: its system, read models and process managers are up."""


class _Acted(msgspec.Struct, frozen=True, tag="acted", tag_field="kind"):
    """Worker to parent: its customers stopped."""


class _Settled(msgspec.Struct, frozen=True, tag="settled", tag_field="kind"):
    """Worker to parent: its process managers reached the store's head (or not)."""

    settled: Invariant


class _Failed(msgspec.Struct, frozen=True, tag="error", tag_field="kind"):
    """Worker to parent: it failed (and exits with status 1)."""

    error: str


class _Report(msgspec.Struct, frozen=True, tag="report", tag_field="kind"):
    """Worker to parent: its figures and its check of the store at `head`."""

    figures: WorkerFigures
    head: int
    invariants: tuple[Invariant, ...]
    events_by_type: dict[str, int]
    sent: int  # commands its customers sent
    by_type: dict[str, int]
    rejected_by_type: dict[str, int]
    error_types: dict[str, int]
    digests: list[tuple[int, str]]  # (customer, hex digest of its commands)
    process_managers: dict[str, dict[str, int]]


_FromWorker = _Ready | _Acted | _Settled | _Failed | _Report
_ToWorker = _Go | _Settle | _Check
