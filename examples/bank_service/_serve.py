"""Serving the bank service: JSON logs, and the app factory uvicorn's workers import.

`uvicorn --workers N` starts N processes, each of which imports the app by name: give it
`--factory examples.bank_service:worker_app`. Each worker then builds its own app, and
the app's lifespan opens the worker's own actor system on the shared store (a SQLite
file or a PostgreSQL database) at startup and closes it at shutdown. The worker takes
its settings from the environment, since nothing else crosses into it:
`BANK_SERVICE_DB` (the database) and `BANK_SERVICE_GRACE` (seconds to drain the actor
system at shutdown).
"""

from __future__ import annotations

import logging
import os
import re
import sys

import structlog
from starlette.applications import Starlette

from actors import OpenSystemSettings
from examples.bank_service._app import DATABASE_ENV, create_app
from examples.bank_service._service import ServiceSettings
from examples.bank_service._telemetry import add_trace_ids, configure_telemetry

__all__ = ["GRACE_ENV", "configure_logging", "parse_seconds", "worker_app"]

GRACE_ENV = "BANK_SERVICE_GRACE"
"""The environment variable with a worker's shutdown grace, in seconds."""

_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_seconds(text: str) -> float | None:
    """`text` as seconds (a finite decimal number >= 0 in ASCII digits, like 10 or 2.5);
    None if it is not one."""
    if _SECONDS.fullmatch(text) and len(text) <= 20:
        return float(text)
    return None


def configure_logging() -> None:
    """JSON lines on stderr (stdlib logging, uvicorn's included, and structlog), with
    the current span's `trace_id` and `span_id` when a span is recording."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        # One write per line: workers sharing stderr never interleave within a line.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def worker_app() -> Starlette:
    """The app of one server process: JSON logs, telemetry (`configure_telemetry`:
    `GET /metrics`, traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), the database named by `BANK_SERVICE_DB`
    (default `bank.db`), the shutdown grace by `BANK_SERVICE_GRACE` (default: the
    actor system's).

    Raises:
        ValueError: `BANK_SERVICE_GRACE` is not a number of seconds.
    """
    options: OpenSystemSettings = {}
    raw = os.environ.get(GRACE_ENV)
    if raw is not None:
        grace = parse_seconds(raw)
        if grace is None:
            raise ValueError(
                f"{GRACE_ENV} must be seconds, a decimal number >= 0 in ASCII digits"
                f" (like 10 or 2.5), not {raw!r}"
            )
        options["grace"] = grace
    configure_logging()
    configure_telemetry()
    return create_app(os.environ.get(DATABASE_ENV), ServiceSettings(system_options=options))
