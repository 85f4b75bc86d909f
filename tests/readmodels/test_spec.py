from __future__ import annotations

import msgspec
import pytest

from readmodels.testing import ProjectionSpec
from store import EventRegistry, RecordedEvent
from tests._events import Deposited, Opened, Withdrawn, registry
from tests.readmodels._support import Balances, Log, Owners

balances = ProjectionSpec(Balances())


def test_given_plain_events_then_the_expected_view() -> None:
    balances.given(Deposited(5), Withdrawn(2), stream_id="acct-1").given(
        Deposited(7), stream_id="acct-2"
    ).then({"acct-1": 3, "acct-2": 7})


def test_then_accepts_a_predicate_and_returns_the_view() -> None:
    view = balances.given(Deposited(5), stream_id="acct-1").then(lambda v: v["acct-1"] == 5)
    assert view == {"acct-1": 5}


def test_events_the_projection_does_not_subscribe_to_are_left_out() -> None:
    spec = ProjectionSpec(Owners()).given(Opened("ada"), Deposited(1), Opened("bob"))
    assert spec.then(("ada", "bob")) == ("ada", "bob")


def test_fabricated_records_count_versions_per_stream_and_positions_globally() -> None:
    spec = (
        ProjectionSpec(Log())
        .given(Deposited(1), Deposited(2), stream_id="a")
        .given(Deposited(3), stream_id="b")
        .given(Deposited(4), stream_id="a")
    )
    assert [(r.stream_id, r.version, r.position, r.event_type) for r in spec.events] == [
        ("a", 1, 1, "test.deposited"),
        ("a", 2, 2, "test.deposited"),
        ("b", 1, 3, "test.deposited"),
        ("a", 3, 4, "test.deposited"),
    ]
    spec.then([1, 2, 3, 4])


def test_recorded_events_are_taken_as_given_and_numbering_goes_on_after_them() -> None:
    recorded = RecordedEvent("a", 7, 40, "test.deposited", 1, Deposited(9), {}, 0.0)
    spec = ProjectionSpec(Log()).given(recorded).given(Deposited(1), stream_id="a")
    assert [(r.version, r.position) for r in spec.events] == [(7, 40), (8, 41)]


def test_a_wrong_view_or_a_false_predicate_fails_with_the_view_shown() -> None:
    spec = balances.given(Deposited(5), stream_id="acct-1")
    with pytest.raises(AssertionError, match="'acct-1': 5"):
        spec.then({"acct-1": 6})
    with pytest.raises(AssertionError, match="does not satisfy"):
        spec.then(lambda v: v["acct-1"] > 5)


class Untagged(msgspec.Struct, frozen=True):
    amount: int


def test_an_untagged_or_unregistered_event_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="no string tag"):
        balances.given(Untagged(1), stream_id="acct-1")
    spec = ProjectionSpec(Balances(), registry=EventRegistry([Opened]))
    with pytest.raises(TypeError, match="not registered"):
        spec.given(Deposited(1), stream_id="acct-1")


def test_a_registry_supplies_tags_and_schema_versions() -> None:
    spec = ProjectionSpec(Balances(), registry=registry()).given(Deposited(4))
    assert [(r.event_type, r.schema_version) for r in spec.events] == [("test.deposited", 1)]
    spec.then({"stream-1": 4})
