"""The timeline: commands answered and a latency sketch per interval of the measured phase.

The driver calls `_Timeline.record` once per measured answer with the clock reading it
already took; that costs a division, a logarithm and two increments. The timeline holds
at most `MAX_BUCKETS` intervals: it starts at `BUCKET_SECONDS` each, and when a run
outlasts them, adjacent pairs merge and the interval doubles (a 10-minute run ends with
4-second intervals). Each interval's latencies go into a sketch of logarithmic bins
`SKETCH_RATIO` wide (at most `_MAX_BIN` + 1 of them), so its percentiles are within 1%.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["BUCKET_SECONDS", "MAX_BUCKETS", "SKETCH_RATIO", "TimelinePoint"]

BUCKET_SECONDS = 0.25
"""The timeline's first interval, in seconds (doubled each time the run outlasts
`MAX_BUCKETS` of them)."""

MAX_BUCKETS = 240
"""The most intervals a timeline holds (60 s at `BUCKET_SECONDS`)."""

SKETCH_RATIO = 1.02
"""The ratio between the bounds of a latency bin: a percentile read from the sketch is
the geometric middle of its bin, within 1% of the true one."""

_LOG_RATIO = math.log(SKETCH_RATIO)
_log = math.log
_MIN_MS = 0.001  # the first bin's lower bound; below it everything is in bin 0
_MAX_BIN = 1_400  # 0.001 ms x 1.02^1400 is over 10^9 ms: beyond, everything is in it


class TimelinePoint(msgspec.Struct, frozen=True):
    """One interval of the measured phase (an entry of the report's `timeline`).

    Attributes:
        at: its start, in seconds since the measured phase began.
        seconds: its length (the last one ends with the run, so may be shorter).
        commands: commands answered in it (acknowledged, rejected or failed).
        commands_per_s: `commands / seconds`.
        latency_ms_p50, latency_ms_p99: the latency of the commands acknowledged in
            it, from its sketch (within 1%; None when none was).
    """

    at: float
    seconds: float
    commands: int
    commands_per_s: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None


def _quantile(sketch: dict[int, int], q: float) -> float | None:
    """The nearest-rank `q` quantile of a sketch: the geometric middle of its bin."""
    total = sum(sketch.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for key in sorted(sketch):
        seen += sketch[key]
        if seen >= rank:
            middle: float = _MIN_MS * SKETCH_RATIO ** (key + 0.5)
            return round(middle, 3)
    raise AssertionError("unreachable: the ranks add up to the total")


class _Timeline:
    """Counts and latency sketches per interval; `start` it, then `record` each answer."""

    def __init__(self) -> None:
        self.started = 0.0
        self.width = BUCKET_SECONDS
        self.counts: list[int] = []
        self.sketches: list[dict[int, int]] = []

    def start(self, at: float) -> None:
        """Begin the timeline at `at` (a `time.perf_counter()` reading)."""
        self.started = at
        self.width = BUCKET_SECONDS
        self.counts.clear()
        self.sketches.clear()

    def record(self, now: float, latency_ms: float | None) -> None:
        """One command answered at `now` (`time.perf_counter()`); its latency when it was
        acknowledged (None: rejected or failed, counted but not timed)."""
        # Written out, the common case first: this runs once per command.
        index = int((now - self.started) / self.width)
        counts = self.counts
        if not 0 <= index < len(counts):
            index = self._make_room(index)
            counts = self.counts  # merged into new lists, maybe
        counts[index] += 1
        if latency_ms is not None:
            sketch = self.sketches[index]
            if latency_ms <= _MIN_MS:
                key = 0
            else:
                key = int(_log(latency_ms / _MIN_MS) / _LOG_RATIO)
                if key > _MAX_BIN:  # noqa: PLR1730 - a compare, not a call (per command)
                    key = _MAX_BIN
            sketch[key] = sketch.get(key, 0) + 1

    def _make_room(self, index: int) -> int:
        """The interval at `index` (before the first: the first), merging intervals
        while the run outlasts `MAX_BUCKETS` of them and adding empty ones up to it."""
        index = max(0, index)
        while index >= MAX_BUCKETS:
            self._coarsen()
            index //= 2
        counts = self.counts
        while len(counts) <= index:
            counts.append(0)
            self.sketches.append({})
        return index

    def _coarsen(self) -> None:
        """Merge adjacent intervals pairwise: half as many, twice as long."""
        counts, sketches = self.counts, self.sketches
        merged_counts: list[int] = []
        merged_sketches: list[dict[int, int]] = []
        for i in range(0, len(counts), 2):
            merged_counts.append(sum(counts[i : i + 2]))
            sketch = dict(sketches[i])
            for later in sketches[i + 1 : i + 2]:
                for key, n in later.items():
                    sketch[key] = sketch.get(key, 0) + n
            merged_sketches.append(sketch)
        self.counts, self.sketches = merged_counts, merged_sketches
        self.width *= 2

    def points(self, seconds: float) -> list[TimelinePoint]:
        """The intervals of a measured phase `seconds` long, empty ones included. The
        last one ends with the run; shorter than half an interval, it joins the one
        before (a rate over a few milliseconds would be noise)."""
        width = self.width
        n = max(len(self.counts), math.ceil(seconds / width - 1e-9), 1)
        n = min(n, MAX_BUCKETS)
        counts = self.counts + [0] * (n - len(self.counts))
        sketches = self.sketches + [{} for _ in range(n - len(self.sketches))]
        spans = [[i * width, (i + 1) * width] for i in range(n)]
        spans[-1][1] = max(seconds, spans[-1][0])
        if n > 1 and spans[-1][1] - spans[-1][0] < width / 2:
            last_span, last_count = spans.pop(), counts.pop()
            spans[-1][1] = last_span[1]
            counts[-1] += last_count
            last, sketches[-1] = sketches.pop(), dict(sketches[-1])
            for key, count in last.items():
                sketches[-1][key] = sketches[-1].get(key, 0) + count
        found: list[TimelinePoint] = []
        for (begin, end), count, sketch in zip(spans, counts, sketches, strict=True):
            length = end - begin
            found.append(
                TimelinePoint(
                    at=round(begin, 3),
                    seconds=round(length, 3),
                    commands=count,
                    commands_per_s=round(count / length, 1) if length > 0 else 0.0,
                    latency_ms_p50=_quantile(sketch, 0.50),
                    latency_ms_p99=_quantile(sketch, 0.99),
                )
            )
        return found
