from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from store._logging import get_logger


@pytest.fixture
def unconfigured() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_an_unconfigured_app_sees_warnings_on_stderr_and_nothing_else(
    unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = get_logger("store", path="bank.db")
    log.debug("noise.debug")
    log.info("noise.info")
    log.warning("store.snapshot_corrupt", stream_id="account-1")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "noise" not in captured.err
    assert "event='store.snapshot_corrupt'" in captured.err
    assert "stream_id='account-1'" in captured.err
    assert "path='bank.db'" in captured.err
    assert "logger='store'" in captured.err


def test_a_logger_made_before_configuration_follows_it(unconfigured: None) -> None:
    log = get_logger("actors", aggregate="account").bind(stream_id="account-1")
    with capture_logs() as logs:
        log.info("actor.loaded", version=3)
        log.error("actor.crashed")
    assert logs == [
        {
            "aggregate": "account",
            "stream_id": "account-1",
            "version": 3,
            "event": "actor.loaded",
            "log_level": "info",
        },
        {
            "aggregate": "account",
            "stream_id": "account-1",
            "event": "actor.crashed",
            "log_level": "error",
        },
    ]


def test_a_level_the_configuration_filters_out_builds_no_logger(
    unconfigured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filtered debug call on the hot path (an actor's load) costs a lookup, not the
    binding of a logger; a level that passes still logs through the configuration."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        processors=[structlog.testing.LogCapture()],
    )
    built: list[str] = []
    real = structlog.get_logger

    def counting(*args: Any, **kw: Any) -> Any:
        built.append(args[0] if args else "")
        return real(*args, **kw)

    monkeypatch.setattr(structlog, "get_logger", counting)
    log = get_logger("actors", aggregate="account")
    log.debug("actor.loaded", version=3)
    assert built == []
    with capture_logs() as logs:
        log.info("actor.restarting")
    assert built == ["actors"]
    assert logs == [{"aggregate": "account", "event": "actor.restarting", "log_level": "info"}]
