"""The demo's simulation and load test on the PostgreSQL store, in a schema of the
test's own: every invariant holds, every acknowledged command is stored, the report
names the backend and never shows a password."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

from demo.__main__ import main
from store._postgres_schema import quote_ident
from tests._postgres import postgres_connection
from tests.demo._acks import read_acks

SMALL = ["--customers", "8", "--steps", "300", "--seed", "3"]
LOAD = ["--aggregates", "20", "--commands", "300", "--concurrency", "16"]


async def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m demo` with `argv` (in a worker thread: it runs an event loop of its own)."""
    capsys.readouterr()
    status = await anyio.to_thread.run_sync(main, argv)
    out, err = capsys.readouterr()
    return status, out, err


def with_password(url: str) -> tuple[str, str]:
    """`url` with a password (the test server trusts the user, so any will do); and the
    password, which no report may show."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url, parts.password
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        pytest.skip("the test server's URL names no user to give a password to")
    return urlunsplit(parts._replace(netloc=f"{user}:s3cret-pw@{host}")), "s3cret-pw"


async def stored(schema: str) -> set[tuple[str, int, int]]:
    conn = await postgres_connection()
    try:
        rows = await conn.fetch(
            f"SELECT stream_id, version, position FROM {quote_ident(schema)}.events"  # noqa: S608
        )
    finally:
        await conn.close()
    return {(r["stream_id"], r["version"], r["position"]) for r in rows}


async def version_gaps(schema: str) -> list[str]:
    conn = await postgres_connection()
    try:
        rows = await conn.fetch(
            "SELECT stream_id, count(*) AS n, min(version) AS low, max(version) AS high"  # noqa: S608
            f" FROM {quote_ident(schema)}.events GROUP BY stream_id"
        )
    finally:
        await conn.close()
    return [r["stream_id"] for r in rows if (r["low"], r["high"]) != (1, r["n"])]


@pytest.mark.slow
async def test_a_simulation_on_postgresql_holds_every_invariant_twice(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, password = with_password(postgres_url)
    reports: list[dict[str, Any]] = []
    for _ in range(2):  # the second run adds to the first and checks the store whole
        status, out, err = await run_main(["simulate", "--db", url, *SMALL, "--json"], capsys)
        assert (status, err) == (0, "")
        assert password not in out
        reports.append(json.loads(out))
    first, second = reports
    for report in reports:
        assert report["ok"] is True, [i for i in report["invariants"] if not i["ok"]]
        assert report["backend"] == "postgresql"
        assert report["errors"] == 0
        assert report["db"].startswith("postgresql://")
        assert ":***@" in report["db"]
    assert first["store_before"] == 0
    assert second["store_before"] == first["store_head"]
    assert second["store_head"] == first["events"] + second["events"]
    assert second["commands_digest"] == first["commands_digest"]


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["deposit", "bank", "shop"])
async def test_each_mix_on_postgresql_stores_every_ack_and_names_the_backend(
    mix: str,
    postgres_url: str,
    postgres_schema: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, password = with_password(postgres_url)
    acks = tmp_path / "acks.tsv"
    argv = ["loadtest", "--mix", mix, *LOAD, "--db", url, "--ack-log", str(acks), "--json"]
    status, out, err = await run_main(argv, capsys)
    assert (status, err) == (0, "")
    assert password not in out
    report = json.loads(out)
    assert (report["backend"], report["writer"]) == ("postgresql", "thread")
    assert ":***@" in report["db"]
    assert (report["commands"], report["errors"], report["projection_ok"]) == (300, 0, True)
    outcome = report["outcome"]
    if mix == "bank":
        assert (outcome["money_conserved"], outcome["in_flight"]) == (True, 0)
    elif mix == "shop":
        assert outcome["revenue_equals_charges"] is True
    logged = read_acks(acks)
    assert len(logged) >= 300
    rows = await stored(postgres_schema)
    assert [ack for ack in logged if ack not in rows] == []
    assert await version_gaps(postgres_schema) == []


async def test_the_text_report_and_options_on_postgresql(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, password = with_password(postgres_url)
    argv = ["loadtest", "--aggregates", "5", "--commands", "50", "--concurrency", "4"]
    argv += ["--synchronous", "NORMAL", "--no-projection", "--db", url]
    status, out, _ = await run_main(argv, capsys)
    assert status == 0
    assert password not in out
    first = out.splitlines()[0]
    assert "synchronous=NORMAL, thread writer, backend postgresql, db postgresql://" in first
    assert "projection lag p99 off" in out


async def test_a_sweep_on_postgresql_runs_each_row_in_a_schema_of_its_own(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["loadtest", "--aggregates", "5", "--commands", "40", "--sweep", "--json"]
    status, out, _ = await run_main([*argv, "--db", postgres_url], capsys)
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["concurrency"] for r in rows] == [1, 10, 100, 1_000]
    assert all(r["backend"] == "postgresql" and r["errors"] == 0 for r in rows)
    schemas = {urlsplit(r["db"]).query for r in rows}
    assert len(schemas) == 4  # a fresh store per row
    conn = await postgres_connection()
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = any($1::text[])",
            [q.partition("schema=")[2] for q in schemas],
        )
    finally:
        await conn.close()
    assert left == 0  # each dropped after its row


async def test_the_process_writer_is_refused_for_postgresql_with_a_message(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["loadtest", "--commands", "10", "--writer", "process", "--db", postgres_url]
    status, out, err = await run_main(argv, capsys)
    assert (status, out) == (2, "")
    assert "--writer process is SQLite's" in err
    assert "PostgreSQL store writes on a connection" in err


async def test_a_sqlite_run_names_its_backend(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["loadtest", "--aggregates", "5", "--commands", "20", "--concurrency", "2", "--json"]
    status, out, _ = await run_main([*argv, "--db", ":memory:"], capsys)
    assert status == 0
    assert json.loads(out)["backend"] == "sqlite"
