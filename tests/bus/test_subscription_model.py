"""Random interleavings of appends and a subscriber: exactly once, in order, filtered."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import open_bus
from store import ANY, RecordedEvent, open_store
from tests._events import Deposited, Opened, Withdrawn, registry
from tests._postgres import fresh_schema, url_with_schema

EVENTS = (Opened("x"), Deposited(1), Withdrawn(1))
TAGS = ("test.opened", "test.deposited", "test.withdrawn")


@dataclass(frozen=True)
class Append:
    stream: str
    kinds: tuple[int, ...]


@dataclass(frozen=True)
class Take:
    batches: int


@dataclass(frozen=True)
class Nudge:
    pass


steps = st.lists(
    st.one_of(
        st.builds(
            Append,
            st.sampled_from(["a-1", "a-2", "b-1"]),
            st.lists(st.integers(0, 2), min_size=1, max_size=6).map(tuple),
        ),
        st.builds(Take, st.integers(1, 3)),
        st.just(Nudge()),
    ),
    max_size=30,
)


scripts = {
    "script": steps,
    "queue_size": st.integers(1, 6),
    "types": st.none() | st.sets(st.sampled_from(TAGS)).map(sorted),
    "prefix": st.sampled_from([None, "a-", "b-"]),
    "page": st.integers(1, 4),
    "start": st.integers(0, 4),
    "preload": st.integers(0, 6),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**scripts)
async def test_any_interleaving_delivers_each_wanted_position_once_in_order(
    script: list[Append | Take | Nudge],
    queue_size: int,
    types: list[str] | None,
    prefix: str | None,
    page: int,
    start: int,
    preload: int,
) -> None:
    await run_script(":memory:", script, queue_size, types, prefix, page, start, preload)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**scripts)
async def test_any_interleaving_on_postgresql_delivers_each_wanted_position_once_in_order(
    script: list[Append | Take | Nudge],
    queue_size: int,
    types: list[str] | None,
    prefix: str | None,
    page: int,
    start: int,
    preload: int,
) -> None:
    """The same on the PostgreSQL store (reads on pooled connections of their own), in a
    fresh schema per example; fewer examples, each costs a schema."""
    async for schema in fresh_schema():
        url = url_with_schema(schema)
        await run_script(url, script, queue_size, types, prefix, page, start, preload)


async def run_script(
    target: str,
    script: list[Append | Take | Nudge],
    queue_size: int,
    types: list[str] | None,
    prefix: str | None,
    page: int,
    start: int,
    preload: int,
) -> None:
    async with (
        open_store(target, registry=registry()) as store,
        open_bus(store, catch_up_page=page) as bus,
    ):
        for n in range(preload):
            await store.append(f"a-{n % 2}", [EVENTS[n % 3]], expected_version=ANY)
        got: list[RecordedEvent] = []
        async with bus.subscribe(
            from_position=start, event_types=types, stream_prefix=prefix, queue_size=queue_size
        ) as subscription:
            with anyio.fail_after(10):
                for step in script:
                    if isinstance(step, Append):
                        await store.append(
                            step.stream, [EVENTS[k] for k in step.kinds], expected_version=ANY
                        )
                    elif isinstance(step, Nudge):
                        subscription.nudge()
                    else:
                        for _ in range(step.batches):
                            if subscription.position >= bus.head:
                                break  # nothing to wait for
                            before = subscription.position
                            batch = await subscription.next_batch()
                            assert batch.position > before  # every batch makes progress
                            got.extend(batch.events)
                head = await store.last_position()
                while subscription.position < head:
                    got.extend((await subscription.next_batch()).events)
            stats = subscription.statistics()
        wanted = [
            e
            for e in await store.read_all(from_position=start, limit=None)
            if (types is None or e.event_type in types)
            and (prefix is None or e.stream_id.startswith(prefix))
        ]
    assert got == wanted
    assert stats.position == max(head, start - 1)
    assert stats.delivered == len(wanted)
