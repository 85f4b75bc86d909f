"""A busy process manager shared by several processes: partitions, side by side.

The parent writes a backlog of events to a SQLite file (one `Ping` on each of many
streams), then starts W worker processes that each run the same process manager
(`Echo`: one `Pong` command per ping, to an aggregate of its own) with P partitions,
and times how long the workers take until every partition's checkpoint has passed
the backlog. With one worker and one partition a single process does all the work;
with two workers and P > 1 each leases about half of the partitions and runs them.
Setups alternate within each round so every one sees the machine at nearly the same
moment; the table gives events per second, the medians, the ratio of each setup's
median to the first one's, and the workers' CPU per event.

    python -m bench.sagas --events 6000 --runs 5 --setups 1x1 2x4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from actors import (
    Aggregate,
    Command,
    Dispatch,
    Event,
    ProcessManager,
    ProcessManagerOptions,
    open_system,
)
from store import RecordedEvent, open_store

_LEASE_TTL = 1.0


class Ping(Command, tag="bench.sagas.ping"):
    pass


class Pong(Command, tag="bench.sagas.pong"):
    position: int


class Pinged(Event, tag="bench.sagas.pinged"):
    pass


class Ponged(Event, tag="bench.sagas.ponged"):
    position: int


class Ball(Aggregate[int, Ping | Pong, Pinged | Ponged]):
    """A counter of pings and pongs: every command is one event."""

    category = "ball"
    initial = 0

    def decide(self, state: int, command: Ping | Pong) -> list[Pinged | Ponged]:
        if isinstance(command, Ping):
            return [Pinged()]
        return [Ponged(position=command.position)]

    def evolve(self, state: int, event: Pinged | Ponged) -> int:
        return state + 1


class Echo(ProcessManager):
    """Answers every ping on `ball-<n>` with a pong on `ball-echo-<n>`."""

    name = "bench-echo"
    event_types = (Pinged,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        target = "echo-" + recorded.stream_id.removeprefix("ball-")
        return [Dispatch(Ball, target, Pong(position=recorded.position))]


@dataclass(frozen=True)
class Setup:
    workers: int
    partitions: int

    @property
    def label(self) -> str:
        return f"{self.workers}x{self.partitions}"


def _setup(text: str) -> Setup:
    try:
        workers, partitions = (int(part) for part in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setup is WORKERSxPARTITIONS, not {text!r}") from None
    if not 1 <= workers <= 16 or not 1 <= partitions <= 64:
        raise argparse.ArgumentTypeError(f"workers 1-16, partitions 1-64, not {text!r}")
    return Setup(workers, partitions)


async def _backlog(path: str, events: int, streams: int) -> int:
    """Write `events` pings over `streams` streams; the last position."""
    async with open_system(path, follow=False) as system:
        balls = system.aggregates(Ball)
        last = 0

        async def writer(offset: int) -> None:
            nonlocal last
            for n in range(offset, events, 50):
                result = await balls.ask(f"{n % streams}", Ping())
                last = max(last, result.position)

        async with anyio.create_task_group() as tg:
            for offset in range(50):
                tg.start_soon(writer, offset)
    return last


async def _checkpoints_past(path: str, partitions: int, target: int) -> None:
    names = (
        ["process:bench-echo"]
        if partitions == 1
        else [f"process:bench-echo#{i}/{partitions}" for i in range(partitions)]
    )
    async with open_store(path) as store:
        while True:
            positions = [await store.load_checkpoint(name) for name in names]
            if min(positions) >= target:
                return
            await anyio.sleep(0.01)


async def _round(setup: Setup, events: int, streams: int) -> tuple[float, float]:
    """One timed run of `setup`: (events per second, worker CPU seconds per event)."""
    with tempfile.TemporaryDirectory(prefix="esactors-sagas-") as folder:
        path = str(Path(folder) / "sagas.db")
        target = await _backlog(path, events, streams)
        command = [sys.executable, "-m", "bench.sagas", "--worker", path, str(setup.partitions)]
        async with anyio.create_task_group() as tg:
            children = [await anyio.open_process(command) for _ in range(setup.workers)]
            try:
                for child in children:  # each ready: holding its share, or standing by
                    assert child.stdout is not None
                    await _line(child.stdout)
                began = time.perf_counter()
                for child in children:
                    assert child.stdin is not None
                    await child.stdin.send(b"go\n")
                with anyio.fail_after(600):
                    await _checkpoints_past(path, setup.partitions, target)
                seconds = time.perf_counter() - began
                cpu = 0.0
                for child in children:
                    assert child.stdin is not None
                    assert child.stdout is not None
                    await child.stdin.send(b"stop\n")
                    cpu += float(json.loads(await _line(child.stdout))["cpu"])
                    await child.wait()
            finally:
                for child in children:
                    if child.returncode is None:
                        child.kill()
                    await child.aclose()
            tg.cancel_scope.cancel()
    return events / seconds, cpu / events


async def _line(stream: Any) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive()
        if not chunk:
            raise RuntimeError("a worker ended early")
        data += chunk
    return data.decode().strip()


async def _worker(path: str, partitions: int) -> None:
    """A worker: waits for "go", runs `Echo`, prints its CPU time on "stop"."""
    stdin = anyio.wrap_file(sys.stdin)
    print("ready", flush=True)
    await stdin.readline()
    cpu = time.process_time()
    async with open_system(path) as system:
        system.aggregates(Ball)
        options = ProcessManagerOptions(partitions=partitions, lease_ttl=_LEASE_TTL)
        await system.run_process_manager(Echo(), options=options)
        await stdin.readline()
    print(json.dumps({"cpu": time.process_time() - cpu}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sagas", description=__doc__)
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--setups", type=_setup, nargs="+", default=[Setup(1, 1), Setup(2, 4)])
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "PARTITIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        anyio.run(_worker, args.worker[0], int(args.worker[1]))
        return
    setups: list[Setup] = args.setups
    print(
        f"# a process manager over a backlog of {args.events:,} events on {args.streams}"
        f" streams, one command each; SQLite file, synchronous=FULL; {os.cpu_count()} cores;"
        f" setups WORKERSxPARTITIONS, alternating, {args.runs} rounds"
    )
    rates: dict[str, list[float]] = {s.label: [] for s in setups}
    cpus: dict[str, list[float]] = {s.label: [] for s in setups}
    for run in range(1, args.runs + 1):
        row = []
        for setup in setups:
            rate, cpu = anyio.run(_round, setup, args.events, args.streams)
            rates[setup.label].append(rate)
            cpus[setup.label].append(cpu)
            row.append(f"{setup.label} {rate:,.0f}/s")
        print(f"round {run}: " + ", ".join(row))
    first = statistics.median(rates[setups[0].label])
    print(f"{'setup':>6} {'events/s (median)':>18} {'x first':>8} {'CPU us/event':>13}")
    for setup in setups:
        median = statistics.median(rates[setup.label])
        cpu_us = statistics.median(cpus[setup.label]) * 1e6
        print(f"{setup.label:>6} {median:>18,.0f} {median / first:>8.2f} {cpu_us:>13.0f}")


if __name__ == "__main__":
    main()
