"""Which account a load test command goes to: uniformly at random, or by Zipf's law.

Real traffic has hot aggregates: a few accounts take most of the commands. Under
`zipf` with exponent s, the account of rank k (1-based) is drawn with probability
proportional to 1 / k**s; s = 0 is uniform, s = 1 is the classic law (with 1,000
accounts the hottest takes 13% of the commands), larger s is more skewed. Which
account holds which rank is a shuffle seeded by the load test's seed, so every worker
process of one run agrees on the hot accounts.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from typing import Literal

__all__ = ["Distribution", "Pick", "picker", "uniform"]

Distribution = Literal["uniform", "zipf"]

Pick = Callable[[random.Random], int]
"""Draws an account index in `range(count)` with the caller's random generator."""


def uniform(count: int) -> Pick:
    """Draws `rng.randrange(count)`."""
    return lambda rng: rng.randrange(count)


def picker(count: int, distribution: Distribution, exponent: float, seed: int) -> Pick:
    """A function drawing indexes in `range(count)` by `distribution`.

    `uniform` is `rng.randrange(count)` (the draws of a uniform run do not depend on
    `exponent` or `seed`); `zipf` draws ranks with weights 1 / k**exponent by a binary
    search of the cumulative weights (O(log count) per draw) and maps each rank to an
    index through a shuffle seeded with `seed`.
    """
    if distribution == "uniform":
        return uniform(count)
    cumulative = list(itertools.accumulate(k**-exponent for k in range(1, count + 1)))
    total = cumulative[-1]
    last = count - 1
    order = list(range(count))
    random.Random(f"zipf-ranks-{seed}").shuffle(order)

    def pick(rng: random.Random) -> int:
        rank = bisect.bisect_right(cumulative, rng.random() * total)
        return order[min(rank, last)]

    return pick
