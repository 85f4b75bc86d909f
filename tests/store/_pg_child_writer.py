"""A writer process for the PostgreSQL multi-process tests.

Run as `python -m tests.store._pg_child_writer URL NAME SECONDS SEED`: opens its own
store on URL, prints `{"ready": true}`, then several tasks append to streams shared with
the other processes for SECONDS (0: until killed), each append of 1 to 3 events with a
command id, at the stream's version as just read, retrying on ConcurrencyError (with a
new read and a new command id). Stdout carries one JSON line per acknowledged append,
flushed at once (so every line the parent read survives a SIGKILL):

    {"cmd": id, "stream": s, "first_version": v, "first_position": p, "markers": [...]}

and at a clean end a summary line with the conflicts and every other error. Each event
is `Noted("<cmd>#<i>/<n>")`: the i-th of the n events of the append `cmd`.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import anyio

from store import ConcurrencyError, SQLiteEventStore, open_store
from tests.store._events import Noted, make_registry

STREAMS = ("shared-0", "shared-1", "shared-2", "shared-3", "shared-4", "shared-5")
TASKS = 4


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main(url: str, name: str, seconds: float, seed: int) -> None:
    errors: Counter[str] = Counter()
    conflicts = 0

    async def work(task: int, store: SQLiteEventStore, deadline: float | None) -> None:
        nonlocal conflicts
        rng = random.Random(seed * 100 + task)
        n = 0
        while deadline is None or anyio.current_time() < deadline:
            n += 1
            stream_id = rng.choice(STREAMS)
            cmd = f"{name}-{task}-{n}"
            count = rng.choice((1, 1, 2, 3))
            markers = [f"{cmd}#{i}/{count}" for i in range(count)]
            try:
                version = await store.stream_version(stream_id)
                result = await store.append(
                    stream_id, [Noted(m) for m in markers], expected_version=version, command_id=cmd
                )
            except ConcurrencyError:
                conflicts += 1
                continue
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
                errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            emit(
                {
                    "cmd": cmd,
                    "stream": result.stream_id,
                    "first_version": result.first_version,
                    "first_position": result.first_position,
                    "markers": markers,
                }
            )

    try:
        async with open_store(url, registry=make_registry()) as store:
            emit({"ready": True})
            deadline = anyio.current_time() + seconds if seconds > 0 else None
            async with anyio.create_task_group() as tg:
                for task in range(TASKS):
                    tg.start_soon(work, task, store, deadline)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
        errors[f"{type(exc).__name__}: {exc}"] += 1
    emit({"summary": True, "conflicts": conflicts, "errors": dict(errors)})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
