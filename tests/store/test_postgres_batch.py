"""The PostgreSQL write path (`store._postgres_batch`, `store._postgres_schema`) against
a live server: the URL is $ESACTORS_TEST_POSTGRES (default: the local test database).
Without a server the tests skip, saying why; with CI=true they fail instead.

Each test works in a schema of its own, created fresh and dropped (CASCADE) after.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import cast

import anyio
import anyio.lowlevel
import asyncpg
import msgspec
import pytest

from store._errors import ConcurrencyError, IdempotencyConflict
from store._postgres_batch import (
    CHAIN_BROKEN,
    CONCURRENCY,
    DUPLICATE,
    IDEMPOTENCY_CONFLICT,
    OK,
    AppendOutcome,
    CheckpointWrite,
    SnapshotWrite,
    StreamVersions,
    append_result,
    write_batch,
)
from store._postgres_schema import (
    SCHEMA_VERSION,
    _bootstrap,
    _migrations,
    _record_version,
    check_schema_name,
    migrate,
    quote_ident,
    schema_version,
)
from store._records import ANY, NO_STREAM, STREAM_EXISTS, AppendResult

URL = os.environ.get("ESACTORS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_unavailable: list[str] = []


class Append(msgspec.Struct, frozen=True):
    """An append as the store queues it (the `BatchAppend` protocol)."""

    stream_id: str
    expected: int
    rows: list[tuple[str, int, bytes, int]]
    metadata_bytes: bytes | None = None
    command_id: str | None = None
    digest: bytes | None = None


def rows(*payloads: bytes, tag: str = "test.event") -> list[tuple[str, int, bytes, int]]:
    return [(tag, 1, data, zlib.crc32(data)) for data in payloads]


def digest(stream_id: str, event_rows: Sequence[tuple[str, int, bytes, int]]) -> bytes:
    h = hashlib.blake2b(stream_id.encode(), digest_size=16)
    for tag, schema_version_, data, _crc in event_rows:
        h.update(b"\x00%s\x00%d\x00" % (tag.encode(), schema_version_))
        h.update(data)
    return h.digest()


def command(stream_id: str, expected: int, command_id: str, *payloads: bytes) -> Append:
    event_rows = rows(*payloads)
    return Append(stream_id, expected, event_rows, None, command_id, digest(stream_id, event_rows))


async def connect() -> asyncpg.Connection:
    if _unavailable:
        pytest.skip(_unavailable[0])
    try:
        return await asyncpg.connect(URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"no PostgreSQL answers at {URL} ({type(exc).__name__}: {exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        _unavailable.append(reason)
        pytest.skip(reason)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A unique, not yet existing schema name; dropped with everything in it after."""
    name = f"esactors_test_{uuid.uuid4().hex[:12]}"
    conn = await connect()
    try:
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        await conn.close()


@pytest.fixture
async def conn(schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a freshly migrated `schema`."""
    connection = await connect()
    try:
        assert await migrate(connection, schema) == 0
        yield connection
    finally:
        await connection.close()


async def events(conn: asyncpg.Connection, schema: str) -> list[tuple[int, str, int, bytes]]:
    records = await conn.fetch(
        f"SELECT position, stream_id, version, data FROM {quote_ident(schema)}.events"  # noqa: S608
        " ORDER BY position"
    )
    return [(r[0], r[1], r[2], r[3]) for r in records]


def ok(fv: int, lv: int, fp: int, lp: int) -> AppendOutcome:
    return AppendOutcome(OK, fv, lv, fp, lp, 0, None)


def conflict(actual: int) -> AppendOutcome:
    return AppendOutcome(CONCURRENCY, 0, 0, 0, 0, actual, None)


async def test_a_batch_chains_versions_per_stream_across_streams(
    conn: asyncpg.Connection, schema: str
) -> None:
    batch = [
        Append("a", NO_STREAM, rows(b"a1")),
        Append("b", NO_STREAM, rows(b"b1", b"b2")),
        Append("a", 1, rows(b"a2", b"a3"), metadata_bytes=b"meta"),
        Append("b", 2, rows(b"b3")),
        Append("c", ANY, rows(b"c1")),
        Append("a", 3, rows(b"a4")),
    ]
    result = await write_batch(conn, schema, batch, 1700000000.25)
    assert result.write_error is None
    assert result.outcomes == [
        ok(1, 1, 1, 1),
        ok(1, 2, 2, 3),
        ok(2, 3, 4, 5),
        ok(3, 3, 6, 6),
        ok(1, 1, 7, 7),
        ok(4, 4, 8, 8),
    ]
    assert await events(conn, schema) == [
        (1, "a", 1, b"a1"),
        (2, "b", 1, b"b1"),
        (3, "b", 2, b"b2"),
        (4, "a", 2, b"a2"),
        (5, "a", 3, b"a3"),
        (6, "b", 3, b"b3"),
        (7, "c", 1, b"c1"),
        (8, "a", 4, b"a4"),
    ]
    s = quote_ident(schema)
    row = await conn.fetchrow(
        f"SELECT event_type, schema_version, metadata, command_id, recorded_at, checksum"  # noqa: S608
        f" FROM {s}.events WHERE position = 4"
    )
    assert row is not None
    assert tuple(row) == ("test.event", 1, b"meta", None, 1700000000.25, zlib.crc32(b"a2"))
    assert await conn.fetchval(f"SELECT last_position FROM {s}.position_counter") == 8  # noqa: S608
    # The next batch continues where this one stopped.
    result = await write_batch(conn, schema, [Append("c", 1, rows(b"c2"))], time.time())
    assert result.outcomes == [ok(2, 2, 9, 9)]
    assert append_result(batch[0], ok(2, 2, 9, 9)) == AppendResult("a", 2, 2, 9, 9)


async def test_expected_versions_exact_no_stream_stream_exists_any(
    conn: asyncpg.Connection, schema: str
) -> None:
    await write_batch(conn, schema, [Append("s", NO_STREAM, rows(b"1", b"2"))], time.time())
    batch = [
        Append("s", 1, rows(b"x")),  # stale exact version
        Append("s", 3, rows(b"x")),  # ahead of the stream
        Append("s", NO_STREAM, rows(b"x")),  # the stream exists
        Append("t", STREAM_EXISTS, rows(b"x")),  # the stream does not exist
        Append("t", 1, rows(b"x")),  # nor at version 1
        Append("s", 2, rows(b"3")),  # right: accepted
        Append("s", 2, rows(b"x")),  # stale now: the batch chained to 3
        Append("s", STREAM_EXISTS, rows(b"4")),
        Append("s", ANY, rows(b"5")),
        Append("t", ANY, rows(b"t1")),
        Append("t", NO_STREAM, rows(b"x")),  # created earlier in this batch
        Append("u", NO_STREAM, rows(b"u1")),
    ]
    result = await write_batch(conn, schema, batch, time.time())
    assert result.outcomes == [
        conflict(2),
        conflict(2),
        conflict(2),
        conflict(0),
        conflict(0),
        ok(3, 3, 3, 3),
        conflict(3),
        ok(4, 4, 4, 4),
        ok(5, 5, 5, 5),
        ok(1, 1, 6, 6),
        conflict(1),
        ok(1, 1, 7, 7),
    ]
    error = append_result(batch[2], result.outcomes[2])
    assert isinstance(error, ConcurrencyError)
    assert (error.stream_id, error.expected, error.actual) == ("s", NO_STREAM, 2)
    assert [p for p, *_ in await events(conn, schema)] == list(range(1, 8))


async def test_command_ids_duplicate_and_idempotency_conflicts(
    conn: asyncpg.Connection, schema: str
) -> None:
    first = command("s", NO_STREAM, "cmd-1", b"1", b"2")
    result = await write_batch(conn, schema, [first], time.time())
    assert result.outcomes == [ok(1, 2, 1, 2)]
    later = [
        command("s", 2, "cmd-1", b"1", b"2"),  # resent: a duplicate, version not checked
        command("s", NO_STREAM, "cmd-1", b"1", b"2"),  # likewise with a stale version
        command("other", NO_STREAM, "cmd-1", b"1", b"2"),  # other stream
        command("s", 2, "cmd-1", b"1", b"changed"),  # other events
        command("s", 2, "cmd-2", b"3"),  # new: accepted
        command("s", 3, "cmd-2", b"3"),  # its resend in the same batch: a duplicate
        command("s", 3, "cmd-2", b"other"),  # other events under it in the same batch
        command("t", 5, "cmd-3", b"x"),  # refused by version: cmd-3 stays free...
        command("t", NO_STREAM, "cmd-3", b"y"),  # ...so this one takes it
        command("u", NO_STREAM, "cmd-3", b"y"),  # and this is another stream for it
    ]
    result = await write_batch(conn, schema, later, time.time())
    assert result.outcomes == [
        AppendOutcome(DUPLICATE, 1, 2, 1, 2, 0, None),
        AppendOutcome(DUPLICATE, 1, 2, 1, 2, 0, None),
        AppendOutcome(IDEMPOTENCY_CONFLICT, 0, 0, 0, 0, 0, "s"),
        AppendOutcome(IDEMPOTENCY_CONFLICT, 0, 0, 0, 0, 0, "s"),
        ok(3, 3, 3, 3),
        AppendOutcome(DUPLICATE, 3, 3, 3, 3, 0, None),
        AppendOutcome(IDEMPOTENCY_CONFLICT, 0, 0, 0, 0, 0, "s"),
        conflict(0),
        ok(1, 1, 4, 4),
        AppendOutcome(IDEMPOTENCY_CONFLICT, 0, 0, 0, 0, 0, "t"),
    ]
    assert append_result(later[0], result.outcomes[0]) == AppendResult(
        "s", 1, 2, 1, 2, duplicate=True
    )
    error = append_result(later[2], result.outcomes[2])
    assert isinstance(error, IdempotencyConflict)
    assert (error.command_id, error.stream_id, error.recorded_stream_id) == (
        "cmd-1",
        "other",
        "s",
    )
    s = quote_ident(schema)
    stored = await conn.fetch(
        f"SELECT command_id, stream_id, first_version, last_version, first_position,"  # noqa: S608
        f" last_position, digest FROM {s}.commands ORDER BY command_id"
    )
    assert [tuple(r) for r in stored] == [
        ("cmd-1", "s", 1, 2, 1, 2, first.digest),
        ("cmd-2", "s", 3, 3, 3, 3, later[4].digest),
        ("cmd-3", "t", 1, 1, 4, 4, later[8].digest),
    ]
    assert [(p, sid, v) for p, sid, v, _ in await events(conn, schema)] == [
        (1, "s", 1),
        (2, "s", 2),
        (3, "s", 3),
        (4, "t", 1),
    ]
    with pytest.raises(ValueError, match="without a digest"):
        await write_batch(conn, schema, [Append("s", ANY, rows(b"x"), None, "c")], 0.0)


async def test_positions_stay_contiguous_across_refused_and_empty_batches(
    conn: asyncpg.Connection, schema: str
) -> None:
    rng = random.Random(7)
    versions: dict[str, int] = {}
    for _ in range(30):
        batch = []
        for _ in range(rng.randrange(0, 20)):
            stream = f"s{rng.randrange(5)}"
            known = versions.get(stream, 0)
            expected = known if rng.random() < 0.7 else known + rng.choice((-1, 1, 2))
            batch.append(Append(stream, max(expected, 0), rows(*[b"e"] * rng.randrange(1, 4))))
        result = await write_batch(conn, schema, batch, time.time())
        assert len(result.outcomes) == len(batch)
        for item, outcome in zip(batch, result.outcomes, strict=True):
            if outcome.kind == OK:
                versions[item.stream_id] = outcome.last_version
    stored = await events(conn, schema)
    assert [p for p, *_ in stored] == list(range(1, len(stored) + 1))
    assert len(stored) == sum(versions.values())
    s = quote_ident(schema)
    last = await conn.fetchval(f"SELECT last_position FROM {s}.position_counter")  # noqa: S608
    assert last == len(stored)
    # A batch of only refusals moves nothing.
    result = await write_batch(conn, schema, [Append("s0", 10_000, rows(b"x"))], time.time())
    assert result.outcomes[0].kind == CONCURRENCY
    assert await conn.fetchval(f"SELECT last_position FROM {s}.position_counter") == last  # noqa: S608
    assert (await write_batch(conn, schema, [], time.time())).outcomes == []


async def test_snapshot_and_checkpoint_upserts_commit_with_the_batch(
    conn: asyncpg.Connection, schema: str
) -> None:
    s = quote_ident(schema)
    result = await write_batch(
        conn,
        schema,
        [Append("a", NO_STREAM, rows(b"1"))],
        time.time(),
        snapshots=[
            SnapshotWrite("a", 3, "T", 1, b"three", 3, 1.0),
            SnapshotWrite("a", 5, "T", 1, b"five", 5, 2.0),
            SnapshotWrite("a", 4, "T", 1, b"four", 4, 3.0),  # older than 5: ignored
            SnapshotWrite("b", 1, "T", 1, b"b", 1, 4.0),
        ],
        checkpoints=[CheckpointWrite("p", 9, 1.0), CheckpointWrite("p", 3, 2.0)],
    )
    assert result == type(result)([ok(1, 1, 1, 1)], None)
    snaps = await conn.fetch(f"SELECT stream_id, version, data FROM {s}.snapshots ORDER BY 1")  # noqa: S608
    assert [tuple(r) for r in snaps] == [("a", 5, b"five"), ("b", 1, b"b")]
    assert await conn.fetchval(f"SELECT position FROM {s}.checkpoints WHERE name = 'p'") == 3  # noqa: S608
    # Writes alone (no appends), and a stored newer snapshot wins over an older one.
    await write_batch(
        conn, schema, [], 5.0, snapshots=[SnapshotWrite("a", 2, "T", 1, b"two", 2, 5.0)]
    )
    assert await conn.fetchval(f"SELECT version FROM {s}.snapshots WHERE stream_id = 'a'") == 5  # noqa: S608
    # A failed write leaves the appends committed and is reported.
    await conn.execute(f"ALTER TABLE {s}.checkpoints ADD CHECK (position < 100)")
    result = await write_batch(
        conn,
        schema,
        [Append("a", 1, rows(b"2"))],
        time.time(),
        checkpoints=[CheckpointWrite("p", 1_000, 3.0)],
    )
    assert result.outcomes == [ok(2, 2, 2, 2)]
    assert result.write_error is not None
    assert result.write_error.startswith("23514:")  # check_violation
    assert len(await events(conn, schema)) == 2
    assert await conn.fetchval(f"SELECT position FROM {s}.checkpoints WHERE name = 'p'") == 3  # noqa: S608


async def test_a_writer_waiting_for_the_counter_sees_the_commit_it_waited_for(
    conn: asyncpg.Connection, schema: str
) -> None:
    """The second batch waits on the counter's row lock while the first is uncommitted;
    once it commits, the second decides against it (a conflict, not a unique violation)."""
    other = await connect()
    outcome: list[AppendOutcome] = []

    async def second() -> None:
        result = await write_batch(other, schema, [Append("s", NO_STREAM, rows(b"b"))], 0.0)
        outcome.extend(result.outcomes)

    transaction = conn.transaction()
    await transaction.start()
    committed = False
    try:
        first = await write_batch(conn, schema, [Append("s", NO_STREAM, rows(b"a"))], 0.0)
        assert first.outcomes == [ok(1, 1, 1, 1)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                waiting = False
                for _ in range(500):  # until `second` waits on the counter's lock
                    waiting = bool(
                        await conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock' AND pid = $1",
                            other.get_server_pid(),
                        )
                    )
                    if waiting:
                        break
                    await anyio.sleep(0.01)
                assert waiting
                assert outcome == []
                await transaction.commit()
                committed = True
    except BaseException:
        if not committed:
            await transaction.rollback()
        raise
    finally:
        await other.close()
    assert outcome == [conflict(1)]
    assert [(p, sid, v) for p, sid, v, _ in await events(conn, schema)] == [(1, "s", 1)]


async def test_repeatable_read_is_refused(conn: asyncpg.Connection, schema: str) -> None:
    with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
        async with conn.transaction(isolation="repeatable_read"):
            await write_batch(conn, schema, [Append("s", ANY, rows(b"x"))], 0.0)
    assert await events(conn, schema) == []


async def test_concurrent_migrations_of_one_empty_schema(schema: str) -> None:
    connections = [await connect() for _ in range(8)]
    found: list[int] = []
    try:

        async def run(c: asyncpg.Connection) -> None:
            found.append(await migrate(c, schema))

        async with anyio.create_task_group() as tg:
            for c in connections:
                tg.start_soon(run, c)
        assert sorted(found) == [0] + [SCHEMA_VERSION] * (len(connections) - 1)
        c = connections[0]
        s = quote_ident(schema)
        assert await schema_version(c, schema) == SCHEMA_VERSION
        assert await c.fetchval(f"SELECT count(*) FROM {s}.schema_version") == SCHEMA_VERSION  # noqa: S608
        assert await c.fetchval(f"SELECT count(*) FROM {s}.position_counter") == 1  # noqa: S608
        assert await migrate(c, schema) == SCHEMA_VERSION
    finally:
        for c in connections:
            await c.close()


async def test_a_batch_refuses_an_append_chained_to_one_it_did_not_accept(
    conn: asyncpg.Connection, schema: str
) -> None:
    """`chained`: the second append expects the version the first would leave, which
    the other writer's append (earlier in the batch) happens to reach: refused all the
    same, as is the third, chained to it; the fourth is chained to nothing."""
    batch = [
        Append("s", ANY, rows(b"other")),
        Append("s", NO_STREAM, rows(b"first")),
        Append("s", 1, rows(b"second")),
        Append("s", 2, rows(b"third")),
        Append("t", NO_STREAM, rows(b"t")),
    ]
    result = await write_batch(conn, schema, batch, 0.0, chained=[-1, -1, 1, 2, -1])
    broken = AppendOutcome(CHAIN_BROKEN, 0, 0, 0, 0, 0, None)
    assert result.outcomes == [ok(1, 1, 1, 1), conflict(1), broken, broken, ok(1, 1, 2, 2)]
    assert [e[3] for e in await events(conn, schema)] == [b"other", b"t"]
    with pytest.raises(ValueError, match="2 chain links for 1 appends"):
        await write_batch(conn, schema, [Append("u", ANY, rows(b"u"))], 0.0, chained=[-1, 0])


async def test_a_version_3_schema_gets_the_batch_function_with_chains(schema: str) -> None:
    """A schema at version 3 holds the batch function without `p_chained`: version 4
    replaces it (an overload left beside it would make every call ambiguous)."""
    c = await connect()
    s = quote_ident(schema)
    try:
        async with c.transaction():
            for statement in _bootstrap(s):
                await c.execute(statement)
            for number, statements in enumerate(_migrations(schema)[:3], start=1):
                for statement in statements:
                    await c.execute(statement)
                await c.execute(_record_version(s), number)
            # Version 3's function: its arguments as they were, its body beside the point.
            v3_args = (
                "text[], bigint[], text[], bigint[], bytea, integer[], bigint[], bytea[],"
                " text[], bigint[], integer[], bytea[], text[], bigint[], boolean, bigint,"
                " double precision, text[], bigint[], text[], bigint[], bytea[], bigint[],"
                " double precision[], text[], bigint[], double precision[], text[], text[],"
                " bigint[]"
            )
            await c.execute(
                f"CREATE FUNCTION {s}.esactors_append_batch({v3_args}) RETURNS integer"
                " LANGUAGE sql AS 'SELECT 3'"
            )
        assert await migrate(c, schema) == 3
        arguments = await c.fetch(
            "SELECT p.pronargs FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = $1 AND p.proname = 'esactors_append_batch'",
            schema,
        )
        assert [row[0] for row in arguments] == [31]
        result = await write_batch(c, schema, [Append("s", NO_STREAM, rows(b"x"))], 0.0)
        assert result.outcomes == [ok(1, 1, 1, 1)]
    finally:
        await c.close()


async def test_a_newer_schema_is_refused(conn: asyncpg.Connection, schema: str) -> None:
    s = quote_ident(schema)
    await conn.execute(f"INSERT INTO {s}.schema_version VALUES ($1, 0)", SCHEMA_VERSION + 1)  # noqa: S608
    with pytest.raises(RuntimeError, match="newer than this esactors"):
        await migrate(conn, schema)


async def test_schema_names_are_checked_and_quoted() -> None:
    for bad in ("", "x" * 64, "a\x00b", "pg_temp", "\udc80", 5):
        with pytest.raises(ValueError, match="schema name"):
            check_schema_name(bad)
    odd = f'odd "name"; DROP TABLE x; {uuid.uuid4().hex[:8]}'
    conn = await connect()
    try:
        assert await migrate(conn, odd) == 0
        result = await write_batch(conn, odd, [Append("s", NO_STREAM, rows(b"x"))], 0.0)
        assert result.outcomes == [ok(1, 1, 1, 1)]
        assert len(await events(conn, odd)) == 1
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(odd)} CASCADE")
        await conn.close()


async def test_the_default_schema_is_the_current_one(schema: str) -> None:
    conn = await connect()
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        await conn.execute(f"SET search_path = {quote_ident(schema)}")
        assert await migrate(conn) == 0
        assert await schema_version(conn, schema) == SCHEMA_VERSION
    finally:
        await conn.close()


@pytest.mark.slow
async def test_concurrent_writers_and_a_reader(conn: asyncpg.Connection, schema: str) -> None:
    """Writers on several connections append to overlapping streams at the versions they
    believe (often stale); a reader polls all the while. No lost update, versions and
    positions contiguous, and no reader ever sees a hole below the highest position."""
    writers, batches, streams = 6, 40, 8
    s = quote_ident(schema)
    accepted: list[tuple[Append, AppendOutcome]] = []
    done = anyio.Event()
    polls: list[int] = []

    async def write(n: int) -> None:
        c = await connect()
        rng = random.Random(n)
        known: dict[str, int] = {}
        try:
            for b in range(batches):
                batch = []
                for a in range(rng.randrange(1, 12)):
                    stream = f"s{rng.randrange(streams)}"
                    expected = ANY if rng.random() < 0.1 else known.get(stream, 0)
                    payloads = [f"{n}.{b}.{a}.{e}".encode() for e in range(rng.randrange(1, 4))]
                    batch.append(Append(stream, expected, rows(*payloads)))
                result = await write_batch(c, schema, batch, time.time())
                for item, outcome in zip(batch, result.outcomes, strict=True):
                    if outcome.kind == OK:
                        accepted.append((item, outcome))
                        known[item.stream_id] = outcome.last_version
                    else:
                        assert outcome.kind == CONCURRENCY
                        known[item.stream_id] = outcome.actual
        finally:
            await c.close()

    async def read() -> None:
        c = await connect()
        highest = 0
        try:
            while True:
                finished = done.is_set()
                seen = await c.fetchval(
                    f"SELECT coalesce(array_agg(position ORDER BY position), '{{}}')"  # noqa: S608
                    f" FROM {s}.events"
                )
                # Every position from 1 to the highest visible is visible: a row that
                # appeared later at or below a position seen would be a hole here first.
                assert list(seen) == list(range(1, len(seen) + 1))
                assert len(seen) >= highest
                highest = len(seen)
                polls.append(highest)
                if finished:
                    return
                await anyio.lowlevel.checkpoint()
        finally:
            await c.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        async with anyio.create_task_group() as writing:
            for n in range(writers):
                writing.start_soon(write, n)
        done.set()

    stored = await events(conn, schema)
    assert [p for p, *_ in stored] == list(range(1, len(stored) + 1))
    assert len(stored) == sum(len(item.rows) for item, _ in accepted)
    by_position = {p: (sid, v, data) for p, sid, v, data in stored}
    for item, outcome in accepted:
        for k, (_tag, _sv, data, _crc) in enumerate(item.rows):
            assert by_position[outcome.first_position + k] == (
                item.stream_id,
                outcome.first_version + k,
                data,
            )
    for stream in {sid for _, sid, _, _ in stored}:
        versions = [v for _, sid, v, _ in stored if sid == stream]
        assert sorted(versions) == list(range(1, len(versions) + 1))
    assert await conn.fetchval(f"SELECT last_position FROM {s}.position_counter") == len(stored)  # noqa: S608
    assert len(polls) > 1


class Spy:
    """`conn` for `write_batch`, noting for each batch whether the function took its
    fast path (every append accepted as proposed: no outcome arrays come back)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.fast: list[bool] = []

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        record = await self.conn.fetchrow(query, *args)
        assert record is not None
        self.fast.append(record["kinds"] is None)
        return record

    @property
    def as_conn(self) -> asyncpg.Connection:
        return cast("asyncpg.Connection", self)


async def test_the_fast_path_writes_what_the_careful_path_would(
    conn: asyncpg.Connection, schema: str
) -> None:
    """Chained versions, several events per append, metadata, command ids and stream ids
    that need quoting in an array literal: all accepted on the fast path."""
    spy = Spy(conn)
    cache = StreamVersions()
    odd = ['a"b', "c\\d", "NULL", " {x,y} ", "é€", ""]
    batch = [Append(sid, NO_STREAM, rows(sid.encode() or b"-")) for sid in odd]
    batch += [
        command("s", NO_STREAM, "c1", b"1", b"2"),
        Append("s", 2, rows(b"3"), metadata_bytes=b"m"),
        command("t", NO_STREAM, "c2", b"t1"),
        Append("s", ANY, rows(b"4", b"5")),
    ]
    result = await write_batch(spy.as_conn, schema, batch, 5.0, versions=cache)
    assert spy.fast == [True]
    n = len(odd)
    assert result.outcomes == [ok(1, 1, p, p) for p in range(1, n + 1)] + [
        ok(1, 2, n + 1, n + 2),
        ok(3, 3, n + 3, n + 3),
        ok(1, 1, n + 4, n + 4),
        ok(4, 5, n + 5, n + 6),
    ]
    stored = await events(conn, schema)
    assert [(sid, v, data) for _, sid, v, data in stored[:n]] == [
        (sid, 1, sid.encode() or b"-") for sid in odd
    ]
    assert [(sid, v, data) for _, sid, v, data in stored[n:]] == [
        ("s", 1, b"1"),
        ("s", 2, b"2"),
        ("s", 3, b"3"),
        ("t", 1, b"t1"),
        ("s", 4, b"4"),
        ("s", 5, b"5"),
    ]
    s = quote_ident(schema)
    commands = await conn.fetch(
        f"SELECT command_id, stream_id, first_version, last_version, first_position,"  # noqa: S608
        f" last_position, digest FROM {s}.commands ORDER BY command_id"
    )
    assert [tuple(r) for r in commands] == [
        ("c1", "s", 1, 2, n + 1, n + 2, batch[n].digest),
        ("c2", "t", 1, 1, n + 4, n + 4, batch[n + 2].digest),
    ]
    meta = await conn.fetch(f"SELECT position, metadata, command_id FROM {s}.events")  # noqa: S608
    assert {r[0]: (r[1], r[2]) for r in meta if r[1] or r[2]} == {
        n + 1: (None, "c1"),
        n + 2: (None, "c1"),
        n + 3: (b"m", None),
        n + 4: (None, "c2"),
    }
    assert cache.get("s") == 5
    assert cache.get("t") == 1
    assert cache.position == n + 6


async def test_a_stale_cache_falls_back_to_the_careful_path(
    conn: asyncpg.Connection, schema: str
) -> None:
    """Another connection wrote the stream since this writer cached its version: the
    unique index refuses the proposed rows and the same statement decides again."""
    spy = Spy(conn)
    cache = StreamVersions()
    await write_batch(
        spy.as_conn, schema, [Append("s", NO_STREAM, rows(b"1"))], 0.0, versions=cache
    )
    other = await connect()
    try:
        await write_batch(other, schema, [Append("s", 1, rows(b"2"))], 0.0)
    finally:
        await other.close()
    assert cache.get("s") == 1  # stale: the stream is at 2
    batch = [
        Append("t", NO_STREAM, rows(b"t1")),
        Append("s", 1, rows(b"x")),  # the version this writer believes: refused
        Append("s", ANY, rows(b"3")),  # proposed at 2 from the cache: lands at 3
    ]
    result = await write_batch(spy.as_conn, schema, batch, 0.0, versions=cache)
    assert spy.fast == [True, False]
    assert result.outcomes == [ok(1, 1, 3, 3), conflict(2), ok(3, 3, 4, 4)]
    assert [(p, sid, v) for p, sid, v, _ in await events(conn, schema)] == [
        (1, "s", 1),
        (2, "s", 2),
        (3, "t", 1),
        (4, "s", 3),
    ]
    assert (cache.get("s"), cache.get("t"), cache.position) == (3, 1, 4)
    # The cache is right again: the next batch takes the fast path.
    result = await write_batch(
        spy.as_conn, schema, [Append("s", 3, rows(b"4"))], 0.0, versions=cache
    )
    assert spy.fast[-1]
    assert result.outcomes == [ok(4, 4, 5, 5)]


async def test_expected_versions_the_fast_path_cannot_vouch_for(
    conn: asyncpg.Connection, schema: str
) -> None:
    """A version ahead of the stream (no row above it to refuse it: the base is checked
    to exist), behind what the cache knows, or on a stream it does not know."""
    spy = Spy(conn)
    cache = StreamVersions()
    await write_batch(spy.as_conn, schema, [Append("s", NO_STREAM, rows(b"1", b"2"))], 0.0)
    for item, outcome in [
        (Append("s", 5, rows(b"x")), conflict(2)),  # ahead: would leave a gap
        (Append("s", 2, rows(b"3")), ok(3, 3, 3, 3)),  # unknown to the cache, right
        (Append("s", 1, rows(b"x")), conflict(3)),  # behind the cache
        (Append("u", STREAM_EXISTS, rows(b"x")), conflict(0)),
        (Append("u", ANY, rows(b"u1")), ok(1, 1, 4, 4)),  # the refusal told: no stream
    ]:
        result = await write_batch(spy.as_conn, schema, [item], 0.0, versions=cache)
        assert result.outcomes == [outcome], item
    assert spy.fast == [True, False, True, False, False, True]
    assert [(p, sid, v) for p, sid, v, _ in await events(conn, schema)] == [
        (1, "s", 1),
        (2, "s", 2),
        (3, "s", 3),
        (4, "u", 1),
    ]
    # Without a cache, an exact version is checked the same way.
    result = await write_batch(spy.as_conn, schema, [Append("s", 7, rows(b"x"))], 0.0)
    assert result.outcomes == [conflict(3)]


async def test_a_stored_command_id_undoes_the_fast_path(
    conn: asyncpg.Connection, schema: str
) -> None:
    """A command id already stored: the commands key refuses it, the fast path's rows
    are rolled back (no position lost) and the careful path answers the duplicate."""
    spy = Spy(conn)
    cache = StreamVersions()
    first = command("s", NO_STREAM, "c1", b"1")
    await write_batch(spy.as_conn, schema, [first], 0.0, versions=cache)
    batch = [
        Append("t", NO_STREAM, rows(b"t1")),
        command("u", NO_STREAM, "c3", b"u1", b"u2"),
        command("s", 1, "c1", b"1"),  # resent: proposed at version 2, a duplicate
        command("v", NO_STREAM, "c1", b"1"),  # the same id on another stream
    ]
    result = await write_batch(spy.as_conn, schema, batch, 0.0, versions=cache)
    assert spy.fast == [True, False]
    assert result.outcomes == [
        ok(1, 1, 2, 2),
        ok(1, 2, 3, 4),
        AppendOutcome(DUPLICATE, 1, 1, 1, 1, 0, None),
        AppendOutcome(IDEMPOTENCY_CONFLICT, 0, 0, 0, 0, 0, "s"),
    ]
    assert [(p, sid, v) for p, sid, v, _ in await events(conn, schema)] == [
        (1, "s", 1),
        (2, "t", 1),
        (3, "u", 1),
        (4, "u", 2),
    ]
    s = quote_ident(schema)
    assert await conn.fetchval(f"SELECT last_position FROM {s}.position_counter") == 4  # noqa: S608
    stored = await conn.fetch(
        f"SELECT command_id, stream_id, first_position, last_position"  # noqa: S608
        f" FROM {s}.commands ORDER BY command_id"
    )
    assert [tuple(r) for r in stored] == [("c1", "s", 1, 1), ("c3", "u", 3, 4)]
    assert cache.get("s") == 1  # a duplicate moves nothing


async def test_a_cache_from_another_history_is_not_trusted(
    conn: asyncpg.Connection, schema: str
) -> None:
    """A cache that has seen positions the counter has not reached (the schema was made
    anew, or restored) is not used: the careful path decides, and the cache is reset."""
    spy = Spy(conn)
    cache = StreamVersions()
    cache.versions["s"] = 5
    cache.position = 1_000
    result = await write_batch(
        spy.as_conn, schema, [Append("s", ANY, rows(b"1"))], 0.0, versions=cache
    )
    assert spy.fast == [False]
    assert result.outcomes == [ok(1, 1, 1, 1)]
    assert (cache.versions, cache.position) == ({"s": 1}, 1)


def test_the_cache_keeps_at_most_its_limit() -> None:
    cache = StreamVersions(limit=8)
    for n in range(20):
        cache.versions[f"s{n}"] = n
        cache._trim()
        assert len(cache.versions) <= 8
    assert cache.get("s19") == 19
    assert cache.get("s0") is None
    with pytest.raises(ValueError, match="limit"):
        StreamVersions(limit=0)
