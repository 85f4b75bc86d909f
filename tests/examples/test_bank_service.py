"""The bank service over HTTP: every endpoint, the error mapping, idempotency,
read-your-writes, money conservation under concurrent transfers, graceful shutdown."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import structlog
from anyio.lowlevel import checkpoint

from actors import InvalidCommand, open_system
from demo.bank import Account, Deposited, TransferRequested
from examples.bank_service import DATABASE_ENV, ServiceSettings, _accounts, _errors
from store import InvalidStreamId, open_store
from tests._postgres import fresh_schema, url_with_schema
from tests.actors.support import InterloperStore
from tests.examples._asgi import HoldingStore, json_of, serve, settle


@pytest.fixture(params=["file", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The service's database: a SQLite file, or a PostgreSQL URL naming a schema of
    the test's own (tests/_postgres.py)."""
    if request.param == "postgresql":
        async for schema in fresh_schema():
            yield url_with_schema(schema)
    else:
        yield str(tmp_path / "bank.db")


async def open_account(http: httpx.AsyncClient, account_id: str, owner: str = "ada") -> int:
    response = await http.post(f"/accounts/{account_id}/open", json={"owner": owner})
    assert response.status_code == 200, response.text
    position = json_of(response)["position"]
    assert isinstance(position, int)
    return position


async def deposit(http: httpx.AsyncClient, account_id: str, amount: int) -> int:
    response = await http.post(f"/accounts/{account_id}/deposit", json={"amount": amount})
    assert response.status_code == 200, response.text
    position = json_of(response)["position"]
    assert isinstance(position, int)
    return position


async def balance(http: httpx.AsyncClient, account_id: str, after: int) -> int:
    response = await http.get(f"/accounts/{account_id}", headers={"X-Consistent-With": str(after)})
    assert response.status_code == 200, response.text
    value = json_of(response)["balance"]
    assert isinstance(value, int)
    return value


# -- endpoints ---------------------------------------------------------------------------


async def test_open_deposit_withdraw_then_read_balance_and_statement(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        opened = await http.post("/accounts/a1/open", json={"owner": "ada"})
        assert opened.status_code == 200
        assert json_of(opened) == {
            "account_id": "a1",
            "version": 1,
            "position": 1,
            "events": ["bank.account_opened"],
        }
        await deposit(http, "a1", 500)
        withdrawn = await http.post("/accounts/a1/withdraw", json={"amount": 120})
        assert withdrawn.status_code == 200
        body = json_of(withdrawn)
        assert (body["version"], body["events"]) == (3, ["bank.withdrawn"])
        position = body["position"]

        account = await http.get("/accounts/a1", headers={"X-Consistent-With": str(position)})
        assert account.status_code == 200
        assert json_of(account) == {
            "account_id": "a1",
            "owner": "ada",
            "balance": 380,
            "open": True,
            "position": position,
        }
        statement = await http.get(f"/accounts/a1/statement?after={position}")
        assert statement.status_code == 200
        lines = json_of(statement)["lines"]
        assert [(line["kind"], line["amount"], line["balance"]) for line in lines] == [
            ("opened", 0, 0),
            ("deposit", 500, 500),
            ("withdrawal", -120, 380),
        ]
        assert [line["version"] for line in lines] == [1, 2, 3]
        assert (await http.get("/accounts/nobody")).status_code == 404
        assert (await http.get("/accounts/nobody/statement")).status_code == 404


async def test_a_transfer_is_accepted_then_carried_out_by_the_process(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        await open_account(http, "a2", "bob")
        await deposit(http, "a1", 300)
        response = await http.post(
            "/transfers", json={"source": "a1", "target": "a2", "amount": 120, "transfer_id": "t1"}
        )
        assert response.status_code == 202, response.text
        assert json_of(response)["transfer_id"] == "t1"
        assert json_of(response)["events"] == ["bank.transfer_requested"]
        head = await settle(service.bank)
        assert await balance(http, "a1", head) == 180
        assert await balance(http, "a2", head) == 120
        transfer = await http.get("/transfers/t1")
        assert json_of(transfer) == {
            "transfer_id": "t1",
            "status": "completed",
            "source": "a1",
            "target": "a2",
            "amount": 120,
            "reason": "",
        }
        kinds = [
            line["kind"] for line in json_of(await http.get("/accounts/a2/statement"))["lines"]
        ]
        assert kinds == ["opened", "transfer in"]
        assert (await http.get("/transfers/nope")).status_code == 404


async def test_time_travel_by_moment_and_by_version(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        for amount in (10, 20, 40):
            last = await deposit(http, "a1", amount)
        lines = json_of(await http.get(f"/accounts/a1/statement?after={last}"))["lines"]

        by_version = await http.get("/accounts/a1?version=3")
        assert json_of(by_version) == {
            "account_id": "a1",
            "owner": "ada",
            "balance": 30,
            "closed": False,
            "transfers_in_flight": 0,
            "at": None,
            "version": 3,
        }
        before = await http.get("/accounts/a1", params={"at": "2001-01-01T00:00:00Z"})
        assert (json_of(before)["owner"], json_of(before)["balance"]) == (None, 0)
        for line in lines:
            moment = datetime.fromtimestamp(line["recorded_at"], UTC).isoformat()
            expected = [
                other["balance"]
                for other in lines
                if other["recorded_at"] <= datetime.fromisoformat(moment).timestamp()
            ]
            then = json_of(await http.get("/accounts/a1", params={"at": moment}))
            assert then["balance"] == (expected[-1] if expected else 0)
            assert then["at"] == moment
        now = json_of(await http.get("/accounts/a1", params={"at": datetime.now(UTC).isoformat()}))
        assert now["balance"] == 70


async def test_health_reports_the_system_projections_and_process(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        await open_account(http, "a2")
        await deposit(http, "a1", 50)
        await http.post("/transfers", json={"source": "a1", "target": "a2", "amount": 5})
        head = await settle(service.bank)
        response = await http.get("/health")
        assert response.status_code == 200
        health = json_of(response)
        assert health["status"] == "ok"
        assert health["system"]["live_actors"] >= 2
        assert health["system"]["accepting"] is True
        assert health["bus_head"] == head
        assert {p["name"]: (p["position"], p["lag"]) for p in health["projections"]} == {
            "bank.balances": (head, 0),
            "bank.statements": (head, 0),
        }
        (process,) = health["process_managers"]
        assert (process["name"], process["position"]) == ("bank.transfers", head)
        assert health["process_lag"] == {"bank.transfers": 0}
        assert health["store"]["last_position"] == head


async def test_the_database_comes_from_the_environment_by_default(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_ENV, db)  # a SQLite file or a PostgreSQL URL
    async with serve(None) as service:
        await open_account(service.http, "a1")
    async with open_system(db) as system:
        assert len(await system.aggregates(Account).history("a1")) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"consistency_timeout": float("nan")}, "consistency_timeout"),
        ({"consistency_timeout": -1.0}, "consistency_timeout"),
        ({"consistency_timeout": "2"}, "consistency_timeout"),
        ({"consistency_timeout": True}, "consistency_timeout"),
        ({"max_body_bytes": True}, "max_body_bytes"),
        ({"retry_after": -1}, "retry_after"),
    ],
)
def test_settings_refuse_bad_limits_naming_them(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ServiceSettings(**options)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/accounts/a1/deposit", b'{"amount": -5}', "$.amount"),
        ("/accounts/a1/deposit", b'{"amount": 0}', "$.amount"),
        ("/accounts/a1/deposit", b'{"amount": "5"}', "$.amount"),
        ("/accounts/a1/deposit", b'{"amount": 10000000000001}', "$.amount"),
        ("/accounts/a1/deposit", b'{"amount": 5, "note": "x"}', "$.note"),
        ("/accounts/a1/withdraw", b"{}", "$.amount"),
        ("/accounts/a1/open", b'{"owner": ""}', "$.owner"),
        ("/accounts/a1/open", b'{"owner": "' + b"x" * 201 + b'"}', "$.owner"),
        ("/accounts/a1/open", b"not json", "$"),
        ("/accounts/a1/open", b"[]", "$"),
        ("/transfers", b'{"source": "a1", "target": "a 2", "amount": 1}', "$.target"),
        ("/transfers", b'{"source": "a1", "amount": 1}', "$.target"),
        ("/accounts/bad%20id/deposit", b'{"amount": 5}', "id"),
    ],
)
async def test_a_malformed_request_is_422_naming_the_field(
    db: str, path: str, body: bytes, field: str
) -> None:
    async with serve(db) as service:
        await open_account(service.http, "a1")
        response = await service.http.post(path, content=body)
        assert response.status_code == 422, response.text
        error = json_of(response)
        assert (error["error"], error["field"]) == ("invalid_request", field)
        assert error["detail"]
        assert service.bank.system.statistics().commands == 1  # only the open


async def test_bad_headers_and_query_parameters_are_422(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        cases = [
            await http.get("/accounts/a1", headers={"X-Consistent-With": "-1"}),
            await http.get("/accounts/a1?after=soon"),
            await http.get("/accounts/a1?at=yesterday"),
            await http.get("/accounts/a1?at=2020-01-01T00:00:00"),  # no offset
            await http.get("/accounts/a1?version=0"),
            await http.get("/accounts/a1?version=2&at=2020-01-01T00:00:00Z"),
            await http.post(
                "/accounts/a1/deposit", json={"amount": 1}, headers={"Idempotency-Key": "a b"}
            ),
        ]
        fields = [json_of(r)["field"] for r in cases if r.status_code == 422]
        assert fields == [
            "X-Consistent-With",
            "after",
            "at",
            "at",
            "version",
            "at",
            "Idempotency-Key",
        ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=%C2%B2", "after"),  # superscript two: str.isdigit() says yes, int() no
        ("after=%D9%A1", "after"),  # Arabic-Indic one: int() reads it as 1
        ("after=%EF%BC%91", "after"),  # fullwidth one
        ("after=-1", "after"),
        ("after=%2B1", "after"),
        ("after=%201", "after"),
        ("after=9223372036854775808", "after"),  # past SQLite's largest integer
        ("after=" + "9" * 5000, "after"),  # too long for int() itself
        ("version=%C2%B2", "version"),
        ("version=%D9%A1", "version"),
        ("version=-1", "version"),
        ("version=9223372036854775808", "version"),
        ("version=" + "1" * 5000, "version"),
    ],
)
async def test_an_integer_parameter_is_ascii_digits_in_range_or_422(
    db: str, query: str, field: str
) -> None:
    async with serve(db) as service:
        await open_account(service.http, "a1")
        response = await service.http.get(f"/accounts/a1?{query}")
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/json"
        error = json_of(response)
        assert (error["error"], error["field"]) == ("invalid_request", field)
        low = 1 if field == "version" else 0
        assert f"an int in {low}..9223372036854775807 in ASCII digits" in error["detail"]


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "-1", "9223372036854775808"])
async def test_the_consistency_header_is_ascii_digits_in_range_or_422(db: str, value: str) -> None:
    async with serve(db) as service:
        await open_account(service.http, "a1")
        headers = {b"X-Consistent-With": value.encode()}
        response = await service.http.get("/accounts/a1/statement", headers=headers)
        assert response.status_code == 422, response.text
        assert json_of(response)["field"] == "X-Consistent-With"


async def test_the_largest_integers_in_range_are_accepted(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        position = await open_account(http, "a1")
        last = await http.get("/accounts/a1?version=9223372036854775807")
        assert last.status_code == 200, last.text
        assert (json_of(last)["owner"], json_of(last)["version"]) == ("ada", 9223372036854775807)
        padded = await http.get(f"/accounts/a1?after=000{position}")
        assert (padded.status_code, json_of(padded)["position"]) == (200, position)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/accounts/a1%0A/open", {"owner": "ada"}, "id"),
        ("/transfers", {"source": "a1\n", "target": "a2", "amount": 1}, "$.source"),
        (
            "/transfers",
            {"source": "a1", "target": "a2", "amount": 1, "transfer_id": "t\n"},
            "$.transfer_id",
        ),
        ("/transfers", {"source": "a1", "target": "\u0661", "amount": 1}, "$.target"),
    ],
)
async def test_an_id_with_a_trailing_newline_is_422_not_a_poisoned_stream(
    db: str, path: str, body: dict[str, Any], field: str
) -> None:
    async with serve(db) as service:
        await open_account(service.http, "a1")
        await open_account(service.http, "a2")
        response = await service.http.post(path, json=body)
        assert response.status_code == 422, response.text
        assert (json_of(response)["error"], json_of(response)["field"]) == (
            "invalid_request",
            field,
        )
        await settle(service.bank)
        assert service.bank.process.statistics().parked == 0
        assert service.bank.system.statistics().commands == 2  # only the opens


async def test_the_longest_ids_and_keys_make_a_command_the_store_takes(db: str) -> None:
    account, key = "a" * 64, "k" * 200  # both at their limits: 279 characters together
    async with serve(db) as service:
        http = service.http
        headers = {"Idempotency-Key": key}
        first = await http.post(f"/accounts/{account}/open", json={"owner": "ada"}, headers=headers)
        again = await http.post(f"/accounts/{account}/open", json={"owner": "ada"}, headers=headers)
        assert (first.status_code, again.status_code) == (200, 200), first.text
        assert again.headers["Idempotent-Replayed"] == "true"
        # The same long key on another account is another command.
        other = await http.post(f"/accounts/{'b' * 64}/open", json={"owner": "bo"}, headers=headers)
        assert other.status_code == 200, other.text
        assert "Idempotent-Replayed" not in other.headers


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        (b"\xc2\xb2", 422),
        (b"\xd9\xa1", 422),
        (b"-5", 422),
        (b"1" * 5000, 413),
        (b"0" * 5000 + b"13", 200),
    ],
)
async def test_a_content_length_is_ascii_digits_or_422(
    db: str, declared: bytes, status: int
) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        response = await http.post(
            "/accounts/a1/deposit", content=b'{"amount": 1}', headers={b"Content-Length": declared}
        )
        assert response.status_code == status, response.text
        if status == 422:
            assert json_of(response)["field"] == "Content-Length"


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "allow"),
    [
        ("GET", "/nowhere", 404, "not_found", None),
        ("POST", "/accounts/a1/close", 404, "not_found", None),
        ("GET", "/accounts/a1/deposit", 405, "method_not_allowed", "POST"),
        ("POST", "/accounts/a1", 405, "method_not_allowed", "GET, HEAD"),
        ("DELETE", "/health", 405, "method_not_allowed", "GET, HEAD"),
        ("GET", "/transfers", 405, "method_not_allowed", "POST"),
    ],
)
async def test_an_unknown_route_or_method_answers_the_json_error_shape(
    db: str, method: str, path: str, status: int, error: str, allow: str | None
) -> None:
    async with serve(db) as service:
        response = await service.http.request(method, path, headers={"X-Correlation-Id": "corr-7"})
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers.get("Allow") == allow
        assert response.headers["X-Correlation-Id"] == "corr-7"
        body = json_of(response)
        assert set(body) == {"error", "detail"}
        assert body["error"] == error
        assert path in body["detail"]
        if allow is not None:
            assert f"{method} is not allowed" in body["detail"]
            assert allow in body["detail"]


async def test_a_bug_answers_500_in_the_json_error_shape(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(result: object) -> tuple[str, ...]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_accounts, "tags", broken)
    async with serve(db) as service:
        # A server logs the exception it re-raises after the reply; this client keeps it.
        transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bank.test") as http:
            response = await http.post(
                "/accounts/a1/open", json={"owner": "ada"}, headers={"X-Correlation-Id": "c-9"}
            )
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.headers["X-Correlation-Id"] == "c-9"
        body = json_of(response)
        assert body["error"] == "internal"
        assert "a bug" not in body["detail"]


async def test_a_body_over_the_limit_is_413_before_decoding(db: str) -> None:
    settings = ServiceSettings(max_body_bytes=64)
    async with serve(db, settings=settings) as service:
        http = service.http
        await open_account(http, "a1")
        big = b'{"amount": 5' + b" " * 100 + b"}"
        response = await http.post("/accounts/a1/deposit", content=big)
        assert response.status_code == 413
        assert json_of(response)["error"] == "too_large"

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b"          "

        streamed = await http.post("/accounts/a1/deposit", content=chunks())
        assert streamed.status_code == 413
        assert service.bank.system.statistics().commands == 1


async def test_a_refusal_by_the_domain_is_409_with_its_reason(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        await deposit(http, "a1", 10)
        cases = {
            "InsufficientFunds": await http.post("/accounts/a1/withdraw", json={"amount": 11}),
            "AccountNotOpen": await http.post("/accounts/zz/deposit", json={"amount": 1}),
            "AlreadyOpen": await http.post("/accounts/a1/open", json={"owner": "eve"}),
            "SameAccount": await http.post(
                "/transfers", json={"source": "a1", "target": "a1", "amount": 1}
            ),
        }
        for kind, response in cases.items():
            assert response.status_code == 409, (kind, response.text)
            error = json_of(response)
            assert (error["error"], error["type"]) == ("rejected", kind)
            assert error["detail"]
        assert "holds 10 cents, not 11" in json_of(cases["InsufficientFunds"])["detail"]


async def test_repeated_write_conflicts_are_409(db: str) -> None:
    async with open_store(db) as inner:
        interloper = InterloperStore(inner, Deposited(amount=1), times=10)
        async with serve(interloper.as_store(), max_attempts=2) as service:
            response = await service.http.post("/accounts/a1/open", json={"owner": "ada"})
            assert response.status_code == 409, response.text
            assert (json_of(response)["error"], json_of(response)["type"]) == (
                "conflict",
                "TooManyAttempts",
            )
            assert interloper.conflicts_caused == 2


async def test_a_full_mailbox_and_an_ask_timeout_are_503_with_retry_after(db: str) -> None:
    async with open_store(db) as inner:
        store = HoldingStore(inner)
        async with serve(store.as_store(), mailbox_capacity=1, ask_timeout=0.2) as service:
            http = service.http
            await open_account(http, "a1")
            responses: dict[str, httpx.Response] = {}
            done = {"queued": anyio.Event(), "refused": anyio.Event()}

            async def send(name: str, amount: int) -> None:
                responses[name] = await http.post("/accounts/a1/deposit", json={"amount": amount})
                if name in done:
                    done[name].set()

            async with anyio.create_task_group() as tg:
                store.hold()
                tg.start_soon(send, "first", 1)
                await store.entered.wait()  # the actor is busy appending "first"
                tg.start_soon(send, "queued", 2)
                await anyio.wait_all_tasks_blocked()
                assert service.bank.system.statistics().queued == 1  # the mailbox is full
                tg.start_soon(send, "refused", 4)
                await done["queued"].wait()
                await done["refused"].wait()
                store.release()
            assert responses["first"].status_code == 200
            for name, error in (("queued", "timeout"), ("refused", "busy")):
                response = responses[name]
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "1"
                assert json_of(response)["error"] == error
            # A command whose caller gave up before the actor took it is skipped (in
            # general a timed-out command's outcome is unknown: retry with the same key).
            assert await balance(http, "a1", await settle(service.bank)) == 1


async def test_a_read_that_cannot_catch_up_in_time_is_503(db: str) -> None:
    settings = ServiceSettings(consistency_timeout=0.05, retry_after=3)
    async with serve(db, settings=settings) as service:
        position = await open_account(service.http, "a1")
        far = {"X-Consistent-With": str(position + 1_000)}
        for path in ("/accounts/a1", "/accounts/a1/statement"):
            response = await service.http.get(path, headers=far)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "3"
            assert json_of(response)["error"] == "not_yet_consistent"


# -- idempotency, consistency, concurrency -------------------------------------------------


async def test_a_retried_request_with_the_same_key_is_applied_once(db: str) -> None:
    key = {"Idempotency-Key": "pay-42"}
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        await open_account(http, "a2")
        first = await http.post("/accounts/a1/deposit", json={"amount": 25}, headers=key)
        again = await http.post("/accounts/a1/deposit", json={"amount": 25}, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.content == first.content
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"
        # The same key on another route or account names another command.
        other_route = await http.post("/accounts/a1/withdraw", json={"amount": 5}, headers=key)
        other_account = await http.post("/accounts/a2/deposit", json={"amount": 7}, headers=key)
        assert other_route.status_code == other_account.status_code == 200
        assert "Idempotent-Replayed" not in other_route.headers

        transfer = {"source": "a1", "target": "a2", "amount": 3}
        t1 = await http.post("/transfers", json=transfer, headers={"Idempotency-Key": "t-k"})
        t2 = await http.post("/transfers", json=transfer, headers={"Idempotency-Key": "t-k"})
        assert (t1.status_code, t2.status_code) == (202, 202)
        assert t1.content == t2.content
        head = await settle(service.bank)
        assert await balance(http, "a1", head) == 25 - 5 - 3
        assert await balance(http, "a2", head) == 7 + 3
    # After a restart the key is found in the store: still the same response.
    async with serve(db) as service:
        replay = await service.http.post("/accounts/a1/deposit", json={"amount": 25}, headers=key)
        assert replay.content == first.content
        assert replay.headers["Idempotent-Replayed"] == "true"
        accounts = service.bank.accounts
        deposits = [r.event for r in await accounts.history("a1") if isinstance(r.event, Deposited)]
        assert deposits == [Deposited(amount=25)]
        transfer_id = json_of(t1)["transfer_id"]
        assert isinstance(transfer_id, str)
        requested = await service.bank.transfers.history(transfer_id)
        assert sum(isinstance(r.event, TransferRequested) for r in requested) == 1


async def test_reads_with_the_consistency_header_see_their_own_writes(db: str) -> None:
    accounts = ["a0", "a1", "a2", "a3"]
    async with serve(db) as service:
        http = service.http
        for account in accounts:
            await open_account(http, account)
        seen: list[tuple[int, int]] = []

        async def write_then_read(index: int) -> None:
            account = accounts[index % len(accounts)]
            position = await deposit(http, account, index + 1)
            header = {"X-Consistent-With": str(position)}
            statement = json_of(await http.get(f"/accounts/{account}/statement", headers=header))
            mine = [line for line in statement["lines"] if line["position"] == position]
            assert [(line["kind"], line["amount"]) for line in mine] == [("deposit", index + 1)]
            view = json_of(await http.get(f"/accounts/{account}", headers=header))
            assert view["position"] >= position
            seen.append((index, position))

        async with anyio.create_task_group() as tg:
            for index in range(40):
                tg.start_soon(write_then_read, index)
        assert sorted(i for i, _ in seen) == list(range(40))
        assert len({p for _, p in seen}) == 40


async def test_concurrent_transfers_conserve_money(db: str) -> None:
    rng = random.Random(7)
    accounts = [f"acc{i}" for i in range(8)]
    async with serve(db) as service:
        http = service.http
        for account in accounts:
            await open_account(http, account)
            await deposit(http, account, 1_000)
        statuses: list[int] = []

        async def transfer(index: int, source: str, target: str, amount: int) -> None:
            body = {
                "source": source,
                "target": target,
                "amount": amount,
                "transfer_id": f"t{index}",
            }
            statuses.append((await http.post("/transfers", json=body)).status_code)

        async with anyio.create_task_group() as tg:
            for index in range(200):
                source, target = rng.sample(accounts, 2)
                if index % 25 == 0:
                    target = "ghost"  # never opened: the credit is refused, then refunded
                tg.start_soon(transfer, index, source, target, rng.randint(1, 400))
        assert statuses == [202] * 200
        head = await settle(service.bank)
        balances = [await balance(http, account, head) for account in accounts]
        assert sum(balances) == 1_000 * len(accounts)
        assert min(balances) >= 0
        outcomes = [
            json_of(await http.get(f"/transfers/t{index}"))["status"] for index in range(200)
        ]
        assert set(outcomes) <= {"completed", "failed"}
        assert outcomes.count("failed") >= 200 // 25  # every transfer to the ghost failed
        assert service.bank.process.dead_letters() == ()


async def test_shutdown_with_requests_in_flight_loses_no_acknowledged_command(db: str) -> None:
    accounts = [f"a{i}" for i in range(5)]
    acknowledged: list[tuple[str, int, int]] = []
    refused: list[httpx.Response] = []
    async with open_store(db) as inner:
        store = HoldingStore(inner)
        async with serve(store.as_store()) as service:
            http = service.http
            for account in accounts:
                await open_account(http, account)

            async def send(index: int) -> None:
                account = accounts[index % len(accounts)]
                response = await http.post(f"/accounts/{account}/deposit", json={"amount": 1})
                if response.status_code == 200:
                    body = json_of(response)
                    acknowledged.append((account, body["version"], body["position"]))
                else:
                    refused.append(response)

            async with anyio.create_task_group() as tg:
                store.hold()
                for index in range(30):
                    tg.start_soon(send, index)
                await store.entered.wait()
                await anyio.wait_all_tasks_blocked()  # every request is in an actor or a mailbox
                await service.lifespan.begin_shutdown()
                await anyio.wait_all_tasks_blocked()
                assert not service.bank.system.accepting
                late = await http.post("/accounts/a0/deposit", json={"amount": 1})
                assert late.status_code == 503
                assert late.headers["Retry-After"] == "1"
                assert json_of(late)["error"] == "shutting_down"
                health = await http.get("/health")
                assert (health.status_code, json_of(health)["status"]) == (503, "stopping")
                store.release()
                with anyio.fail_after(15):
                    await service.lifespan.wait_stopped()
            assert len(acknowledged) == 30  # accepted before the shutdown: all answered
            assert refused == []
    async with open_system(db) as system:
        router = system.aggregates(Account)
        stored = {
            (account, r.version, r.position)
            for account in accounts
            for r in await router.history(account)
        }
        assert set(acknowledged) <= stored
        assert len(stored) == len(accounts) + 30


async def test_request_logs_carry_the_correlation_and_command_ids(db: str) -> None:
    async with serve(db) as service:
        http = service.http
        await open_account(http, "a1")
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            response = await http.post(
                "/accounts/a1/deposit",
                json={"amount": 5},
                headers={"Idempotency-Key": "k1", "X-Correlation-Id": "corr-1"},
            )
            anonymous = await http.get("/accounts/a1")
            await checkpoint()
        assert response.headers["X-Correlation-Id"] == "corr-1"
        handled = [e for e in logs if e["event"] == "request.handled"]
        assert [(e["correlation_id"], e["command_id"], e["status"]) for e in handled] == [
            ("corr-1", "http:deposit:a1:k1", 200),
            (anonymous.headers["X-Correlation-Id"], None, 200),
        ]
        accepted = [e for e in logs if e["event"] == "command.accepted"]
        assert [(e["correlation_id"], e["command_id"]) for e in accepted] == [
            ("corr-1", "http:deposit:a1:k1")
        ]
        assert len(anonymous.headers["X-Correlation-Id"]) == 32
        assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.parametrize(
    "error",
    [
        InvalidCommand("Account", "field 'amount': Expected `int`, got `float`"),
        InvalidStreamId("account-\x00", "it contains control, format or separator characters"),
    ],
)
def test_a_refusal_at_the_runtimes_door_is_a_422_not_a_500(error: Exception) -> None:
    mapped = _errors.error_response(error)
    assert mapped is not None
    status, reply, retry = mapped
    assert (status, reply.error, reply.type, retry) == (
        422,
        "invalid_request",
        type(error).__name__,
        False,
    )
