"""A router does not undo the schema version the user registered an event type at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from actors import Aggregate, Command, Event, open_system
from store import EventRegistry


class Add(Command, tag="tally.add"):
    amount: int


class Added(Event, tag="tally.added"):  # today's shape, schema version 2
    amount: int


class AddedV1(Event, tag="tally.added"):  # the shape first written
    n: int


class Tally(Aggregate[int, Add, Added]):
    initial = 0
    category = "tally"

    def decide(self, state: int, command: Add) -> Sequence[Added]:
        return [Added(amount=command.amount)]

    def evolve(self, state: int, event: Added) -> int:
        return state + event.amount


async def test_old_events_are_upcast_after_the_router_registers_its_types(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tally.db"
    async with open_system(path, registry=EventRegistry([AddedV1])) as system:
        await system.store.append("tally-t", [AddedV1(n=4)], expected_version=0)

    registry = EventRegistry()
    registry.register(Added, schema_version=2)
    registry.upcaster("tally.added", 1, lambda data: {"amount": data["n"]})
    async with open_system(path, registry=registry) as system:
        tallies = system.aggregates(Tally)  # registers Added: must keep version 2
        assert await tallies.state("t") == 4
        result = await tallies.ask("t", Add(amount=3))
        assert result.version == 2
        assert await tallies.state_at("t") == 7
        history = [r.event for r in await tallies.history("t")]
        assert history == [Added(amount=4), Added(amount=3)]
