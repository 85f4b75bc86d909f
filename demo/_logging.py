"""structlog set-up for the demo's command line (the only place that configures it)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import structlog

__all__ = ["configured_logging"]


@contextlib.contextmanager
def configured_logging(*, verbose: bool = False) -> Iterator[None]:
    """Configure structlog for the demo for the duration of the block: key=value lines on
    stderr, warnings and errors only (info and up with `verbose`). The previous
    configuration is restored on exit, so calling the CLI in-process leaves the host's
    logging as it was."""
    was_configured = structlog.is_configured()
    previous = structlog.get_config()
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line: workers sharing stderr never interleave within a line.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()
