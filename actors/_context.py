"""The chain of actors currently handling, carried along asks to detect deadlocks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_chain", "handling"]

_chain: ContextVar[tuple[str, ...]] = ContextVar("esactors_ask_chain", default=())


def current_chain() -> tuple[str, ...]:
    """The actors handling a message on this task's behalf, outermost first."""
    return _chain.get()


@contextmanager
def handling(name: str, chain: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Mark the current task as handling a message for actor `name`, which was sent
    along ask chain `chain`. An ask made inside to any actor in the resulting chain
    raises `ReentrantAskError` at once instead of deadlocking."""
    full = (*chain, name)
    token = _chain.set(full)
    try:
        yield full
    finally:
        _chain.reset(token)
