"""Several OS processes on one PostgreSQL schema, each with its own `open_store(url)`:
they append to the same streams at once (expected versions, retrying on conflicts)
while this process reads `read_all` from where it stopped; then a writer is killed with
SIGKILL mid-append. Nothing acknowledged is lost, nothing is stored in part, versions
and positions stay gap-free, and readers see positions in commit order.

The children are `tests/store/_pg_child_writer.py`; the server is the test server (see
tests/_postgres.py), the schema this test's own.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from store import ANY, RecordedEvent, open_store
from store._postgres import open_postgres_store
from tests.store._events import Noted, make_registry

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class _Child:
    """A writer process and the JSON lines it printed (read as they come)."""

    def __init__(self, name: str, process: anyio.abc.Process) -> None:
        self.name = name
        self.process = process
        self.acks: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.ready = anyio.Event()
        self.busy = anyio.Event()  # set at its 20th acknowledgement

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                record = json.loads(line)
                if "ready" in record:
                    self.ready.set()
                elif "summary" in record:
                    self.summary = record
                else:
                    self.acks.append(record)
                    if len(self.acks) >= 20:
                        self.busy.set()
        # a line cut by SIGKILL (no newline) is not an acknowledgement: ignored


async def _start(tg: anyio.abc.TaskGroup, url: str, name: str, seconds: float, seed: int) -> _Child:
    command = [sys.executable, "-m", "tests.store._pg_child_writer", url, name, str(seconds)]
    process = await anyio.open_process([*command, str(seed)], cwd=REPO_ROOT, stderr=None)
    child = _Child(name, process)
    tg.start_soon(child.read)
    return child


async def _everything(url: str) -> list[RecordedEvent]:
    async with open_store(url, registry=make_registry()) as store:
        events: list[RecordedEvent] = []
        while page := await store.read_all(from_position=len(events) + 1, limit=1000):
            events.extend(page)
        return events


def _check_log(events: list[RecordedEvent], children: list[_Child]) -> None:
    """Positions 1..N, versions 1..n per stream, every append stored whole or not at
    all, and every acknowledged append stored where its acknowledgement said."""
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    by_stream: dict[str, list[int]] = defaultdict(list)
    by_command: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in events:
        by_stream[event.stream_id].append(event.version)
        assert event.command_id is not None
        by_command[event.command_id].append(event)
    for stream_id, versions in by_stream.items():
        assert versions == list(range(1, len(versions) + 1)), stream_id
    for command_id, stored in by_command.items():  # all or nothing, together, in order
        assert isinstance(stored[0].event, Noted)
        count = int(stored[0].event.text.rsplit("/", 1)[1])
        assert [e.event for e in stored] == [
            Noted(f"{command_id}#{i}/{count}") for i in range(count)
        ], command_id
        assert [e.position for e in stored] == list(
            range(stored[0].position, stored[0].position + count)
        )
        assert len({e.stream_id for e in stored}) == 1
    for child in children:
        for ack in child.acks:
            found = by_command.get(ack["cmd"])
            assert found is not None, f"acknowledged {ack['cmd']} is not stored"
            assert [e.event for e in found] == [Noted(m) for m in ack["markers"]]
            assert found[0].stream_id == ack["stream"]
            assert found[0].version == ack["first_version"]
            assert found[0].position == ack["first_position"]


async def test_four_processes_append_to_shared_streams_and_a_reader_follows(
    postgres_url: str,
) -> None:
    seen: list[int] = []  # positions in the order the reader first saw them

    async def follow(stop: anyio.Event) -> None:
        async with open_store(postgres_url, registry=make_registry()) as store:
            last = 0
            while True:
                done = stop.is_set()  # one more read after the writers ended
                page = await store.read_all(from_position=last + 1, limit=500)
                positions = [e.position for e in page]
                # commit order: never a position at or below one seen, never a hole
                assert positions == list(range(last + 1, last + 1 + len(positions)))
                seen.extend(positions)
                if positions:
                    last = positions[-1]
                elif done:
                    return
                else:
                    await anyio.sleep(0.002)

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            children = [
                await _start(tg, postgres_url, f"p{i}", seconds=2.0, seed=i) for i in range(4)
            ]
            stop = anyio.Event()
            tg.start_soon(follow, stop)
            for child in children:
                assert await child.process.wait() == 0, f"{child.name} failed"
            stop.set()

    for child in children:
        assert child.summary is not None, child.name
        assert child.summary["errors"] == {}, f"{child.name}: {child.summary['errors']}"
        assert child.acks, f"{child.name} appended nothing"
    conflicts = sum(child.summary["conflicts"] for child in children if child.summary)
    events = await _everything(postgres_url)
    _check_log(events, children)
    # nothing stored that was not acknowledged (no append here had an unknown outcome)
    acked = {ack["cmd"] for child in children for ack in child.acks}
    assert {e.command_id for e in events} == acked
    assert seen == list(range(1, len(events) + 1))
    assert conflicts > 0, "the processes never contended: the test proves little"
    print(f"{len(events)} events, {len(acked)} appends, {conflicts} conflicts, {len(seen)} read")


async def test_a_writer_killed_mid_append_leaves_no_partial_append(postgres_url: str) -> None:
    rng = random.Random()
    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            survivor = await _start(tg, postgres_url, "alive", seconds=2.5, seed=1)
            victim = await _start(tg, postgres_url, "victim", seconds=0, seed=2)
            await victim.ready.wait()
            await victim.busy.wait()  # well into its appends
            await anyio.sleep(rng.uniform(0, 0.3))
            victim.process.send_signal(signal.SIGKILL)
            assert await victim.process.wait() == -signal.SIGKILL
            assert await survivor.process.wait() == 0
    assert survivor.summary is not None
    assert survivor.summary["errors"] == {}
    assert victim.summary is None  # it was killed, not ended

    events = await _everything(postgres_url)
    _check_log(events, [survivor, victim])
    # the survivor's appends all had a known outcome: each stored one was acknowledged
    stored = {e.command_id for e in events}
    assert {c for c in stored if c and c.startswith("alive-")} == {
        ack["cmd"] for ack in survivor.acks
    }
    # at most the victim's last in-flight appends are stored unacknowledged
    unacked = {c for c in stored if c and c.startswith("victim-")} - {
        ack["cmd"] for ack in victim.acks
    }
    assert len(unacked) <= 4  # one per task of the victim
    print(f"victim: {len(victim.acks)} acknowledged, {len(unacked)} stored unacknowledged")

    # a new process opens the store and appends after the kill
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            after = await _start(tg, postgres_url, "after", seconds=0.5, seed=3)
            assert await after.process.wait() == 0
    assert after.summary is not None
    assert after.summary["errors"] == {}
    assert after.acks
    events = await _everything(postgres_url)
    _check_log(events, [survivor, victim, after])
    async with open_postgres_store(postgres_url, registry=make_registry()) as store:
        result = await store.append("shared-0", [Noted("last")], expected_version=ANY)
        assert result.last_position == len(events) + 1
