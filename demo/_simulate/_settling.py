"""Settling: waiting until every process manager has handled the store's head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio

from actors import ActorSystem, ProcessManagerHandle, ShuttingDown
from demo._simulate._report import Invariant

__all__: list[str] = []


async def _settle(system: ActorSystem, managers: Sequence[ProcessManagerHandle]) -> int:
    """Wait until every process manager has handled the store's head and nothing was
    appended meanwhile; return that head. No deadline of its own (the caller's)."""
    while True:
        head = await system.store.last_position()
        for handle in managers:
            await handle.wait_for(head, timeout=math.inf)
        if await system.store.last_position() == head:
            return head


async def _settled(
    system: ActorSystem,
    managers: Sequence[ProcessManagerHandle],
    timeout: float,  # noqa: ASYNC109
) -> Invariant:
    """Settle within `timeout`; the outcome as an invariant naming who lagged."""
    failure = ""
    with anyio.move_on_after(timeout) as scope:
        try:
            head = await _settle(system, managers)
        except ShuttingDown as error:
            failure = f"a process manager stopped: {error}"
    if scope.cancelled_caught:
        failure = f"not settled within {timeout:g} s"
    if not failure:
        names = ", ".join(h.name for h in managers)
        return Invariant("settled", True, len(managers), 0, f"{names} reached head {head}")
    last = await system.store.last_position()
    behind = tuple(
        f"{h.name} at {h.position} of {last} ({h.statistics().in_flight} in flight)"
        for h in managers
        if h.position < last
    )
    return Invariant("settled", False, len(managers), max(1, len(behind)), failure, behind)
