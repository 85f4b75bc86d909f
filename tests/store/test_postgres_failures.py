"""The PostgreSQL store when the server or the network fails: connecting (no server, a
refused login, no such database), a connection lost mid-commit or mid-read, and a
server gone for longer than `busy_timeout`.

Against the test server ($ESACTORS_TEST_POSTGRES, see tests/_postgres.py), each test in
a schema of its own. The shared server is never stopped: a server that goes away is a
TCP proxy in this process that the test cuts, and a connection lost is
`pg_terminate_backend` of the store's own backend (found by its pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import asyncpg
import pytest
from structlog.testing import capture_logs

from store import NO_STREAM, AppendResult, StoreUnavailable, open_store
from store._postgres import PostgresEventStore, open_postgres_store
from store._postgres_schema import quote_ident
from tests._postgres import POSTGRES_URL, postgres_connection
from tests.store._events import Noted, make_registry

PASSWORD = "pw-" + uuid.uuid4().hex  # never to be seen in an error or a log line


def _with(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
) -> str:
    """`url` with its user, password, host, port or database replaced."""
    parts = urlsplit(url)
    user = user if user is not None else (parts.username or "postgres")
    host = host if host is not None else (parts.hostname or "localhost")
    port = port if port is not None else (parts.port or 5432)
    netloc = quote(user, safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += f"@{host}:{port}"
    path = "/" + database if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _assert_no_password(error: BaseException, logs: list[MutableMapping[str, Any]]) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert PASSWORD not in text
    assert quote(PASSWORD, safe="") not in text
    for line in logs:
        assert PASSWORD not in repr(line), line


def _free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- connecting ---------------------------------------------------------------------------


async def test_no_server_at_the_port_is_unavailable_naming_where(postgres_schema: str) -> None:
    port = _free_port()
    url = _with(POSTGRES_URL, password=PASSWORD, host="127.0.0.1", port=port)
    with capture_logs() as logs, anyio.fail_after(10), pytest.raises(StoreUnavailable) as caught:
        async with open_store(url, schema=postgres_schema, busy_timeout=1):
            pass
    message = str(caught.value)
    assert f"127.0.0.1:{port}/" in message
    assert "cannot be reached" in message
    _assert_no_password(caught.value, logs)


async def test_no_such_database_is_unavailable_naming_it(postgres_schema: str) -> None:
    database = f"esactors_missing_{uuid.uuid4().hex[:8]}"
    url = _with(POSTGRES_URL, password=PASSWORD, database=database)
    with capture_logs() as logs, pytest.raises(StoreUnavailable) as caught:
        async with open_store(url, schema=postgres_schema):
            pass
    parts = urlsplit(POSTGRES_URL)
    assert f"{parts.hostname}:{parts.port or 5432}/{database}" in str(caught.value)
    assert "does not exist" in str(caught.value)
    _assert_no_password(caught.value, logs)


@pytest.fixture
async def role() -> AsyncIterator[str]:
    """A role of this test's own, with a password, that may not log in (dropped after).

    The test server trusts local connections (pg_hba `trust`): it never asks for a
    password, so a wrong one cannot be refused as such. What it does refuse is a role
    that may not log in, or one that does not exist: the same path of the store
    (an authorization error at connect), with a password in the URL."""
    admin = await postgres_connection()
    name = f"esactors_role_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f"CREATE ROLE {quote_ident(name)} NOLOGIN PASSWORD 'right-password'")
        yield name
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
        await admin.close()


async def test_a_refused_login_is_unavailable_without_the_password(
    role: str, postgres_schema: str
) -> None:
    for user in (role, f"esactors_nobody_{uuid.uuid4().hex[:8]}"):
        url = _with(POSTGRES_URL, user=user, password=PASSWORD)
        with capture_logs() as logs, pytest.raises(StoreUnavailable) as caught:
            async with open_store(url, schema=postgres_schema):
                pass
        parts = urlsplit(POSTGRES_URL)
        assert f"{parts.hostname}:{parts.port or 5432}{parts.path}" in str(caught.value)
        assert "authentication failed" in str(caught.value)
        assert user in str(caught.value)  # the server's reason names the role
        _assert_no_password(caught.value, logs)


@contextlib.asynccontextmanager
async def _fake_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_a_wrong_password_is_unavailable_without_the_password(
    postgres_schema: str,
) -> None:
    """The real server cannot refuse a password here (it trusts local connections), so
    a fake one speaks the protocol's start: it asks for the password in clear text,
    receives it (so the driver did send it), and refuses it as PostgreSQL does."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                body = await reader.readexactly(length - 4)
                if body[:4] == (80877103).to_bytes(4, "big"):  # SSLRequest: no TLS here
                    writer.write(b"N")
                    continue
                break  # the startup message
            writer.write(b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big"))  # clear text
            await writer.drain()
            assert await reader.readexactly(1) == b"p"
            length = int.from_bytes(await reader.readexactly(4), "big")
            received.append(await reader.readexactly(length - 4))
            fields = (
                b"".join(
                    key + value + b"\x00"
                    for key, value in (
                        (b"S", b"FATAL"),
                        (b"V", b"FATAL"),
                        (b"C", b"28P01"),
                        (b"M", b'password authentication failed for user "postgres"'),
                    )
                )
                + b"\x00"
            )
            writer.write(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with _fake_server(handle) as port:
        url = _with(POSTGRES_URL, host="127.0.0.1", port=port, password=PASSWORD)
        with (
            capture_logs() as logs,
            anyio.fail_after(10),
            pytest.raises(StoreUnavailable) as caught,
        ):
            async with open_store(url, schema=postgres_schema, busy_timeout=2):
                pass
        assert received == [PASSWORD.encode() + b"\x00"]
        assert f"127.0.0.1:{port}/" in str(caught.value)
        assert "authentication failed" in str(caught.value)
        _assert_no_password(caught.value, logs)


# -- a connection lost ---------------------------------------------------------------------


async def _wait_for(condition: Callable[[], Any], what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):  # polling the server: there is no event to wait on
        if await condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"waited {seconds} s for {what}")


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    # gone once the server no longer lists it
    await _wait_for(
        lambda: admin.fetchval("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1", pid),
        f"backend {pid} to end",
    )


def _writer_pid(store: PostgresEventStore) -> int:
    conn = store._writer.conn
    assert conn is not None
    return int(conn.get_server_pid())


@contextlib.asynccontextmanager
async def _counter_held(admin: asyncpg.Connection, schema: str) -> AsyncIterator[None]:
    """Hold the schema's position counter row (as another process's batch does): every
    batch waits for it until the block ends."""
    async with admin.transaction():
        await admin.execute(
            f"SELECT last_position FROM {quote_ident(schema)}.position_counter FOR UPDATE"  # noqa: S608
        )
        yield


async def test_the_writers_connection_has_the_application_name(
    postgres_url: str,
) -> None:
    admin = await postgres_connection()
    try:
        async with open_postgres_store(postgres_url, registry=make_registry()) as store:
            await store.append("s", [Noted("a")], expected_version=NO_STREAM)
            pid = _writer_pid(store)
            names = await admin.fetch(
                "SELECT pid, application_name FROM pg_stat_activity WHERE pid = $1", pid
            )
            assert [tuple(row) for row in names] == [(pid, "esactors-writer")]
            async with store._readers.acquire() as reader:
                name = await reader.fetchval("SHOW application_name")
            assert name == "esactors-reader"
        # a name the URL gives wins
        async with open_postgres_store(postgres_url + "&application_name=billing") as store:
            assert store._writer.conn is not None
            assert await store._writer.conn.fetchval("SHOW application_name") == "billing"
            async with store._readers.acquire() as reader:
                assert await reader.fetchval("SHOW application_name") == "billing"
    finally:
        await admin.close()


async def test_a_commit_whose_connection_is_lost_is_of_unknown_outcome_then_resent(
    postgres_url: str, postgres_schema: str
) -> None:
    """The writer's backend is terminated while its batch waits for the counter row (so
    the batch did not commit): its appends fail with an outcome-unknown
    `StoreUnavailable`; the writer reconnects, and resending with the same command id
    commits now."""
    admin = await postgres_connection()
    other = await postgres_connection()
    try:
        async with open_postgres_store(postgres_url, registry=make_registry()) as store:
            await store.append("s", [Noted("first")], expected_version=NO_STREAM)
            pid = _writer_pid(store)
            errors: list[BaseException] = []

            async def append(command_id: str, text: str) -> None:
                try:
                    await store.append(
                        "s", [Noted(text)], expected_version=1, command_id=command_id
                    )
                except StoreUnavailable as exc:
                    errors.append(exc)

            with capture_logs():
                async with _counter_held(other, postgres_schema), anyio.create_task_group() as tg:
                    tg.start_soon(append, "cmd-lost", "lost")
                    tg.start_soon(append, "cmd-lost-2", "lost too")
                    await _wait_for(
                        lambda: admin.fetchval(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                            pid,
                        ),
                        "the writer to wait for the counter row",
                    )
                    await _terminate(admin, pid)
            assert len(errors) == 2
            for error in errors:
                assert "outcome" in str(error)
                assert "unknown" in str(error)
                assert "resend" in str(error)
            # nothing of the lost batch committed (it never got the counter row)
            assert [e.event for e in await store.read_stream("s")] == [Noted("first")]
            resent = await store.append(
                "s", [Noted("lost")], expected_version=1, command_id="cmd-lost"
            )
            assert resent == AppendResult("s", 2, 2, 2, 2)
            assert _writer_pid(store) != pid  # a new connection
            later = await store.append("s", [Noted("later")], expected_version=2)
            assert later == AppendResult("s", 3, 3, 3, 3)
            assert [e.position for e in await store.read_all()] == [1, 2, 3]
    finally:
        await admin.close()
        await other.close()


class _Proxy:
    """A TCP proxy to the test server, in this process: the test can hold back the
    server's replies, cut every connection, and stop accepting new ones (a server gone
    away, without touching the shared server)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.StreamWriter] = []
        self.replies = asyncio.Event()  # set: the server's bytes flow to the client
        self.replies.set()
        self.silent = False  # accept connections but never answer (a black hole)
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting (the port refuses) and cut every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()

    def cut(self) -> None:
        for writer in self._transports:
            writer.transport.abort()
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.append(writer)
        if self.silent:
            return  # held open, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._transports.append(up_writer)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event | None
        ) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if gate is not None:
                        await gate.wait()
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer, None), pump(up_reader, writer, self.replies))


@pytest.fixture
async def proxy() -> AsyncIterator[_Proxy]:
    parts = urlsplit(POSTGRES_URL)
    proxied = _Proxy(parts.hostname or "localhost", parts.port or 5432)
    await proxied.start()
    try:
        yield proxied
    finally:
        await proxied.stop()


def _through(proxy: _Proxy, url: str) -> str:
    return _with(url, host="127.0.0.1", port=proxy.port)


async def test_a_commit_whose_reply_is_lost_is_answered_as_a_duplicate_when_resent(
    proxy: _Proxy, postgres_url: str, postgres_schema: str
) -> None:
    """The batch commits on the server, then the connection breaks before its reply
    arrives: the append fails with an outcome-unknown `StoreUnavailable`; resending it
    with its command id answers the first result, as a duplicate."""
    admin = await postgres_connection()
    events = f"{quote_ident(postgres_schema)}.events"
    try:
        async with open_postgres_store(
            _through(proxy, postgres_url), registry=make_registry()
        ) as store:
            await store.append("s", [Noted("first")], expected_version=NO_STREAM)
            outcome: list[BaseException | AppendResult] = []

            async def append() -> None:
                try:
                    outcome.append(
                        await store.append(
                            "s", [Noted("second")], expected_version=1, command_id="cmd-2"
                        )
                    )
                except StoreUnavailable as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                proxy.replies.clear()
                tg.start_soon(append)
                await _wait_for(
                    lambda: admin.fetchval(f"SELECT count(*) = 2 FROM {events}"),  # noqa: S608
                    "the batch to commit",
                )
                proxy.cut()
                proxy.replies.set()
            assert len(outcome) == 1
            assert isinstance(outcome[0], StoreUnavailable)
            assert "unknown" in str(outcome[0])
            resent = await store.append(
                "s", [Noted("second")], expected_version=1, command_id="cmd-2"
            )
            assert resent == AppendResult("s", 2, 2, 2, 2, duplicate=True)
            later = await store.append("s", [Noted("third")], expected_version=2)
            assert later == AppendResult("s", 3, 3, 3, 3)
            assert [e.event for e in await store.read_stream("s")] == [
                Noted("first"),
                Noted("second"),
                Noted("third"),
            ]
    finally:
        await admin.close()


async def test_the_reader_pool_outlives_a_terminated_reader_connection(
    postgres_url: str,
) -> None:
    """The server ends the pool's idle connections; every read after works, at once or
    once the server has them gone (the store reads once more on a fresh connection when
    asyncpg finds the old one dead: its first use may even break asyncpg's protocol
    state, asyncpg #1069, which must not take the store down)."""
    admin = await postgres_connection()
    try:
        name = f"esactors-test-{uuid.uuid4().hex[:8]}"  # this store's connections only
        url = f"{postgres_url}&application_name={name}"
        async with open_postgres_store(url, registry=make_registry()) as store:
            await store.append("s", [Noted("a")], expected_version=NO_STREAM)
            for round_ in range(12):
                assert len(await store.read_stream("s")) == 1
                pids = [
                    row["pid"]
                    for row in await admin.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", name
                    )
                    if row["pid"] != _writer_pid(store)
                ]
                assert pids  # the pool's connections
                for pid in pids:
                    if round_ % 2:
                        await _terminate(admin, pid)  # and wait until it is gone
                    else:
                        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                # every read after works: the pool replaces the dead connection
                assert [e.event for e in await store.read_stream("s")] == [Noted("a")]
                assert await store.last_position() == 1
    finally:
        await admin.close()


async def test_a_terminated_idle_writer_connection_fails_one_batch_at_most(
    postgres_url: str,
) -> None:
    """The server ends the writer's idle connection: the next append works, or (when
    asyncpg learns of it only by using the connection) fails once with an
    outcome-unknown `StoreUnavailable`; resent with its command id, it commits once."""
    admin = await postgres_connection()
    try:
        async with open_postgres_store(postgres_url, registry=make_registry()) as store:
            await store.append("s", [Noted("0")], expected_version=NO_STREAM)
            failed = 0
            for n in range(1, 9):
                await admin.fetchval("SELECT pg_terminate_backend($1)", _writer_pid(store))

                async def append(n: int = n) -> AppendResult:
                    return await store.append(
                        "s", [Noted(str(n))], expected_version=n, command_id=f"cmd-{n}"
                    )

                try:
                    result = await append()
                except StoreUnavailable as exc:
                    error = str(exc)
                    failed += 1
                    result = await append()
                    assert "unknown" in error
                assert (result.first_version, result.duplicate) == (n + 1, False)
            events = await store.read_stream("s")
            assert [e.event for e in events] == [Noted(str(n)) for n in range(9)]
            assert [e.position for e in events] == list(range(1, 10))
            print(f"{failed} of 8 appends after a terminated idle writer failed once")
    finally:
        await admin.close()


async def test_a_server_gone_longer_than_busy_timeout_fails_appends_without_hanging(
    proxy: _Proxy, postgres_url: str
) -> None:
    """The server goes away (the proxy cuts every connection and its port refuses):
    appends fail with `StoreUnavailable` once the writer's reconnecting has taken
    `busy_timeout`; once the server is back, appends work again."""
    async with open_postgres_store(
        _through(proxy, postgres_url), registry=make_registry(), busy_timeout=1
    ) as store:
        await store.append("s", [Noted("a")], expected_version=NO_STREAM)
        await proxy.stop()
        started = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(StoreUnavailable) as caught:
            await store.append("s", [Noted("b")], expected_version=1)
        waited = anyio.current_time() - started
        assert waited < 5
        assert "cannot be reached" in str(caught.value) or "unknown" in str(caught.value)
        with anyio.fail_after(10), pytest.raises(StoreUnavailable):
            await store.read_stream("s")
        await proxy.start()  # back, on the same port
        with anyio.fail_after(10):
            assert (await store.append("s", [Noted("b")], expected_version=1)).last_version == 2
            assert len(await store.read_stream("s")) == 2


async def test_a_server_that_stops_answering_fails_appends_without_hanging(
    proxy: _Proxy, postgres_url: str
) -> None:
    """The network swallows everything (replies held back, new connections never
    answered) while a batch is in flight: the append fails with an outcome-unknown
    `StoreUnavailable` rather than waiting forever."""
    async with open_postgres_store(
        _through(proxy, postgres_url), registry=make_registry(), busy_timeout=0.5
    ) as store:
        await store.append("s", [Noted("a")], expected_version=NO_STREAM)
        proxy.replies.clear()
        proxy.silent = True
        with anyio.fail_after(15), pytest.raises(StoreUnavailable) as caught:
            await store.append("s", [Noted("b")], expected_version=1, command_id="cmd-b")
        assert "unknown" in str(caught.value)
        proxy.cut()
        proxy.silent = False
        proxy.replies.set()
        with anyio.fail_after(10):
            result = await store.append("s", [Noted("b")], expected_version=1, command_id="cmd-b")
        assert result.last_version == 2


async def test_a_lock_held_longer_than_the_store_waits_fails_the_append_cleanly(
    postgres_url: str, postgres_schema: str
) -> None:
    """Another connection holds the counter row past busy_timeout x (busy_retries + 1):
    the server gives up the writer's statement (lock_timeout), so the append fails with
    `StoreUnavailable` saying nothing was written (not an unknown outcome), and the
    connection stays in use."""
    other = await postgres_connection()
    try:
        async with open_postgres_store(
            postgres_url, registry=make_registry(), busy_timeout=0.1, busy_retries=1
        ) as store:
            await store.append("s", [Noted("a")], expected_version=NO_STREAM)
            pid = _writer_pid(store)
            started = anyio.current_time()
            async with _counter_held(other, postgres_schema):
                with anyio.fail_after(10), pytest.raises(StoreUnavailable) as caught:
                    await store.append("s", [Noted("b")], expected_version=1)
            assert anyio.current_time() - started < 5
            assert "nothing was written" in str(caught.value)
            assert (await store.append("s", [Noted("b")], expected_version=1)).last_version == 2
            assert _writer_pid(store) == pid
    finally:
        await other.close()


def test_the_postgresql_store_refuses_an_event_loop_other_than_asyncio() -> None:
    """asyncpg runs on asyncio only: opened from a coroutine driven by anything else (no
    asyncio loop running, as under trio), the store says so before connecting."""
    opening = open_store("postgresql://nobody@127.0.0.1:1/none").__aenter__()
    with pytest.raises(StoreUnavailable, match="runs on asyncio only"):
        opening.send(None)
    opening.close()
