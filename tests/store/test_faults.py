"""The fault-point hook: its spec grammar, its selectors and what each action does, in
the store's write path and in a child process that `exit` kills."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import EventRegistry, StoreError, faults, open_store
from tests.store._events import Deposited

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clear_faults() -> Iterator[None]:
    yield
    faults.configure(None)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nowhere:exit:1", "unknown point 'nowhere'"),
        ("before_begin:explode:1", "unknown action 'explode'"),
        ("before_begin:exit", "point:action[:argument]:selector"),
        ("before_begin:delay:1", "delay needs milliseconds"),
        ("before_begin:delay:9-1:1", "bad delay range"),
        ("before_begin:raise:5:1", "takes no argument"),
        ("before_begin:raise:p1.5", "probability must be in [0, 1]"),
        ("before_begin:raise:0", "hits count from 1"),
    ],
)
def test_a_bad_spec_is_refused_with_what_was_wrong(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        faults.configure(spec)
    assert not faults.enabled


def test_selectors_pick_the_nth_hit_every_hit_from_n_or_every_hit() -> None:
    faults.configure("bus_deliver:dup:3,projection_apply:dup:2+,after_begin:dup:*")
    assert [faults.hit("bus_deliver") for _ in range(5)] == [None, None, "dup", None, None]
    assert [faults.hit("projection_apply") for _ in range(4)] == [None, "dup", "dup", "dup"]
    assert [faults.hit("after_begin") for _ in range(2)] == ["dup", "dup"]
    assert faults.hits("bus_deliver") == 5
    assert faults.hit("before_begin") is None  # no rule: nothing happens


def test_a_probability_selector_is_seeded() -> None:
    faults.configure("bus_deliver:reorder:p0.5", seed=7)
    first = [faults.hit("bus_deliver") for _ in range(200)]
    faults.configure("bus_deliver:reorder:p0.5", seed=7)
    assert [faults.hit("bus_deliver") for _ in range(200)] == first
    assert 50 < first.count("reorder") < 150


async def test_raise_before_commit_writes_nothing_and_the_store_goes_on(tmp_path: Path) -> None:
    registry = EventRegistry([Deposited])
    async with open_store(tmp_path / "f.db", registry=registry) as store:
        await store.append("acc-1", [Deposited(amount=1)], expected_version=0)
        faults.configure("after_insert_before_commit:raise:1")
        with pytest.raises(StoreError, match="fault injected at 'after_insert_before_commit'"):
            await store.append("acc-1", [Deposited(amount=2)], expected_version=1)
        assert await store.stream_version("acc-1") == 1
        result = await store.append("acc-1", [Deposited(amount=3)], expected_version=1)
        assert result.last_version == 2
        assert [e.event for e in await store.read_stream("acc-1")] == [
            Deposited(amount=1),
            Deposited(amount=3),
        ]


CHILD = """
import anyio, sys
from store import EventRegistry, open_store
from tests.store._events import Deposited

async def main() -> None:
    async with open_store(sys.argv[1], registry=EventRegistry([Deposited])) as store:
        for n in range(1, 11):
            await store.append("acc-1", [Deposited(amount=n)], expected_version=n - 1)
            print(n, flush=True)

anyio.run(main)
"""


@pytest.mark.parametrize(
    ("point", "stored"),
    [("after_insert_before_commit", 3), ("after_commit_before_reply", 4)],
)
def test_exit_kills_the_process_at_the_point(tmp_path: Path, point: str, stored: int) -> None:
    db = tmp_path / "child.db"
    env = {**os.environ, faults.ENV: f"{point}:exit:4"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == faults.EXIT_CODE, done.stderr
    assert done.stdout.split() == ["1", "2", "3"]  # the fourth was never acknowledged
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    assert count == stored  # before commit: lost unacknowledged; after: stored unacked
