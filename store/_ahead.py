"""Deciding appends again on what other processes committed, before their batch is
written: which appends qualify (`plain`), the events one missed (`missed`), and the
PostgreSQL writer's step over a whole batch (`decide_ahead`); and after a batch refused
some as conflicts, which of those (and of the appends chained to them) the PostgreSQL
writer decides again and sends in its next batch instead of answering them
(`refused_again`).

An append whose expected version another process passed would be refused as a
conflict; the actor would read the stream and decide again, and its next try would race
the other process again. Given its `redecide` (a `Redecision`) and the events it
missed, the store decides it again instead and the append then expects the version
those events end at. This is sound wherever it runs: the append's state is the stream's
committed state at the version it expected, the missed events are the committed ones
from there, and the writer still checks the version it now expects, so it commits only
if nothing else was appended to the stream in between (then it is refused as before).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from store._batch import _Append, _FencedBatchAppend, _Outcome
from store._errors import ChainBroken, ConcurrencyError
from store._records import RecordedEvent

__all__ = ["decide_ahead", "missed", "plain", "refused_again"]


def plain(item: _FencedBatchAppend) -> bool:
    """Whether `item` may be decided again by its version alone: neither chained to
    another append of its batch nor stale, without a command id or a fence, and
    carrying a `redecide` (the writer process's appends carry none)."""
    return (
        item.chained < 0
        and item.command_id is None
        and item.fence is None
        and getattr(item, "redecide", None) is not None
        and not getattr(item, "stale", False)
    )


def missed(kept: list[RecordedEvent], expected: int, current: int) -> list[RecordedEvent] | None:
    """The events of versions `expected + 1` to `current` among `kept` (one stream's,
    in version order), or None when they are not all there."""
    count = current - expected
    if (
        0 < count <= len(kept)
        and kept[-1].version == current
        and kept[-count].version == expected + 1
    ):
        # The common case: the last events kept are the ones missed (versions only
        # grow, so `count` of them from expected + 1 to current are all of them).
        return kept[-count:]
    events = [e for e in kept if expected < e.version <= current]
    return events if len(events) == count else None


def decide_ahead(
    appends: Sequence[_Append],
    events: Sequence[RecordedEvent],
    redecided: Callable[[_Append, list[RecordedEvent], int], bool],
) -> None:
    """Decide again each `plain` append of a batch whose stream `events` (committed
    ones, in position order) moved past the version it expected, on the events it
    missed when `events` hold all of them (`redecided(item, missed, version)`, see
    `AppendPreparer.redecided`).

    An append another append of the batch is chained to is left as it is: that one was
    decided on the state this one was first decided to leave, and would be checked
    against a version this one's new events may reach by chance.
    """
    if not events:
        return
    by_stream: dict[str, list[RecordedEvent]] = {}
    for recorded in events:
        stream = by_stream.get(recorded.stream_id)
        if stream is None:
            by_stream[recorded.stream_id] = [recorded]
        else:
            stream.append(recorded)
    leading = {item.chained for item in appends if item.chained >= 0}
    for slot, item in enumerate(appends):
        kept = by_stream.get(item.stream_id)
        if kept is None or slot in leading or not plain(item):
            continue
        current = kept[-1].version
        expected = item.expected
        if not current > expected >= 0:
            continue
        found = missed(kept, expected, current)
        if found is not None:
            redecided(item, found, current)


def refused_again(
    appends: Sequence[_Append], outcomes: Sequence[_Outcome], most: int, reach: int
) -> list[list[int]]:
    """The appends of a batch refused as conflicts (`ConcurrencyError`) that the writer
    may decide again on what they missed and send in a later batch, as chains of
    slots in the batch's order: each begins with an append refused so, `plain`,
    expecting a version the stream passed (not `ANY` or `STREAM_EXISTS`), decided again
    after a refusal fewer than `most` times, one per stream, while the events they
    missed add up to at most `reach` (the writer reads them); then the appends of the
    batch chained to it, one after another, refused with it (`ChainBroken`), each with
    a `redecide` and neither a command id nor a fence: decided again, each on what the
    one before it then leaves. A chain ends at the first that does not qualify (that
    one, and any after it, get their refusals)."""
    followers: dict[int, int] = {}  # slot: the slot of the one chained to it
    branched: set[int] = set()  # slots more than one append is chained to
    for slot, item in enumerate(appends):
        if item.chained >= 0:
            if item.chained in followers:
                branched.add(item.chained)
            followers[item.chained] = slot
    chains: list[list[int]] = []
    streams: set[str] = set()
    for slot, (item, outcome) in enumerate(zip(appends, outcomes, strict=True)):
        if (
            type(outcome) is ConcurrencyError
            and 0 <= item.expected < outcome.actual <= item.expected + reach
            and item.retried < most
            and item.stream_id not in streams
            and plain(item)
        ):
            reach -= outcome.actual - item.expected
            chain = [slot]
            streams.add(item.stream_id)
            last = slot
            while last in followers and last not in branched:
                follower = followers[last]
                if not _may_follow(appends[follower], outcomes[follower]):
                    break
                chain.append(follower)
                last = follower
            chains.append(chain)
    return chains


def _may_follow(item: _Append, outcome: _Outcome) -> bool:
    """Whether `item`, refused with the append it is chained to, may be decided again
    on what that one leaves when it is decided again."""
    return (
        type(outcome) is ChainBroken
        and item.command_id is None
        and item.fence is None
        and item.redecide is not None
        and not item.stale
    )
