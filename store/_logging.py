"""Loggers for library code.

esactors logs with structlog but does not configure it: that is the application's call
(the demo does). An application that configured structlog gets every event through its
own processors. One that did not would, by structlog's defaults, see every debug line of
the hot path printed to stdout; instead it gets warnings and errors only, on stderr, and
filtered debug calls cost nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["get_logger"]

_fallback: Any = None


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger named `name` with `context` bound, for library code.

    Uses the application's structlog configuration when there is one (checked on each
    call, so call it when an actor or store is created, not at import time); otherwise
    a logger that writes warnings and errors to stderr and drops the rest.
    """
    if structlog.is_configured():
        return structlog.get_logger(name).bind(**context)
    global _fallback
    if _fallback is None:
        _fallback = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.KeyValueRenderer(
                    key_order=["timestamp", "level", "event", "logger"]
                ),
            ],
        )
    return _fallback.bind(logger=name, **context)
