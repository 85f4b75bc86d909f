"""A writer process for the multi-process store test.

Run as `python -m tests.store._child_writer PATH NAME SECONDS SEED`: several tasks
append to a few streams shared with the other process for SECONDS, reading each
stream's version and retrying on ConcurrencyError. Prints one JSON line per
acknowledged append, then a summary line with the conflicts and every other error.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import anyio

from store import ConcurrencyError, SQLiteEventStore, open_store
from tests.store._events import Noted, make_registry

STREAMS = ("shared-0", "shared-1", "shared-2", "shared-3")
TASKS = 4


async def main(path: str, name: str, seconds: float, seed: int) -> None:
    errors: Counter[str] = Counter()
    conflicts = 0
    lines: list[str] = []

    async def work(task: int, store: SQLiteEventStore, deadline: float) -> None:
        nonlocal conflicts
        rng = random.Random(seed * 100 + task)
        n = 0
        while anyio.current_time() < deadline:
            stream_id = rng.choice(STREAMS)
            markers = [f"{name}-{task}-{n + i}" for i in range(rng.choice((1, 1, 2)))]
            try:
                version = await store.stream_version(stream_id)
                result = await store.append(
                    stream_id, [Noted(m) for m in markers], expected_version=version
                )
            except ConcurrencyError:
                conflicts += 1
                continue
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
                errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            n += len(markers)
            record = {
                "stream_id": result.stream_id,
                "first_version": result.first_version,
                "first_position": result.first_position,
                "markers": markers,
            }
            lines.append(json.dumps(record))

    try:
        async with open_store(path, registry=make_registry()) as store:
            deadline = anyio.current_time() + seconds
            async with anyio.create_task_group() as tg:
                for task in range(TASKS):
                    tg.start_soon(work, task, store, deadline)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
        errors[f"{type(exc).__name__}: {exc}"] += 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    summary = {"summary": True, "conflicts": conflicts, "errors": dict(errors)}
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
