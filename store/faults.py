"""Named fault points, for the reliability suite: a no-op unless `ES_FAULTS` names one.

The framework calls `hit(point)` (or `await hit_async(point)`) at a few moments that
matter for durability and ordering: around the write transaction, between commit and
publish, at delivery, projection and checkpoint steps, and after a process manager's
command was acknowledged (`process_after_send`: after the debit, after the credit of a
transfer saga) but before its checkpoint moves. With no rule configured, a call
costs one attribute read (`faults.enabled` is checked first on hot paths). With rules, a
matching hit runs its action. This is the in-process counterpart of SQLite's
crash-simulation VFS: a child process run with `ES_FAULTS="after_insert_before_commit:exit:7"`
dies, like `kill -9`, right before its seventh commit.

The spec is a comma-separated list of `point:action[:argument]:selector`:

- actions: `exit` (`os._exit(137)`: no `finally`, no `atexit`, like SIGKILL), `raise`
  (`FaultInjected`), `delay:<ms>` or `delay:<low>-<high>` (milliseconds, uniform),
  `cancel` (the current task's cancellation exception, async points only), and
  `dup`/`reorder`, which `hit` returns for the caller to act on (delivery points).
- selectors: `N` (the Nth hit only, from 1), `N+` (every hit from the Nth), `*` (every
  hit), `pX` (each hit with probability X, from a generator seeded by `ES_FAULTS_SEED`).

Hits are counted per rule across the process, from any thread (the writer's statements
run on a worker thread). Unknown points or actions raise `ValueError` when the spec is
read, so a typo cannot make a fault test vacuous.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Final, Literal

import anyio

__all__ = [
    "ENV",
    "POINTS",
    "FaultInjected",
    "configure",
    "current",
    "enabled",
    "hit",
    "hit_async",
    "hits",
]

ENV: Final = "ES_FAULTS"
SEED_ENV: Final = "ES_FAULTS_SEED"
EXIT_CODE: Final = 137

POINTS: Final = frozenset(
    {
        "before_begin",
        "after_begin",
        "after_insert_before_commit",
        "after_commit_before_publish",
        "after_commit_before_reply",
        "bus_deliver",
        "projection_apply",
        "after_projection_apply_before_checkpoint",
        "checkpoint_write",
        "snapshot_write",
        "process_after_send",
    }
)
_ACTIONS: Final = frozenset({"exit", "raise", "delay", "cancel", "dup", "reorder"})

Returned = Literal["dup", "reorder"] | None


class FaultInjected(Exception):
    """Raised by a `raise` rule: a failure the test asked for, at `point`, on hit `nth`."""

    def __init__(self, point: str, nth: int) -> None:
        super().__init__(f"fault injected at {point!r} (hit {nth})")
        self.point, self.nth = point, nth


@dataclass
class _Rule:
    point: str
    action: str
    low_ms: float = 0.0
    high_ms: float = 0.0
    first: int = 1
    last: int | None = 1  # None: no upper bound
    probability: float | None = None
    count: int = field(default=0)

    def fires(self, rng: random.Random) -> bool:
        self.count += 1
        if self.probability is not None:
            return rng.random() < self.probability
        return self.count >= self.first and (self.last is None or self.count <= self.last)


enabled: bool = False
"""True when any rule is configured: hot paths test this before calling `hit`."""

_rules: dict[str, list[_Rule]] = {}
_lock = threading.Lock()
_rng = random.Random(0)
_spec: tuple[str, int] = ("", 0)


def _parse(spec: str) -> dict[str, list[_Rule]]:
    rules: dict[str, list[_Rule]] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"fault rule {entry!r}: expected point:action[:argument]:selector")
        point, action, selector = parts[0], parts[1], parts[-1]
        argument = parts[2] if len(parts) == 4 else None
        if point not in POINTS:
            raise ValueError(f"fault rule {entry!r}: unknown point {point!r}")
        if action not in _ACTIONS:
            raise ValueError(f"fault rule {entry!r}: unknown action {action!r}")
        rule = _Rule(point, action)
        if action == "delay":
            if argument is None:
                raise ValueError(f"fault rule {entry!r}: delay needs milliseconds")
            low, _, high = argument.partition("-")
            rule.low_ms, rule.high_ms = float(low), float(high or low)
            if not 0 <= rule.low_ms <= rule.high_ms:
                raise ValueError(f"fault rule {entry!r}: bad delay range {argument!r}")
        elif argument is not None:
            raise ValueError(f"fault rule {entry!r}: {action!r} takes no argument")
        if selector == "*":
            rule.last = None
        elif selector.startswith("p"):
            rule.probability = float(selector[1:])
            if not 0.0 <= rule.probability <= 1.0:
                raise ValueError(f"fault rule {entry!r}: probability must be in [0, 1]")
        elif selector.endswith("+"):
            rule.first, rule.last = int(selector[:-1]), None
        else:
            rule.first = rule.last = int(selector)
        if rule.first < 1:
            raise ValueError(f"fault rule {entry!r}: hits count from 1")
        rules.setdefault(point, []).append(rule)
    return rules


def configure(spec: str | None, *, seed: int = 0) -> None:
    """Replace the rules with `spec` (None or "" clears them) and reset the counters.

    The process reads `ES_FAULTS` and `ES_FAULTS_SEED` once, at import; tests in one
    process call this instead (and `configure(None)` after).
    """
    global enabled, _rules, _rng, _spec
    parsed = _parse(spec or "")
    with _lock:
        _rules, _rng, enabled = parsed, random.Random(seed), bool(parsed)
        _spec = (spec or "", seed)


def current() -> tuple[str, int]:
    """The spec and seed last configured ("" when none): what a child process of the
    store (its writer process) is started with, so the writer's points fire there."""
    with _lock:
        return _spec


def hits(point: str) -> int:
    """How many times `point` was reached since the rules were configured (first rule)."""
    with _lock:
        rules = _rules.get(point)
        return rules[0].count if rules else 0


def _fire(point: str) -> tuple[_Rule, int] | None:
    with _lock:
        rules = _rules.get(point)
        if not rules:
            return None
        chosen: tuple[_Rule, int] | None = None
        for rule in rules:
            if rule.fires(_rng) and chosen is None:
                chosen = (rule, rule.count)
        return chosen


def _delay(rule: _Rule) -> float:
    with _lock:
        return _rng.uniform(rule.low_ms, rule.high_ms) / 1000.0


def _act(point: str, *, can_cancel: bool) -> Returned | float:
    """Run the action of the rule `point` fires, if any: returns what the caller acts
    on, or the seconds a `delay` should sleep (the caller sleeps its own way)."""
    fired = _fire(point)
    if fired is None:
        return None
    rule, nth = fired
    match rule.action:
        case "exit":
            os._exit(EXIT_CODE)
        case "delay":
            return _delay(rule)
        case "cancel" if can_cancel:
            raise anyio.get_cancelled_exc_class()()
        case "dup":
            return "dup"
        case "reorder":
            return "reorder"
        case _:
            raise FaultInjected(point, nth)


def hit(point: str) -> Returned:
    """A synchronous fault point (the writer thread, sync callbacks): `delay` sleeps the
    thread, `cancel` is not available here and raises `FaultInjected` instead."""
    action = _act(point, can_cancel=False)
    if isinstance(action, float):
        time.sleep(action)
        return None
    return action


async def hit_async(point: str) -> Returned:
    """An asynchronous fault point: `delay` sleeps the task, `cancel` raises the current
    backend's cancellation exception (as if the surrounding scope were cancelled)."""
    action = _act(point, can_cancel=True)
    if isinstance(action, float):
        await anyio.sleep(action)
        return None
    return action


configure(os.environ.get(ENV), seed=int(os.environ.get(SEED_ENV, "0")))
