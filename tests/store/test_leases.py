"""Leases with epochs, and fencing appends and checkpoints with them, on every store kind.

Expiry is made deterministic without sleeping past a deadline: a lease taken with the
smallest ttl (0.01 s) is polled for (another acquire, or `read_leases`) until the store
says it expired, bounded by `fail_after`.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from store import (
    NO_STREAM,
    AppendResult,
    InvalidArgument,
    InvalidLease,
    Lease,
    LeaseLost,
    SQLiteEventStore,
    open_store,
)
from store._options import Writer
from store._postgres_schema import migrate, quote_ident
from store._schema import _V1
from tests._postgres import postgres_connection
from tests.store._events import Deposited, make_registry
from tests.store._helpers import writer_held

SHORT = 0.01  # the smallest ttl: expired a few milliseconds later
LONG = 60.0
WAIT = 10.0  # bound on any polling loop


async def take_when_expired(store: SQLiteEventStore, name: str, owner: str) -> Lease:
    """Acquire `name` for `owner`, polling until the lease held before expires."""
    with anyio.fail_after(WAIT):
        # Polling the store: nothing signals an expiry.
        while (lease := await store.acquire_lease(name, owner, LONG)) is None:  # noqa: ASYNC110
            await anyio.sleep(0.005)
    return lease


async def wait_expired(store: SQLiteEventStore, name: str) -> None:
    """Poll the store until lease `name` has expired (by this host's clock, which is
    the store's: SQLite, or the PostgreSQL server the tests run next to)."""
    with anyio.fail_after(WAIT):
        # Polling the store: nothing signals an expiry.
        while any(lease.expires_at > time.time() for lease in await store.read_leases(name)):  # noqa: ASYNC110
            await anyio.sleep(0.005)


# -- acquire, renew, release --------------------------------------------------------------


async def test_a_free_lease_is_taken_at_epoch_1_and_its_owner_may_take_it_again(
    store: SQLiteEventStore,
) -> None:
    before = time.time()
    lease = await store.acquire_lease("pm.orders", "node-a", LONG)
    assert lease is not None
    assert (lease.name, lease.owner, lease.epoch) == ("pm.orders", "node-a", 1)
    assert before + LONG - 5 < lease.expires_at < time.time() + LONG + 5
    again = await store.acquire_lease("pm.orders", "node-a", LONG)
    assert again is not None
    assert (again.owner, again.epoch) == ("node-a", 1)  # extended, same epoch
    assert again.expires_at >= lease.expires_at
    assert await store.acquire_lease("pm.orders", "node-b", LONG) is None  # held


async def test_an_expired_lease_goes_to_another_owner_at_the_next_epoch(
    store: SQLiteEventStore,
) -> None:
    old = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert old is not None
    new = await take_when_expired(store, "pm.orders", "node-b")
    assert (new.owner, new.epoch) == ("node-b", 2)
    assert await store.renew_lease(old, LONG) is None  # lost
    assert await store.acquire_lease("pm.orders", "node-a", LONG) is None  # node-b holds it
    await store.release_lease(old)  # not held at its epoch: nothing happens
    assert await store.read_leases("pm.orders") == [new]


async def test_its_owner_taking_an_expired_lease_again_gets_the_next_epoch(
    store: SQLiteEventStore,
) -> None:
    first = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert first is not None
    assert first.epoch == 1
    await wait_expired(store, "pm.orders")
    again = await store.acquire_lease("pm.orders", "node-a", LONG)
    assert again is not None
    assert (again.owner, again.epoch) == ("node-a", 2)
    assert await store.renew_lease(first, LONG) is None  # the old epoch is over


async def test_renew_extends_the_lease_at_its_epoch_even_past_expiry_if_nobody_took_it(
    store: SQLiteEventStore,
) -> None:
    lease = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert lease is not None
    await wait_expired(store, "pm.orders")
    renewed = await store.renew_lease(lease, LONG)
    assert renewed is not None
    assert (renewed.owner, renewed.epoch) == ("node-a", 1)
    assert renewed.expires_at > time.time() + LONG - 5
    assert await store.acquire_lease("pm.orders", "node-b", LONG) is None


async def test_a_released_lease_goes_to_the_next_owner_at_the_next_epoch(
    store: SQLiteEventStore,
) -> None:
    lease = await store.acquire_lease("pm.orders", "node-a", LONG)
    assert lease is not None
    await store.release_lease(lease)
    (released,) = await store.read_leases()
    assert (released.owner, released.epoch) == ("node-a", 1)
    assert released.expires_at <= lease.expires_at - LONG + 5
    taken = await store.acquire_lease("pm.orders", "node-b", LONG)
    assert taken is not None
    assert (taken.owner, taken.epoch) == ("node-b", 2)
    assert await store.renew_lease(lease, LONG) is None


async def test_read_leases_by_prefix_in_name_order(store: SQLiteEventStore) -> None:
    names = ["pm.b/2", "pm.a/1", "other", "pm.a/0", "pm.é", "pm.b/10"]
    for i, name in enumerate(names):
        assert await store.acquire_lease(name, f"node-{i}", LONG) is not None
    assert [lease.name for lease in await store.read_leases("pm.")] == sorted(
        n for n in names if n.startswith("pm.")
    )
    assert [lease.name for lease in await store.read_leases("pm.a/")] == ["pm.a/0", "pm.a/1"]
    assert [lease.name for lease in await store.read_leases()] == sorted(names)
    assert await store.read_leases("nothing") == []
    (other,) = await store.read_leases("other")
    assert (other.owner, other.epoch) == ("node-2", 1)


# -- fencing ------------------------------------------------------------------------------


async def test_a_fenced_checkpoint_is_written_only_while_its_lease_is_held(
    store: SQLiteEventStore,
) -> None:
    old = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert old is not None
    await store.save_checkpoint("pm.orders", 5, fence=old)
    assert await store.load_checkpoint("pm.orders") == 5
    new = await take_when_expired(store, "pm.orders", "node-b")
    with pytest.raises(LeaseLost) as caught:
        await store.save_checkpoint("pm.orders", 9, fence=old)
    lost = caught.value
    assert (lost.name, lost.owner, lost.epoch) == ("pm.orders", "node-a", 1)
    assert (lost.holder, lost.holder_epoch) == ("node-b", 2)
    assert "'node-b' at epoch 2" in str(lost)
    assert await store.load_checkpoint("pm.orders") == 5  # unchanged
    await store.save_checkpoint("pm.orders", 7, fence=new)
    assert await store.load_checkpoint("pm.orders") == 7


async def test_a_fenced_write_under_a_lease_the_store_never_had_is_refused(
    store: SQLiteEventStore,
) -> None:
    ghost = Lease("pm.ghost", "node-a", 1, time.time() + LONG)
    with pytest.raises(LeaseLost) as caught:
        await store.save_checkpoint("pm.ghost", 3, fence=ghost)
    assert (caught.value.holder, caught.value.holder_epoch) == (None, None)
    assert "no such lease" in str(caught.value)
    with pytest.raises(LeaseLost):
        await store.append("s", [Deposited(1)], expected_version=NO_STREAM, fence=ghost)
    assert await store.load_checkpoint("pm.ghost") == 0
    assert await store.stream_version("s") == 0


async def test_a_fenced_write_under_an_expired_lease_nobody_took_commits(
    store: SQLiteEventStore,
) -> None:
    lease = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert lease is not None
    await wait_expired(store, "pm.orders")
    await store.save_checkpoint("pm.orders", 4, fence=lease)
    result = await store.append("s", [Deposited(1)], expected_version=NO_STREAM, fence=lease)
    assert result.last_version == 1
    assert await store.load_checkpoint("pm.orders") == 4


async def test_a_stale_fenced_append_fails_alone_in_its_batch(store: SQLiteEventStore) -> None:
    old = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert old is not None
    new = await take_when_expired(store, "pm.orders", "node-b")
    outcomes: dict[int, AppendResult | Exception] = {}
    plan: list[tuple[str, Lease | None]] = [
        ("plain-0", None),
        ("fresh-1", new),
        ("stale-2", old),
        ("plain-3", None),
        ("stale-4", old),
        ("fresh-5", new),
    ]

    async def append(i: int, stream_id: str, fence: Lease | None) -> None:
        try:
            outcomes[i] = await store.append(
                stream_id, [Deposited(i)], expected_version=NO_STREAM, fence=fence
            )
        except LeaseLost as exc:
            outcomes[i] = exc

    batches = store.statistics().batches
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, writer_held(store) as held:
            for i, (stream_id, fence) in enumerate(plan):
                tg.start_soon(append, i, stream_id, fence)
                await anyio.wait_all_tasks_blocked()  # queued in plan order
    assert (store.statistics().batches - batches) in held  # they shared a batch
    for i, (stream_id, fence) in enumerate(plan):
        outcome = outcomes[i]
        if fence is old:
            assert isinstance(outcome, LeaseLost)
            assert (outcome.owner, outcome.epoch, outcome.holder) == ("node-a", 1, "node-b")
            assert await store.stream_version(stream_id) == 0
        else:
            assert isinstance(outcome, AppendResult), outcome
            assert await store.stream_version(stream_id) == 1
    committed = [o for o in outcomes.values() if isinstance(o, AppendResult)]
    assert sorted(o.first_position for o in committed) == list(range(1, 5))  # no gap
    assert store.statistics().rejected == 2


async def test_a_fenced_append_resent_after_the_lease_was_lost_is_a_duplicate(
    store: SQLiteEventStore,
) -> None:
    old = await store.acquire_lease("pm.orders", "node-a", SHORT)
    assert old is not None
    first = await store.append(
        "s", [Deposited(1)], expected_version=NO_STREAM, command_id="cmd-1", fence=old
    )
    await take_when_expired(store, "pm.orders", "node-b")
    again = await store.append(
        "s", [Deposited(1)], expected_version=NO_STREAM, command_id="cmd-1", fence=old
    )
    assert again.duplicate
    assert (again.first_position, again.last_version) == (first.first_position, 1)
    with pytest.raises(LeaseLost):
        await store.append("s", [Deposited(2)], expected_version=1, command_id="cmd-2", fence=old)
    assert await store.stream_version("s") == 1
    assert await store.find_command("cmd-2") is None


# -- arguments ----------------------------------------------------------------------------


LEASE = Lease("pm.orders", "node-a", 1, 0.0)


@pytest.mark.parametrize(
    ("call", "field", "value"),
    [
        ("acquire", "name", ""),
        ("acquire", "name", 5),
        ("acquire", "name", "x" * 257),
        ("acquire", "name", "tab\there"),
        ("acquire", "name", "\ud800"),
        ("acquire", "owner", ""),
        ("acquire", "owner", None),
        ("acquire", "ttl", 0),
        ("acquire", "ttl", 0.001),
        ("acquire", "ttl", 86_400.5),
        ("acquire", "ttl", float("nan")),
        ("acquire", "ttl", float("inf")),
        ("acquire", "ttl", "5"),
        ("acquire", "ttl", True),
        ("renew", "lease", "pm.orders"),
        ("renew", "lease", Lease("pm.orders", "node-a", 0, 0.0)),
        ("renew", "lease", Lease("pm.orders", "", 1, 0.0)),
        ("renew", "ttl", -1),
        ("release", "lease", None),
        ("checkpoint", "fence", "node-a"),
        ("checkpoint", "fence", Lease("", "node-a", 1, 0.0)),
        ("append", "fence", ("pm.orders", "node-a", 1)),
        ("append", "fence", Lease("pm.orders", "node-a", "1", 0.0)),  # type: ignore[arg-type]
        ("read", "prefix", 5),
    ],
)
async def test_bad_lease_arguments_raise_invalid_lease_naming_the_field(
    store: SQLiteEventStore, call: str, field: str, value: object
) -> None:
    v: Any = value

    async def bad_call() -> object:
        if call == "acquire":
            args: dict[str, Any] = {"name": "pm.orders", "owner": "node-a", "ttl": LONG}
            args[field] = v
            return await store.acquire_lease(**args)
        if call == "renew":
            lease = v if field == "lease" else LEASE
            return await store.renew_lease(lease, v if field == "ttl" else LONG)
        if call == "append":
            return await store.append("s", [Deposited(1)], expected_version=NO_STREAM, fence=v)
        if call == "read":
            return await store.read_leases(v)
        if call == "release":
            await store.release_lease(v)
        else:
            await store.save_checkpoint("pm.orders", 1, fence=v)
        return None

    with pytest.raises(InvalidLease) as caught:
        await bad_call()
    error = caught.value
    assert isinstance(error, InvalidArgument)
    assert error.field == field
    assert error.value is v
    assert f"{field} must be" in str(error)
    assert pickle.loads(pickle.dumps(error)).field == field
    assert await store.read_leases() == []
    assert await store.stream_version("s") == 0


def test_lease_lost_pickles_with_its_attributes() -> None:
    error = pickle.loads(pickle.dumps(LeaseLost("pm", "node-a", 3, "node-b", 4)))
    assert (error.name, error.owner, error.epoch, error.holder, error.holder_epoch) == (
        "pm",
        "node-a",
        3,
        "node-b",
        4,
    )


# -- across reopening and processes -------------------------------------------------------


def _shared(store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("a :memory: store is private to one connection")


async def test_leases_survive_reopening_the_store(
    store_kind: str, store_path: str, store_writer: Writer
) -> None:
    _shared(store_kind)
    async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
        lease = await store.acquire_lease("pm.orders", "node-a", LONG)
        assert lease is not None
    async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
        assert await store.read_leases() == [lease]
        assert await store.acquire_lease("pm.orders", "node-b", LONG) is None
        renewed = await store.renew_lease(lease, LONG)
        assert renewed is not None
        assert renewed.epoch == 1
        await store.save_checkpoint("pm.orders", 3, fence=renewed)


async def test_two_stores_on_one_database_racing_for_leases_get_one_winner_each(
    store_kind: str, store_path: str, store_writer: Writer
) -> None:
    _shared(store_kind)
    names = [f"pm.partition/{i}" for i in range(16)]
    winners: dict[str, list[str]] = {name: [] for name in names}

    async def race(store: SQLiteEventStore, owner: str) -> None:
        async def take(name: str) -> None:
            lease = await store.acquire_lease(name, owner, LONG)
            if lease is not None:
                winners[name].append(lease.owner)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(take, name)

    with anyio.fail_after(30):
        async with (
            open_store(store_path, registry=make_registry(), writer=store_writer) as one,
            open_store(store_path, registry=make_registry(), writer=store_writer) as two,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(race, one, "node-a")
            tg.start_soon(race, two, "node-b")
    assert all(len(owners) == 1 for owners in winners.values()), winners
    async with open_store(store_path, registry=make_registry(), writer=store_writer) as store:
        leases = await store.read_leases("pm.partition/")
    assert {lease.name: [lease.owner] for lease in leases} == winners
    assert {lease.epoch for lease in leases} == {1}


async def test_a_lease_schema_is_added_to_an_existing_file(tmp_path: Path) -> None:
    """A file made before leases existed (schema version 1) gets the table on open."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _V1:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    async with open_store(path, registry=make_registry()) as store:
        assert await store.acquire_lease("pm", "node-a", LONG) is not None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


async def test_a_postgres_schema_at_version_2_is_migrated_to_leases_and_fences(
    postgres_schema: str, postgres_url: str
) -> None:
    """A schema made before leases (version 2: the batch function without fence
    arguments) gets the leases table and exactly one batch function, the current one."""
    conn = await postgres_connection()
    s = quote_ident(postgres_schema)
    try:
        await migrate(conn, postgres_schema)
        # Back to version 2 as it was: no leases, the function's old signature.
        await conn.execute(f"DROP TABLE {s}.leases")
        await conn.execute(f"DROP FUNCTION {s}.esactors_append_batch")
        await conn.execute(
            f"CREATE FUNCTION {s}.esactors_append_batch(text[], bigint[], text[], bigint[],"
            " bytea, integer[], bigint[], bytea[], text[], bigint[], integer[], bytea[],"
            " text[], bigint[], boolean, bigint, double precision, text[], bigint[], text[],"
            " bigint[], bytea[], bigint[], double precision[], text[], bigint[],"
            " double precision[]) RETURNS void LANGUAGE sql AS ''"
        )
        await conn.execute(f"DELETE FROM {s}.schema_version WHERE version >= 3")  # noqa: S608
        assert await migrate(conn, postgres_schema) == 2
        arities = await conn.fetch(
            "SELECT pronargs FROM pg_proc WHERE proname = 'esactors_append_batch'"
            " AND pronamespace = $1::regnamespace",
            s,
        )
        assert [row[0] for row in arities] == [31]  # fences, and chains (version 4)
    finally:
        await conn.close()
    async with open_store(postgres_url, registry=make_registry()) as store:
        lease = await store.acquire_lease("pm", "node-a", LONG)
        assert lease is not None
        await store.append("s", [Deposited(1)], expected_version=NO_STREAM, fence=lease)
        assert await store.stream_version("s") == 1


async def test_a_process_managers_fenced_appends_go_ahead_of_a_crowd_of_clients(
    tmp_path: Path,
) -> None:
    """While fenced appends (a process manager's) come, a batch takes at most as many
    unfenced ones (clients') as fenced ones plus a few: a fenced append queued behind a
    crowd of clients commits before most of them, and what queued after the crowd (a
    `wait_settled`) still waits for all of it."""
    async with open_store(str(tmp_path / "fair.db"), registry=make_registry()) as store:
        lease = await store.acquire_lease("pm", "me", LONG)
        assert lease is not None
        positions: dict[str, int] = {}
        settled_after: list[int] = []

        async def append(stream_id: str, fence: Lease | None) -> None:
            result = await store.append(
                stream_id, [Deposited(1)], expected_version=NO_STREAM, fence=fence
            )
            positions[stream_id] = result.last_position

        async def settle() -> None:
            await store.wait_settled()
            settled_after.append(await store.last_position())

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg, writer_held(store):
                for n in range(20):
                    tg.start_soon(append, f"client-{n}", None)
                    await anyio.wait_all_tasks_blocked()
                tg.start_soon(append, "pm-1", lease)
                await anyio.wait_all_tasks_blocked()
                for n in range(20, 100):
                    tg.start_soon(append, f"client-{n}", None)
                    await anyio.wait_all_tasks_blocked()
                tg.start_soon(append, "pm-2", lease)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(settle)
                await anyio.wait_all_tasks_blocked()
        clients = sorted(p for s, p in positions.items() if s.startswith("client-"))
        assert positions["pm-1"] < clients[20]  # in its queue order: before the rest
        # pm-2 was queued behind all 100 clients; it commits before most of them.
        assert sum(p > positions["pm-2"] for p in clients) >= 50
        assert settled_after == [102]
