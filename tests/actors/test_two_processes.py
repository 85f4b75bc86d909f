"""Two OS processes run the actor runtime on one store (a SQLite file, a PostgreSQL
schema) and hammer one aggregate: each has its own actor for it, so their appends
conflict; the actors reload and retry (or SQLite's writer decides them again), and no
update is lost or applied twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from store import open_store
from tests.actors.domain import Counter

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_two_processes_on_one_aggregate_lose_no_update(durable_target: str) -> None:
    path = durable_target
    summaries: dict[str, dict[str, Any]] = {}
    command = [sys.executable, "-m", "tests.actors._child_counter", str(path)]
    with anyio.fail_after(120):
        async with (
            await anyio.open_process([*command, "a"], cwd=REPO_ROOT) as a,
            await anyio.open_process([*command, "b"], cwd=REPO_ROOT) as b,
        ):
            children = {"a": a, "b": b}
            for child in children.values():
                assert child.stdout is not None
                assert await _line(child.stdout) == "ready"
            for child in children.values():  # both are ready: release them at once
                assert child.stdin is not None
                await child.stdin.send(b"go\n")
            for name, child in children.items():
                assert child.stdout is not None
                summaries[name] = json.loads(await _line(child.stdout))
                assert await child.wait() == 0

    for name, summary in summaries.items():
        assert summary["errors"] == {}, f"process {name} saw errors: {summary['errors']}"
    acked = sum(s["acked"] for s in summaries.values())
    assert acked > 0

    async with open_store(path) as store:
        store.registry.register(*Counter.event_types)
        hot = await store.read_stream(Counter.stream_id("hot"))
        cold = [
            await store.read_stream(Counter.stream_id(f"cold-{name}-{index}"))
            for name in ("a", "b")
            for index in range(8)
        ]
    # every acknowledged increment of the hot counter is stored once, in a gapless stream
    assert [e.version for e in hot] == list(range(1, len(hot) + 1))
    tags = [e.event.tag for e in hot]
    assert len(tags) == len(set(tags)), "an increment was applied twice"
    # a command that gave up (TooManyAttempts) wrote nothing
    assert len(hot) == acked
    assert sum(len(c) for c in cold) == acked
    # the retry path really ran: the two processes' actors did race (SQLite's writer
    # decides a command that lost the race again itself; PostgreSQL refuses it)
    raced = "conflicts" if path.startswith("postgresql") else "redecisions"
    assert sum(s[raced] for s in summaries.values()) > 0


async def _line(stream: anyio.abc.ByteReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive()
    return data.decode().strip()
