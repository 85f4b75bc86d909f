"""A child of OCC-2: a full actor system on a shared file, incrementing 10 hot and many
cold counters from several clients; prints "ready", waits for "go" on stdin, then one
JSON summary: acknowledged increments per counter, errors by type, commands that gave up.

    python -m tests.reliability._occ_child DB NAME COMMANDS [--broken plain-begin]

`--broken plain-begin` is the control: write transactions open with a deferred `BEGIN`
and upgrade to a write lock at the first insert, which SQLite refuses at once
(SQLITE_BUSY) instead of waiting when another connection wrote meanwhile.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter as Tally

import anyio

from actors import TooManyAttempts, open_system
from tests.actors.domain import Counter, Increment
from tests.reliability._broken import deferred_begin

CLIENTS = 16
HOT = 10
COLD = 1_000


async def main(path: str, name: str, commands: int, broken: bool) -> None:
    if broken:
        deferred_begin()
    acked: Tally[str] = Tally()
    errors: Tally[str] = Tally()
    gave_up = 0
    async with open_system(path, max_attempts=5, busy_timeout=5.0) as system:
        counters = system.aggregates(Counter)

        async def client(index: int) -> None:
            nonlocal gave_up
            rng = random.Random(f"{name}-{index}")
            for n in range(commands // CLIENTS):
                target = f"hot-{rng.randrange(HOT)}" if n % 2 else f"cold-{rng.randrange(COLD)}"
                try:
                    await counters.ask(target, Increment(by=1, tag=f"{name}-{index}-{n}"))
                except TooManyAttempts:
                    gave_up += 1
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which checks
                    errors[type(exc).__name__] += 1
                else:
                    acked[target] += 1

        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as tg:
            for index in range(CLIENTS):
                tg.start_soon(client, index)
        stats = system.statistics()
    summary = {
        "acked": acked,
        "errors": errors,
        "gave_up": gave_up,
        "conflicts": stats.conflicts,
        "redecisions": stats.redecisions,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), "--broken" in sys.argv)
