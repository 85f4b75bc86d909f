"""A child process for the two-process test: increments one hot counter (and its own
cold ones) through the actor runtime, then prints one JSON summary line."""

from __future__ import annotations

import json
import sys
from collections import Counter as Tally

import anyio

from actors import TooManyAttempts, open_system
from tests.actors.domain import Counter, Increment

CLIENTS = 8
PER_CLIENT = 60


async def main(path: str, name: str) -> None:
    acked = 0
    gave_up = 0
    errors: Tally[str] = Tally()
    async with open_system(path, max_attempts=50) as system:
        counters = system.aggregates(Counter)

        async def client(index: int) -> None:
            nonlocal acked, gave_up
            for n in range(PER_CLIENT):
                try:
                    await counters.ask("hot", Increment(by=1, tag=f"{name}-{index}-{n}"))
                    await counters.ask(f"cold-{name}-{index}", Increment(by=1))
                except TooManyAttempts:
                    gave_up += 1
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
                    errors[f"{type(exc).__name__}: {exc}"] += 1
                else:
                    acked += 1

        # start together with the other process: say ready, wait for the go
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as tg:
            for index in range(CLIENTS):
                tg.start_soon(client, index)
        stats = system.statistics()
    summary = {
        "acked": acked,
        "gave_up": gave_up,
        "conflicts": stats.conflicts,
        "redecisions": stats.redecisions,
        "errors": dict(errors),
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
