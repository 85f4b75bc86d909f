"""The command line of `python -m examples.bank_service`: every option is checked before
the service starts, and a bad value exits with status 2 naming the option."""

from __future__ import annotations

import pytest

from examples.bank_service import DATABASE_ENV, GRACE_ENV, worker_app
from examples.bank_service.__main__ import parse_args


def test_the_defaults_and_valid_values_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    args = parse_args([])
    assert (args.port, args.fd, args.grace, args.workers) == (8000, None, 10.0, 1)
    args = parse_args(["--port", "0", "--fd", "3", "--grace", "2.5"])
    assert (args.port, args.fd, args.grace) == (0, 3, 2.5)
    assert parse_args(["--workers", "2"]).workers == 2
    assert parse_args(["--workers", "1", "--fd", "3"]).fd == 3
    assert parse_args(["--port", "65535"]).port == 65535
    monkeypatch.setenv("PORT", "9001")
    assert parse_args([]).port == 9001
    assert parse_args(["--port", "9002"]).port == 9002  # the option wins


def test_the_database_is_a_file_or_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://bank@db.example:5432/bank?schema=accounts"
    monkeypatch.delenv(DATABASE_ENV, raising=False)
    assert parse_args([]).database == "bank.db"
    assert parse_args(["--database", url]).database == url
    monkeypatch.setenv(DATABASE_ENV, url)
    assert parse_args([]).database == url
    assert parse_args(["--database", "other.db"]).database == "other.db"  # the option wins


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "\u0661\u0662"], "--port"),  # Arabic-Indic digits: int() reads 12
        (["--port", "\u00b2"], "--port"),  # superscript two: isdigit(), but not int()
        (["--port", "65536"], "--port"),
        (["--port", "-1"], "--port"),
        (["--port", " 80"], "--port"),
        (["--port", "1_000"], "--port"),  # int() takes underscores
        (["--fd", "-3"], "--fd"),
        (["--fd", "\u0663"], "--fd"),
        (["--grace", "nan"], "--grace"),
        (["--grace", "inf"], "--grace"),
        (["--grace", "-1"], "--grace"),
        (["--grace", "1e3"], "--grace"),
        (["--grace", "\u0661.5"], "--grace"),
        (["--workers", "0"], "--workers"),
        (["--workers", "65"], "--workers"),
        (["--workers", "\u0662"], "--workers"),
    ],
)
def test_a_bad_option_exits_2_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {named}: " in error
    assert repr(argv[1]) in error


@pytest.mark.parametrize("value", ["\u0668\u0660\u0668\u0660", "80 80", "70000", ""])
def test_a_bad_port_in_the_environment_exits_2_naming_it(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", value)
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2
    assert "the PORT environment variable: a port is an int in 0..65535" in capsys.readouterr().err


def test_workers_need_a_port_not_an_inherited_socket(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--workers", "2", "--fd", "3"])
    assert exited.value.code == 2
    assert "argument --fd: not with --workers above 1" in capsys.readouterr().err


def test_the_worker_factory_reads_the_grace_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(GRACE_ENV, "soon")
    with pytest.raises(ValueError, match=GRACE_ENV):
        worker_app()
