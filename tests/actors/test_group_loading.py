"""Group loading: the actors loading at the same moment read their streams together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from actors import RecoveryError, open_system
from store import ANY, EventStore, RecordedEvent, StoreUnavailable, open_store
from tests.actors.domain import Counter, Incremented
from tests.actors.support import _Wrapper


class CountingGroupStore(_Wrapper):
    """Counts single and group reads (its class has `read_streams`, so it is used);
    with `fail_groups`, every group read fails as a whole."""

    def __init__(self, inner: EventStore, *, fail_groups: bool = False) -> None:
        super().__init__(inner)
        self.fail_groups = fail_groups
        self.groups: list[list[str]] = []
        self.singles: list[str] = []

    async def read_streams(self, starts: Sequence[tuple[str, int]], *, limit: int) -> Any:
        self.groups.append([stream_id for stream_id, _ in starts])
        if self.fail_groups:
            raise StoreUnavailable("the group read failed")
        return await self.inner.read_streams(starts, limit=limit)  # type: ignore[attr-defined]

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        self.singles.append(stream_id)
        return await self.inner.read_stream(stream_id, **kw)


async def _fill(store: EventStore, count: int) -> None:
    """Stream `counter-n` gets n events (n = 0..count-1): some longer than a page."""
    for n in range(count):
        for k in range(n % 9):
            await store.append(
                Counter.stream_id(str(n)), [Incremented(by=k + 1)], expected_version=ANY
            )


async def test_loads_at_the_same_moment_share_reads_and_give_the_single_state(
    store_path: str,
) -> None:
    count = 40
    # Reads that wait (on the reader thread, or over the network) group; a SQLite file's
    # loop reads finish at once, so each goes alone (tests/store/test_loop_reads.py).
    async with open_store(store_path, loop_reads=False) as inner:
        inner.registry.register(Incremented)
        await _fill(inner, count)
        store = CountingGroupStore(inner)
        async with open_system(store.as_store(), load_page_size=4) as system:
            router = system.aggregates(Counter)
            states: dict[str, Any] = {}

            async def load(name: str) -> None:
                states[name] = await router.state(name)

            async with anyio.create_task_group() as tg:
                for n in range(count):
                    tg.start_soon(load, str(n))
            for n in range(count):
                assert states[str(n)] == await router.state_at(str(n))  # a fold alone
                assert states[str(n)].count == n % 9
    loaded = [stream_id for group in store.groups for stream_id in group]
    assert sorted(loaded) == sorted(Counter.stream_id(str(n)) for n in range(count))
    assert len(store.groups) < count // 4  # grouped: far fewer reads than loads
    # Only streams longer than a page (8 events, page 4) read on alone, from version 5.
    long_ones = {Counter.stream_id(str(n)) for n in range(count) if n % 9 >= 4}
    assert {s for s in store.singles if s in long_ones} == long_ones


async def test_a_failed_group_read_lets_each_load_read_alone(store_path: str) -> None:
    async with open_store(store_path) as inner:
        inner.registry.register(Incremented)
        await _fill(inner, 12)
        store = CountingGroupStore(inner, fail_groups=True)
        async with open_system(store.as_store()) as system:
            router = system.aggregates(Counter)
            counts: dict[int, int] = {}

            async def load(n: int) -> None:
                counts[n] = (await router.state(str(n))).count

            async with anyio.create_task_group() as tg:
                for n in range(12):
                    tg.start_soon(load, n)
    assert counts == {n: n % 9 for n in range(12)}
    assert store.groups  # tried together, then each alone
    assert sorted(store.singles) == sorted(Counter.stream_id(str(n)) for n in range(12))


class Alien(msgspec.Struct, frozen=True, tag="test.alien"):
    """An event type the system reading the stream does not know."""


@pytest.mark.parametrize("loop_reads", [False, True])
async def test_a_stream_that_cannot_be_decoded_fails_only_its_actor(
    durable_target: str, loop_reads: bool
) -> None:
    async with open_store(durable_target) as writer:
        writer.registry.register(Incremented, Alien)
        await _fill(writer, 10)
        await writer.append(
            Counter.stream_id("bad"), [Incremented(by=1), Alien()], expected_version=ANY
        )
    async with open_store(durable_target, loop_reads=loop_reads) as inner:
        store = CountingGroupStore(inner)
        async with open_system(store.as_store()) as system:
            router = system.aggregates(Counter)
            outcome: dict[str, Any] = {}

            async def load(name: str) -> None:
                try:
                    outcome[name] = (await router.state(name)).count
                except RecoveryError as exc:
                    outcome[name] = exc

            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(load, str(n))
                    if n == 0:  # the first load reads alone; "bad" goes with the others
                        tg.start_soon(load, "bad")
            error = outcome.pop("bad")
            assert isinstance(error, RecoveryError)
            assert error.stream_id == Counter.stream_id("bad")
            assert error.version == 2
            assert outcome == {str(n): n % 9 for n in range(10)}
            # The others stay live and keep taking commands.
            assert (await router.state("3")).count == 3
    assert any(Counter.stream_id("bad") in group for group in store.groups)
    if not loop_reads or "postgresql" in durable_target:  # else each read alone
        assert any(Counter.stream_id("bad") in g and len(g) > 1 for g in store.groups)
