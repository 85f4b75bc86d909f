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

__all__ = ["LibraryLogger", "get_logger"]

_fallback: Any = None

# What a filtering bound logger (`structlog.make_filtering_bound_logger`, the usual
# wrapper class) has as the method of a level it drops: one function shared by them all.
_DROPPED = structlog.make_filtering_bound_logger(logging.CRITICAL).debug


def _drops(level: str) -> bool:
    """Whether the configured wrapper class drops `level` without a look at the event:
    then building the bound logger (several µs) is skipped too."""
    return getattr(structlog.get_config()["wrapper_class"], level, None) is _DROPPED


def get_logger(name: str, **context: Any) -> LibraryLogger:
    """A structlog logger named `name` with `context` bound, for library code.

    Each call on it follows structlog's configuration as it is at that moment: the
    application's, once it has configured structlog (so `capture_logs()` in tests sees
    it too); otherwise warnings and errors on stderr, the rest dropped at no cost.
    """
    return LibraryLogger(name, context)


class LibraryLogger:
    """A logger that resolves structlog's configuration when it logs, not when made."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context

    def bind(self, **more: Any) -> LibraryLogger:
        """A logger with `more` bound as well."""
        return LibraryLogger(self._name, {**self._context, **more})

    def debug(self, event: str, **values: Any) -> None:
        """Log at debug level (dropped unless the application configured structlog)."""
        if structlog.is_configured() and not _drops("debug"):
            self._configured().debug(event, **values)

    def info(self, event: str, **values: Any) -> None:
        """Log at info level (dropped unless the application configured structlog)."""
        if structlog.is_configured() and not _drops("info"):
            self._configured().info(event, **values)

    def warning(self, event: str, **values: Any) -> None:
        """Log at warning level."""
        self._target().warning(event, **values)

    def error(self, event: str, **values: Any) -> None:
        """Log at error level (pass `exc_info=True` inside `except` for the traceback)."""
        self._target().error(event, **values)

    def _configured(self) -> Any:
        return structlog.get_logger(self._name).bind(**self._context)

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._configured()
        global _fallback
        if _fallback is None:
            _fallback = structlog.wrap_logger(
                _Stderr(),
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
        return _fallback.bind(logger=self._name, **self._context)


class _Stderr:
    """Writes each line to whatever `sys.stderr` is at that moment (it may be redirected)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = error = critical = exception = msg
