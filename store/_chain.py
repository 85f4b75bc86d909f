"""Chained appends: several appends to one stream, each committed only if the one
before it committed as a fresh append (`ChainedAppend`, and `append_chain` of any store
done one append after another, for stores that cannot chain in one batch)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from store._errors import ChainBroken
from store._records import ANY, STREAM_EXISTS, AppendResult, Lease

__all__ = ["ChainOutcome", "ChainedAppend", "append_one_by_one", "next_expected"]


class ChainedAppend(msgspec.Struct, frozen=True):
    """One append of a chain (`EventStore.append_chain`): its events and what
    `EventStore.append` takes beside them."""

    events: Sequence[msgspec.Struct]
    command_id: str | None = None
    metadata: Mapping[str, str] | None = None
    fence: Lease | None = None


ChainOutcome = AppendResult | Exception
"""What became of one append of a chain: its result (committed, or a duplicate of an
earlier commit), or the error it got (`ChainBroken` when it was not written because the
one before it did not commit as a fresh append)."""


def next_expected(expected: int, count: int) -> int:
    """The expected version of the append after one of `count` events at `expected`:
    the version it leaves, or the same `ANY` / `STREAM_EXISTS`."""
    if expected in (ANY, STREAM_EXISTS):
        return expected
    return expected + count


async def append_one_by_one(
    append: Callable[..., Awaitable[AppendResult]],
    stream_id: str,
    chain: Sequence[ChainedAppend],
    expected_version: int,
) -> list[ChainOutcome]:
    """`append_chain` done with `append`, one append after another: each sent once the
    one before it committed as a fresh append; the rest get `ChainBroken`."""
    outcomes: list[ChainOutcome] = []
    expected = expected_version
    broken = False
    for link in chain:
        if broken:
            outcomes.append(ChainBroken(stream_id, expected))
        else:
            try:
                outcome: Any = await append(
                    stream_id,
                    link.events,
                    expected_version=expected,
                    command_id=link.command_id,
                    metadata=link.metadata,
                    fence=link.fence,
                )
            except Exception as exc:  # noqa: BLE001 - each append of the chain gets its outcome
                outcome = exc
            outcomes.append(outcome)
            broken = not isinstance(outcome, AppendResult) or outcome.duplicate
        expected = next_expected(expected, len(link.events))
    return outcomes
