"""The instruments: projection lag samples, the acknowledgement log and peak memory."""

from __future__ import annotations

import os
import random
import resource
import sys
import time

from demo.bank import Balances, BalancesView
from store import RecordedEvent

__all__ = ["MAX_LAG_SAMPLES"]

MAX_LAG_SAMPLES = 200_000
"""Projection lag samples kept (a uniform reservoir sample beyond that many events)."""


class _LagSampler:
    """Collects committed-to-applied lags of a live projection (ms): every one up to
    `MAX_LAG_SAMPLES`, then a uniform reservoir sample of that size."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.seen = 0
        self.measuring = False
        self._rng = random.Random(0)

    def observe(self, recorded: RecordedEvent) -> None:
        if not self.measuring:
            return
        self.seen += 1
        lag = (time.time() - recorded.recorded_at) * 1000.0
        if len(self.samples) < MAX_LAG_SAMPLES:
            self.samples.append(lag)
            return
        slot = self._rng.randrange(self.seen)
        if slot < MAX_LAG_SAMPLES:
            self.samples[slot] = lag


class _MeasuredBalances(Balances):
    """`Balances`, plus a lag sample per applied event. Instrumentation of the load
    test: it reads the clock, which a read model proper never does."""

    def __init__(self, sampler: _LagSampler) -> None:
        self.sampler = sampler

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        view = super().apply(view, recorded)
        self.sampler.observe(recorded)
        return view


class _AckLog:
    """One `os.write` per acknowledged command on an O_APPEND descriptor."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, stream_id: str, version: int, position: int) -> None:
        os.write(self.fd, f"{stream_id}\t{version}\t{position}\n".encode())

    def close(self) -> None:
        os.close(self.fd)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
