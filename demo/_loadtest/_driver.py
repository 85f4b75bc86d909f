"""The driver: workers keeping commands in flight, counting answers and latencies."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import msgspec

from actors import Command, CommandResult, Rejected
from demo._distribution import picker
from demo._loadtest._instruments import _AckLog
from demo._loadtest._options import LoadOptions
from demo._loadtest._report import Percentiles
from demo._loadtest._timeline import _Timeline
from demo._workloads import (
    BankWorkload,
    DepositWorkload,
    Router,
    ShopWorkload,
    Step,
    Workload,
)

__all__: list[str] = []


MAX_LATENCY_SAMPLES = 1_000_000
"""Latencies kept for a run's percentiles: every one up to this many, then a uniform
reservoir sample of that size, so a long run's memory stays bounded (about 32 MB). The
longest is kept apart."""


@dataclass
class _Counters:
    issued: int = 0
    acknowledged: int = 0
    rejected: int = 0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # ms, see MAX_LATENCY_SAMPLES
    longest: float = 0.0  # ms
    sampling: random.Random = field(default_factory=lambda: random.Random(0))

    def latency_percentiles(self) -> Percentiles:
        """The percentiles of the latencies kept, with the longest of all as the max."""
        found = Percentiles.of(self.latencies)
        if not self.latencies:
            return found
        return msgspec.structs.replace(found, max=round(self.longest, 3))


def _workload(options: LoadOptions) -> Workload:
    count = max(options.aggregates, 2) if options.mix == "bank" else options.aggregates
    share = options.account_share
    if share is not None:  # a worker with accounts of its own: draws among them
        count = len(range(share[0], options.aggregates, share[1]))
    hot = options.seed if options.zipf_seed is None else options.zipf_seed
    pick = picker(count, options.distribution, options.zipf_exponent, hot)
    if options.mix == "bank":
        return BankWorkload(options.aggregates, options.seed, pick)
    if options.mix == "shop":
        return ShopWorkload(options.aggregates, options.commands, options.seed, pick)
    return DepositWorkload(options.aggregates, pick, share)


class _Run:
    def __init__(
        self,
        options: LoadOptions,
        workload: Workload,
        ack_log: _AckLog | None,
        progress: TextIO | None,
    ) -> None:
        self.options = options
        self.workload = workload
        self.ack_log = ack_log
        self.progress = progress
        self.counters = _Counters()
        self.timeline = _Timeline()
        self.started = 0.0
        self.deadline = math.inf
        self.on_ack: Callable[[str, Command, CommandResult[Any]], None] | None = None
        """Called with (aggregate id, command, result) per acknowledged measured command."""

    async def send(self, router: Router, aggregate_id: str, command: Command) -> None:
        """Send one command of the setup (not measured; counted when refused or failed)."""
        counters = self.counters
        try:
            result = await router.ask(aggregate_id, command)
        except Rejected:
            counters.rejected += 1
            return
        except Exception as error:  # noqa: BLE001 - counted and reported by type
            self._count_error(error)
            return
        if self.ack_log is not None:
            self.ack_log.write(router.stream_id(aggregate_id), result.version, result.position)

    async def send_all(self, steps: list[Step]) -> None:
        """Send `steps` (setup, not measured) with the run's concurrency."""
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(steps):
                router, aggregate_id, command = steps[next_index]
                next_index += 1
                await self.send(router, aggregate_id, command)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.options.concurrency, len(steps))):
                tg.start_soon(worker)

    async def worker(self, index: int) -> None:
        """Send commands one after another until the run's commands are issued or its
        deadline passed: `send`, measured, written out here (one coroutine frame less
        per command: the driver's own cost is part of what the run measures)."""
        options = self.options
        rng = random.Random(f"{options.seed}-{index}")
        step = self.workload.step
        counters = self.counters
        latencies = counters.latencies
        keep = MAX_LATENCY_SAMPLES
        sample = counters.sampling.randrange
        record = self.timeline.record
        clock = time.perf_counter
        limit = math.inf if options.duration is not None else options.commands
        # The deadline is checked after each command, so every client sends at least
        # one even when its task starts late (a loaded machine, a GC pause).
        while counters.issued < limit:
            n = counters.issued
            counters.issued += 1
            router, aggregate_id, command = step(rng, n)
            began = clock()
            try:
                result = await router.ask(aggregate_id, command)
            except Rejected:
                counters.rejected += 1
                now = clock()
                record(now, None)
            except Exception as error:  # noqa: BLE001 - counted and reported by type
                self._count_error(error)
                now = clock()
                record(now, None)
            else:
                if self.ack_log is not None:
                    self.ack_log.write(
                        router.stream_id(aggregate_id), result.version, result.position
                    )
                now = clock()
                latency = (now - began) * 1000.0
                if len(latencies) < keep:
                    latencies.append(latency)
                else:  # a uniform sample of all of them (reservoir)
                    slot = sample(counters.acknowledged + 1)
                    if slot < keep:
                        latencies[slot] = latency
                if latency > counters.longest:  # noqa: PLR1730 - a compare, not a call (per command)
                    counters.longest = latency
                record(now, latency)
                counters.acknowledged += 1
                if self.on_ack is not None:
                    self.on_ack(aggregate_id, command, result)
            if now >= self.deadline:
                break

    def _count_error(self, error: Exception) -> None:
        counters = self.counters
        counters.errors += 1
        name = type(error).__name__
        counters.error_types[name] = counters.error_types.get(name, 0) + 1

    async def load(self) -> float:
        """Start the clock and keep `concurrency` workers sending until the commands are
        sent or the deadline passes (the progress line meanwhile); the seconds it took."""
        self.started = time.perf_counter()
        self.timeline.start(self.started)
        if self.options.duration is not None:
            self.deadline = self.started + self.options.duration
        async with anyio.create_task_group() as workers:
            workers.start_soon(self.report_progress)
            async with anyio.create_task_group() as senders:
                for index in range(self.options.concurrency):
                    senders.start_soon(self.worker, index)
            workers.cancel_scope.cancel()
        seconds = time.perf_counter() - self.started
        if self.progress is not None and self.progress.isatty():
            self.progress.write("\n")
        return seconds

    async def report_progress(self) -> None:
        out = self.progress
        if out is None:
            return
        end = "\r" if out.isatty() else "\n"
        counters = self.counters
        while True:
            await anyio.sleep(self.options.progress_interval)
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            out.write(
                f"progress acked={counters.acknowledged} rejected={counters.rejected}"
                f" errors={counters.errors} elapsed={elapsed:.1f}s"
                f" rate={counters.acknowledged / elapsed:,.0f}/s{end}"
            )
            out.flush()
