"""`PostgresEventStore.wait_for_commit`: each committed batch notifies its schema's
channel with its last position, and a store listening there wakes at once.

Two stores opened on the same schema stand in for two processes. Against the test
server ($ESACTORS_TEST_POSTGRES, see tests/_postgres.py), each test in a schema of its
own. No test sleeps to wait for something: every wait is for an event or a
notification, bounded by `anyio.fail_after`; the only timed waits are the timeouts of
`wait_for_commit` itself, whose expiry is what those tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from store import ANY, NO_STREAM, ConcurrencyError, StoreClosed, StoreUnavailable
from store._postgres import PostgresEventStore, open_postgres_store
from store._postgres_batch import write_batch
from store._postgres_listen import channel_name
from store._postgres_schema import quote_ident
from tests._postgres import postgres_connection, url_with_schema
from tests.store._events import Noted, make_registry
from tests.store.test_postgres_batch import Append, rows

# Far longer than anything here takes, far shorter than the waits' timeouts: a call
# that returns within it was woken, not timed out.
WOKEN = 3.0
TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def _store(url: str) -> AsyncIterator[PostgresEventStore]:
    async with open_postgres_store(url, registry=make_registry()) as store:
        yield store


@contextlib.asynccontextmanager
async def _admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await postgres_connection()
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _schema(name: str) -> AsyncIterator[str]:
    """`name` as a schema of the test's own, dropped after (the store creates it)."""
    try:
        yield name
    finally:
        async with _admin() as admin:
            await admin.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")


@contextlib.asynccontextmanager
async def _observer(channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads notified on `channel`, in the order they arrive (a plain asyncpg
    connection listening from the start of the block)."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    def received(conn: object, pid: int, name: str, payload: object) -> None:
        queue.put_nowait(str(payload))

    async with _admin() as conn:
        await conn.add_listener(channel, received)
        yield queue


async def _listening(store: PostgresEventStore) -> int:
    """Make `store` listen (a call that returns at once) and return the head."""
    head = await store.wait_for_commit(2**62, timeout=0)
    assert store._listener.listening
    return head


async def _note(store: PostgresEventStore, stream: str, text: str = "x") -> int:
    return (await store.append(stream, [Noted(text)], expected_version=ANY)).last_position


def _listener_conn(store: PostgresEventStore) -> asyncpg.Connection:
    conn = store._listener._conn
    assert conn is not None
    return conn


def _listener_pid(store: PostgresEventStore) -> int:
    return int(_listener_conn(store).get_server_pid())


# -- the channel ---------------------------------------------------------------------------


def test_the_channel_is_the_schema_s_spelled_out_or_hashed_within_63_bytes() -> None:
    assert channel_name("billing") == "esactors.billing"
    assert channel_name("Billing") != channel_name("billing")
    long_a = "é" * 30 + "a"  # 61 bytes: too long with the prefix
    long_b = "é" * 30 + "b"
    assert len(channel_name(long_a).encode()) <= 63
    assert channel_name(long_a).startswith("esactors#")
    assert channel_name(long_a) != channel_name(long_b)
    fits = "x" * 54  # 63 bytes with the prefix
    assert channel_name(fits) == "esactors." + fits


# -- waking ----------------------------------------------------------------------------


async def test_a_commit_of_another_store_wakes_the_waiter_well_before_the_timeout(
    postgres_url: str,
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        assert await _listening(a) == 0
        done = anyio.Event()
        got: list[int] = []

        async def wait() -> None:
            got.append(await a.wait_for_commit(0, timeout=TIMEOUT))
            done.set()

        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                result = await b.append("s-1", [Noted("a"), Noted("b")], expected_version=NO_STREAM)
                await done.wait()
        assert got == [result.last_position] == [2]
        # the notification woke it: listening since before the append, never reconnected
        assert a._listener.connects == 1
        assert a._listener.head == 2
        # notified only once committed: the woken store reads the events
        events = await a.read_all(from_position=1)
        assert [e.event for e in events] == [Noted("a"), Noted("b")]


async def test_others_head_counts_only_the_commits_of_other_stores(postgres_url: str) -> None:
    """The follower reads at once past `others_head` (no grace for its own publishes):
    notifications from the store's own writer must not raise it, another's must."""
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        await _listening(a)
        assert a.others_head == 0
        called: list[int] = []
        remove = a.add_others_listener(called.append)

        async def heard(position: int) -> None:
            while a._listener.head < position:  # raised by the notification
                await a._listener.changed().wait()

        with anyio.fail_after(WOKEN):
            await heard(await _note(a, "s-1"))
            assert a.others_head == 0
            theirs = await _note(b, "s-2")
            await heard(theirs)
            await heard(await _note(a, "s-3"))
        assert a.others_head == theirs
        assert called == [theirs]  # at once, and not for its own
        assert b.others_head == 0  # b never listened
        remove()
        with anyio.fail_after(WOKEN):
            await heard(await _note(b, "s-4"))
        assert called == [theirs]


async def test_a_head_already_above_is_answered_at_once_and_a_quiet_wait_times_out(
    postgres_url: str,
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        position = await _note(b, "s-1")
        with anyio.fail_after(WOKEN):
            # the first call connects and reads the head: B's commit came before it
            assert await a.wait_for_commit(0, timeout=TIMEOUT) == position
        started = anyio.current_time()
        assert await a.wait_for_commit(position, timeout=0.3) == position
        assert anyio.current_time() - started >= 0.3
        # its own commits count too
        own = await _note(a, "s-2")
        with anyio.fail_after(WOKEN):
            assert await a.wait_for_commit(position, timeout=TIMEOUT) == own


async def test_many_waiters_wake_on_one_commit(postgres_url: str) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        await _listening(a)
        got: list[int] = []

        async def wait() -> None:
            got.append(await a.wait_for_commit(0, timeout=TIMEOUT))

        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(wait)
                position = await _note(b, "s-1")
        assert got == [position] * 5
        assert a._listener.connects == 1


async def test_a_store_in_another_schema_is_not_woken(postgres_url: str) -> None:
    other = f"esactors_test_{uuid.uuid4().hex[:12]}"
    async with _schema(other), _store(url_with_schema(other)) as c, _store(postgres_url) as b:
        assert await _listening(c) == 0
        async with _observer(channel_name(other)) as seen:
            for i in range(3):
                await _note(b, f"s-{i}")
            started = anyio.current_time()
            assert await c.wait_for_commit(0, timeout=0.3) == 0
            assert anyio.current_time() - started >= 0.3
            assert c._listener.head == 0
            assert seen.empty()


async def test_a_63_byte_schema_name_that_needs_quoting_gets_its_notifications() -> None:
    name = 'Esactors "Test" ' + uuid.uuid4().hex + "x" * 15
    assert len(name.encode()) == 63
    async with (
        _schema(name),
        _store(url_with_schema(name)) as a,
        _store(url_with_schema(name)) as b,
    ):
        assert channel_name(name).startswith("esactors#")
        await _listening(a)
        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:
                got: list[int] = []

                async def wait() -> None:
                    got.append(await a.wait_for_commit(0, timeout=TIMEOUT))

                tg.start_soon(wait)
                position = await _note(b, "s-1")
        assert got == [position]


# -- what is notified ----------------------------------------------------------------------


async def test_the_notification_is_delivered_at_the_commit_never_before(
    postgres_url: str, postgres_schema: str
) -> None:
    async with _store(postgres_url) as a:  # creates the schema
        await _note(a, "s-1")
    channel = channel_name(postgres_schema)
    async with _observer(channel) as seen, _admin() as conn, _admin() as other:
        with anyio.fail_after(WOKEN):
            async with conn.transaction():
                batch = [Append("s-2", NO_STREAM, rows(b"x"))]
                await write_batch(conn, postgres_schema, batch, 0.0)
                # committed after the batch's statement ran, before its transaction did
                await other.execute("SELECT pg_notify($1, 'marker')", channel)
                assert await seen.get() == "marker"
            assert await seen.get() == "2"


async def test_a_batch_that_writes_nothing_notifies_nobody(
    postgres_url: str, postgres_schema: str
) -> None:
    async with _store(postgres_url) as b:
        first = await b.append("s-1", [Noted("a")], expected_version=NO_STREAM, command_id="c1")
        async with _observer(channel_name(postgres_schema)) as seen, _admin() as other:
            with pytest.raises(ConcurrencyError):
                await b.append("s-1", [Noted("b")], expected_version=NO_STREAM)
            again = await b.append("s-1", [Noted("a")], expected_version=NO_STREAM, command_id="c1")
            assert again.duplicate
            await b.save_checkpoint("projection", 1)
            await other.execute("SELECT pg_notify($1, 'marker')", channel_name(postgres_schema))
            second = await _note(b, "s-1")
            with anyio.fail_after(WOKEN):
                assert await seen.get() == "marker"
                assert await seen.get() == str(second)
            assert seen.empty()
        assert first.last_position == 1
        assert second == 2


async def test_a_payload_that_is_not_a_position_is_ignored(
    postgres_url: str, postgres_schema: str
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b, _admin() as other:
        await _listening(a)
        channel = channel_name(postgres_schema)
        for payload in ("", "garbage", "-5", "1.5", " 7", "٣", str(2**63), "9" * 40):
            await other.execute("SELECT pg_notify($1, $2)", channel, payload)
        got: list[int] = []
        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    got.append(await a.wait_for_commit(0, timeout=TIMEOUT))

                tg.start_soon(wait)
                position = await _note(b, "s-1")
        assert got == [position] == [1]
        assert a._listener.head == 1
        assert a._listener.listening


# -- a lost connection -----------------------------------------------------------------


async def test_a_lost_listening_connection_is_opened_again_and_the_head_read(
    postgres_url: str,
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b, _admin() as admin:
        head = await _listening(a)
        lost = a._listener.changed()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", _listener_pid(a))
        with anyio.fail_after(WOKEN):
            await lost.wait()
        assert not a._listener.listening
        # committed while nobody listened: the read after the reconnect finds it
        missed = await _note(b, "s-1")
        with anyio.fail_after(WOKEN):
            assert await a.wait_for_commit(head, timeout=TIMEOUT) == missed
        assert a._listener.connects == 2
        # and later notifications arrive on the new connection
        got: list[int] = []
        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    got.append(await a.wait_for_commit(missed, timeout=TIMEOUT))

                tg.start_soon(wait)
                later = await _note(b, "s-1")
        assert got == [later]
        assert a._listener.connects == 2


async def test_a_connection_lost_during_a_wait_is_opened_again_within_it(
    postgres_url: str,
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b, _admin() as admin:
        head = await _listening(a)
        pid = _listener_pid(a)
        got: list[int] = []
        with anyio.fail_after(WOKEN):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    got.append(await a.wait_for_commit(head, timeout=TIMEOUT))

                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                lost = a._listener.changed()
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                await lost.wait()
                # reconnected by the waiter (its catch-up read or a notification finds it)
                position = await _note(b, "s-1")
        assert got == [position]
        assert a._listener.connects == 2
        assert _listener_pid(a) != pid


async def test_a_listener_that_cannot_connect_raises_and_a_later_call_connects(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        listener = a._listener
        good = listener._connect_args
        # nothing listens on port 1
        monkeypatch.setattr(listener, "_connect_args", good._replace(dsn=_port(good.dsn, 1)))
        with pytest.raises(StoreUnavailable):
            await a.wait_for_commit(0, timeout=TIMEOUT)
        with pytest.raises(StoreUnavailable):
            await a.wait_for_commit(0, timeout=TIMEOUT)  # tried again, not stuck
        monkeypatch.setattr(listener, "_connect_args", good)
        position = await _note(b, "s-1")
        with anyio.fail_after(WOKEN):
            assert await a.wait_for_commit(0, timeout=TIMEOUT) == position
        assert listener.connects == 1


async def test_a_wait_cancelled_while_connecting_leaves_nothing_open(postgres_url: str) -> None:
    async with _store(postgres_url) as a, _store(postgres_url) as b:
        listener = a._listener
        connected = 0
        # Cancelled ever later: in the connect, in LISTEN, in the read of the head, after.
        for step in range(60):
            with anyio.move_on_after(step * 0.0003):
                await a.wait_for_commit(2**62, timeout=0)
            conn = listener._conn
            if conn is not None:
                connected += 1
                conn.terminate()  # and again, from the start
            assert not listener.listening
        assert connected > 0
        gc.collect()  # a connection left open would warn here (warnings are errors)
        position = await _note(b, "s-1")
        with anyio.fail_after(WOKEN):
            assert await a.wait_for_commit(0, timeout=TIMEOUT) == position
        assert listener.listening


def _port(dsn: str, port: int) -> str:
    """`dsn` with its port replaced."""
    parts = urlsplit(dsn)
    user, _, _ = parts.netloc.rpartition("@")
    host = f"{parts.hostname}:{port}"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


# -- closing ---------------------------------------------------------------------------


async def test_closing_the_store_closes_the_listener_and_wakes_waiters(
    postgres_url: str,
) -> None:
    outcome: list[BaseException] = []
    with anyio.fail_after(WOKEN):
        async with anyio.create_task_group() as tg, _store(postgres_url) as a:
            head = await _listening(a)
            conn = _listener_conn(a)

            async def wait() -> None:
                try:
                    await a.wait_for_commit(head, timeout=TIMEOUT)
                except StoreClosed as exc:
                    outcome.append(exc)

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
        assert len(outcome) == 1
        assert conn.is_closed()
        assert not a._listener.listening
        with pytest.raises(StoreClosed):
            await a.wait_for_commit(head, timeout=TIMEOUT)
