"""Which appends a batch refused as conflicts PostgreSQL's writer decides again and
sends in its next batch, with the appends chained to them (`store._ahead.refused_again`),
decided by the batch alone."""

from __future__ import annotations

from typing import Any

import pytest

from store import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, ChainBroken, ConcurrencyError
from store._ahead import refused_again
from store._batch import _Append, _Outcome


def _redecide(missed: Any, version: int) -> list[Any]:
    return []


def _append(stream: str, expected: int = 1, **fields: Any) -> _Append:
    given: dict[str, Any] = {"redecide": _redecide, "command_id": None} | fields
    return _Append(
        stream_id=stream,
        expected=expected,
        events=[],
        rows=[],
        metadata=None,
        metadata_bytes=None,
        digest=None,
        future=None,  # type: ignore[arg-type]
        **given,
    )


def _conflict(item: _Append, actual: int = 3) -> ConcurrencyError:
    return ConcurrencyError(item.stream_id, item.expected, actual)


def _committed() -> AppendResult:
    return AppendResult("b", 2, 2, 10, 10)


def test_each_plain_append_refused_as_a_conflict_in_the_batchs_order() -> None:
    appends = [_append("a"), _append("b"), _append("c"), _append("d")]
    outcomes: list[_Outcome] = [
        _conflict(appends[0]),
        _committed(),
        _conflict(appends[2]),
        ChainBroken("d", 1),
    ]
    assert refused_again(appends, outcomes, 2, 100) == [[0], [2]]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"redecide": None}, "no redecision to decide it again with"),
        ({"command_id": "cmd-1"}, "a command id: its resend must find the same events"),
        ({"fence": ("lease", "owner", 1)}, "fenced by a lease"),
        ({"stale": True}, "chained to one decided again: its caller decides"),
        ({"retried": 2}, "decided again after a refusal as many times as allowed"),
        ({"expected": ANY}, "expected any version: never a version race"),
        ({"expected": STREAM_EXISTS}, "expected the stream to exist: not a version race"),
    ],
)
def test_an_append_that_does_not_qualify_gets_its_conflict(
    fields: dict[str, Any], why: str
) -> None:
    item = _append("a", **fields)
    assert refused_again([item], [ConcurrencyError("a", item.expected, 3)], 2, 100) == [], why


def test_the_appends_chained_to_a_refused_one_follow_it() -> None:
    """Refused with it (`ChainBroken`), each is decided again on what the one before it
    then leaves: the chain, in order, one after another."""
    first, second, third = _append("a"), _append("a", expected=2, chained=0), _append("b")
    fourth = _append("a", expected=3, chained=1)
    outcomes: list[_Outcome] = [
        _conflict(first),
        ChainBroken("a", 2),
        _conflict(third),
        ChainBroken("a", 3),
    ]
    assert refused_again([first, second, third, fourth], outcomes, 2, 100) == [[0, 1, 3], [2]]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"redecide": None}, "no redecision to decide it again with"),
        ({"command_id": "cmd-1"}, "a command id: its resend must find the same events"),
        ({"fence": ("lease", "owner", 1)}, "fenced by a lease"),
        ({"stale": True}, "chained across batches too: its caller decides"),
    ],
)
def test_a_chain_ends_at_a_follower_that_does_not_qualify(fields: dict[str, Any], why: str) -> None:
    first = _append("a")
    second = _append("a", expected=2, chained=0, **fields)
    third = _append("a", expected=3, chained=1)
    outcomes: list[_Outcome] = [_conflict(first), ChainBroken("a", 2), ChainBroken("a", 3)]
    assert refused_again([first, second, third], outcomes, 2, 100) == [[0]], why


def test_a_chain_ends_where_two_appends_are_chained_to_one() -> None:
    first = _append("a")
    one, other = _append("a", expected=2, chained=0), _append("a", expected=2, chained=0)
    outcomes: list[_Outcome] = [_conflict(first), ChainBroken("a", 2), ChainBroken("a", 2)]
    assert refused_again([first, one, other], outcomes, 2, 100) == [[0]]


def test_a_chained_append_refused_as_a_conflict_is_left_to_its_caller() -> None:
    first, follower = _append("a"), _append("a", expected=2, chained=0)
    outcomes: list[_Outcome] = [_committed(), _conflict(follower, 4)]
    assert refused_again([first, follower], outcomes, 2, 100) == []


def test_one_append_per_stream() -> None:
    """Two refused appends of one stream (two callers): only the first is sent again;
    the second would be decided on what the first was to leave."""
    first, second = _append("a"), _append("a")
    outcomes: list[_Outcome] = [_conflict(first), _conflict(second)]
    assert refused_again([first, second], outcomes, 2, 100) == [[0]]


def test_an_append_that_expected_no_stream_is_decided_again_on_the_whole_stream() -> None:
    """Decided on the empty state: the events it missed are all of the stream's."""
    item = _append("a", expected=NO_STREAM)
    assert refused_again([item], [ConcurrencyError("a", NO_STREAM, 2)], 2, 100) == [[0]]


def test_the_events_missed_are_read_up_to_a_reach_in_all() -> None:
    """Each append taken adds the events it missed to the read; one that would take it
    past `reach` is left to its caller, and the next may still fit."""
    a, b, c = _append("a", expected=10), _append("b", expected=10), _append("c", expected=10)
    outcomes: list[_Outcome] = [_conflict(a, 70), _conflict(b, 60), _conflict(c, 40)]
    assert refused_again([a, b, c], outcomes, 2, 100) == [[0], [2]]  # 60 + 30; 50 past it
    assert refused_again([a], [_conflict(a, 111)], 2, 100) == []  # 101 alone


def test_a_conflict_at_a_version_not_past_the_expected_one_is_left_alone() -> None:
    item = _append("a", expected=5)
    assert refused_again([item], [ConcurrencyError("a", 5, 4)], 2, 100) == []
