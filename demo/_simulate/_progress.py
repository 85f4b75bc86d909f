"""The live progress line: commands, events, read model lag and sagas in flight."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

import anyio

from actors import ProcessManagerHandle
from demo._simulate._driver import _Run
from readmodels import ProjectionHandle

__all__ = ["PROGRESS_INTERVAL"]

PROGRESS_INTERVAL = 0.25


def _progress_line(
    run: _Run,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
) -> str:
    elapsed = max(time.perf_counter() - run.started, 1e-9)
    sent = run.counts.answered - run.setup
    lag = max((h.statistics().lag for h in live), default=0)
    sagas = sum(h.statistics().in_flight for h in managers)
    events = run.system.store.statistics().last_position - before
    return (
        f"\r  {elapsed:5.1f} s  {sent:,} commands ({sent / elapsed:,.0f}/s)"
        f"  {events:,} events  read model lag {lag:,}  sagas in flight {sagas:,}   "
    )


async def _progress(
    out: TextIO,
    run: _Run,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
) -> None:
    """One line on `out`, rewritten in place every `PROGRESS_INTERVAL` until cancelled."""
    while True:
        out.write(_progress_line(run, live, managers, before))
        out.flush()
        await anyio.sleep(PROGRESS_INTERVAL)
