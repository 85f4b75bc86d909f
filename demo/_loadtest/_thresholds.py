"""Thresholds, as k6 has them: `--threshold 'latency_ms.p99<50'`, checked on the report.

A threshold is `NAME OP NUMBER`. NAME is a number of the JSON report, a dotted path
into it: a top-level key (`commands_per_s`, `errors`), a key of a nested object
(`latency_ms.p99`, `cross_process_lag_ms.p50`) or of `error_types` (`error_types.
AskTimeout`, 0 when no such error occurred). OP is `<`, `<=`, `>` or `>=`; NUMBER a
finite decimal. Names are checked against the report's type before the run: a name
that is not a number of the report (a list such as `timeline`, a string, a flag) is
refused, with the figures whose last part matches it suggested.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

import msgspec

from demo._loadtest._options import LoadTestError
from demo._loadtest._report import ThresholdResult

__all__ = [
    "MAX_THRESHOLDS",
    "InvalidThreshold",
    "Threshold",
    "check",
    "parse",
    "render_thresholds",
]

MAX_THRESHOLDS = 64
"""The most `--threshold` options one run takes."""

_SYNTAX = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<limit>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class InvalidThreshold(LoadTestError):
    """A `--threshold` is malformed or names no number of the report."""


class Threshold(msgspec.Struct, frozen=True):
    """One parsed threshold: `name op limit`."""

    name: str
    op: str
    limit: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_number(self.limit)}"


def _numeric(info: msgspec.inspect.Type) -> bool:
    """Whether a field of this type is a number (possibly None), not a flag."""
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return len(kinds) == 1 and _numeric(kinds[0])
    return isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType)


def _struct(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    """The struct a field of this type holds (possibly None), else None."""
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return _struct(kinds[0]) if len(kinds) == 1 else None
    return info if isinstance(info, msgspec.inspect.StructType) else None


def _names(report: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    """The report's numbers as dotted paths, and its objects of counts (`error_types`:
    any key is a number of it)."""
    leaves: set[str] = set()
    counts: set[str] = set()

    def walk(info: msgspec.inspect.StructType, prefix: str) -> None:
        for field in info.fields:
            path = prefix + field.encode_name
            nested = _struct(field.type)
            if nested is not None:
                walk(nested, path + ".")
            elif _numeric(field.type):
                leaves.add(path)
            elif isinstance(field.type, msgspec.inspect.DictType) and isinstance(
                field.type.value_type, msgspec.inspect.IntType
            ):
                counts.add(path)

    top = msgspec.inspect.type_info(report)
    assert isinstance(top, msgspec.inspect.StructType)
    walk(top, "")
    return leaves, counts


def parse(texts: list[str], report: type[msgspec.Struct]) -> list[Threshold]:
    """Parse `--threshold` options against the figures of `report` (the report type).

    Raises:
        InvalidThreshold: one is malformed or names no number of the report (the
            message quotes it).
    """
    if len(texts) > MAX_THRESHOLDS:
        raise InvalidThreshold(f"--threshold: at most {MAX_THRESHOLDS}, not {len(texts)}")
    leaves, counts = _names(report)
    found: list[Threshold] = []
    for text in texts:
        match = _SYNTAX.match(text)
        if match is None:
            raise InvalidThreshold(
                f"--threshold {text!r} is malformed: write NAME OP NUMBER, OP one of"
                " < <= > >= (e.g. 'latency_ms.p99<50')"
            )
        name, op, limit = match["name"], match["op"], float(match["limit"])
        if not math.isfinite(limit):
            raise InvalidThreshold(f"--threshold {text!r}: the limit must be finite")
        head, _, key = name.rpartition(".")
        if name not in leaves and not (head in counts and key):
            raise InvalidThreshold(f"--threshold {text!r}: {_unknown(name, leaves, counts)}")
        found.append(Threshold(name, op, limit))
    return found


def _unknown(name: str, leaves: set[str], counts: set[str]) -> str:
    last = name.rpartition(".")[2]
    near = sorted(leaf for leaf in leaves if leaf.rpartition(".")[2] == last)
    if near:
        return f"no figure {name!r} in the report; did you mean {', '.join(near)}?"
    known = sorted(leaves) + [f"{c}.<name>" for c in sorted(counts)]
    return f"no figure {name!r} in the report; the figures: {', '.join(known)}"


def _actual(figures: Any, name: str, counts: set[str]) -> float | None:
    """The figure at the dotted path `name` of a report's builtins (None: absent)."""
    head, _, key = name.rpartition(".")
    if head in counts:  # an object of counts: a key that did not occur counts none
        value = figures.get(head, {}).get(key, 0)
    else:
        value = figures
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check(thresholds: list[Threshold], report: msgspec.Struct) -> list[ThresholdResult]:
    """Each threshold checked against `report` (a figure not measured fails)."""
    figures = msgspec.to_builtins(report)
    _, counts = _names(type(report))
    results: list[ThresholdResult] = []
    for threshold in thresholds:
        actual = _actual(figures, threshold.name, counts)
        passed = actual is not None and _OPERATORS[threshold.op](actual, threshold.limit)
        results.append(
            ThresholdResult(
                threshold=str(threshold),
                name=threshold.name,
                op=threshold.op,
                limit=threshold.limit,
                actual=actual,
                passed=passed,
            )
        )
    return results


def render_thresholds(results: list[ThresholdResult], prefix: str = "") -> list[str]:
    """One line per threshold: which passed and which failed (actual against limit)."""
    lines: list[str] = []
    for r in results:
        actual = "not measured" if r.actual is None else _number(r.actual)
        verdict = "passed" if r.passed else "FAILED"
        lines.append(
            f"  {prefix}threshold {r.name} {r.op} {_number(r.limit)}: {verdict} (actual {actual})"
        )
    return lines


def _number(value: float) -> str:
    """A figure as written: `50`, `0.25`, `12345.6`."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else str(value)
