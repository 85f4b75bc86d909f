"""The garbage collector while actor systems run: a larger first threshold.

CPython runs a young-generation collection every 700 net allocations of container
objects (`gc.get_threshold()[0]`), and a full one as those collections add up. Under
load an actor system keeps thousands of short-lived containers alive at any moment
(each command in flight holds coroutines, futures and tuples), and every live actor
a few long-lived ones (many more while its task waits idle: docs/architecture.md), so
at the default each young collection traverses a few thousand objects every hundred
commands or so, and each full one every live actor:
with 1,000 commands in flight the collector took about a quarter of the process's
CPU, and with 17,000 actors loading, more than half of the wall time in a dozen full
collections. A first threshold of 20,000 collects the young generation twenty-eight
times less often at about the same cost per collection, and leaves the full
collections to the heap's growth (docs/performance.md, "The garbage collector").

The threshold is the process's, not the system's: the first system opened raises it
(never lowers it), and the last one closed puts back what it found, unless something
else changed the thresholds meanwhile (then they are left as they are).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["raised_gc_threshold"]

_lock = threading.Lock()
_users = 0
_found: tuple[int, int, int] | None = None
_set: tuple[int, int, int] | None = None


@contextlib.contextmanager
def raised_gc_threshold(threshold: int | None) -> Iterator[None]:
    """While inside, the collector's first threshold is at least `threshold` (None:
    the collector is left alone)."""
    if threshold is None:
        yield
        return
    _enter(threshold)
    try:
        yield
    finally:
        _exit()


def _enter(threshold: int) -> None:
    global _users, _found, _set
    with _lock:
        current = gc.get_threshold()
        if _users == 0:
            _found = current
        if current[0] < threshold:
            gc.set_threshold(threshold, current[1], current[2])
        _set = gc.get_threshold()
        _users += 1


def _exit() -> None:
    global _users, _found, _set
    with _lock:
        _users -= 1
        if _users == 0:
            if _found is not None and gc.get_threshold() == _set:
                gc.set_threshold(*_found)
            _found = _set = None
