"""What the router refuses at the door, before any actor is started or mailbox used:
commands that are not what the aggregate declares, ids the store cannot take, naive
datetimes, and work sent after shutdown (worded for what was asked)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import msgspec
import pytest
from structlog.testing import capture_logs

from actors import (
    ActorSystem,
    Aggregate,
    Command,
    Dispatch,
    Event,
    InvalidCommand,
    ProcessManager,
    ShuttingDown,
    open_system,
)
from demo.bank import Account, Deposit, OpenAccount, Transfer
from store import InvalidReadArgument, InvalidStreamId, NaiveDatetime, RecordedEvent
from tests.actors import domain

# -- A: commands are checked against their declared field types ------------------------


async def _opened(system: ActorSystem) -> None:
    await system.aggregates(Account).ask("a", OpenAccount("a", "ada"))


def _bad(command: Command, **fields: Any) -> Any:
    """`command` with `fields` replaced, unchecked (as a caller's bug would build it)."""
    return msgspec.structs.replace(command, **fields)


@pytest.mark.parametrize(
    ("amount", "got"),
    [(1.5, "float"), (True, "bool"), ("100", "str"), (None, "None"), (100.0, "float")],
)
async def test_a_field_of_the_wrong_type_is_refused_naming_it(amount: object, got: str) -> None:
    async with open_system(":memory:") as system:
        await _opened(system)
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidCommand) as asked:
            await accounts.ask("a", Deposit("a", amount))  # type: ignore[arg-type]
        with pytest.raises(InvalidCommand) as told:
            accounts.tell("a", Deposit("a", amount))  # type: ignore[arg-type]
        for error in (asked.value, told.value):
            assert (error.aggregate, error.aggregate_id) == ("Account", "a")
            assert (error.command_type, error.field) == ("Deposit", "amount")
            assert f"got `{got}`" in error.reason
            assert str(error) == (
                f"invalid command Deposit for Account 'a': field 'amount': {error.reason}"
            )
        assert await system.store.stream_version("account-a") == 1
        stats = system.statistics()
        assert (stats.commands, stats.failures) == (1, 0)


async def test_a_refused_command_starts_no_actor() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidCommand):
            await accounts.ask("new", Deposit("new", 1.5))  # type: ignore[arg-type]
        with pytest.raises(InvalidCommand):
            accounts.tell("new", Deposit("new", 1.5))  # type: ignore[arg-type]
        assert system.statistics().live_actors == 0


async def test_a_command_the_aggregate_does_not_handle_is_refused() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", domain.Deposit(amount=5))  # type: ignore[arg-type]
        error = caught.value
        assert (error.command_type, error.field) == ("Deposit", None)
        assert "Account does not handle it (it handles " in str(error)
        assert "PayForOrder" in str(error)
        with pytest.raises(InvalidCommand, match="does not handle"):
            accounts.tell("a", domain.Increment(by=1))  # type: ignore[arg-type]
        transfers = system.aggregates(Transfer)
        with pytest.raises(InvalidCommand, match="invalid command OpenAccount for Transfer"):
            await transfers.ask("t", OpenAccount("a", "ada"))  # type: ignore[arg-type]
        assert system.statistics().live_actors == 0


@pytest.mark.parametrize("sent", [{"amount": 5}, "deposit", None, 5])
async def test_something_that_is_not_a_command_is_refused(sent: object) -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", cast(Any, sent))
        assert caught.value.command_type == type(sent).__qualname__
        assert "does not handle it" in str(caught.value)
        assert system.statistics().live_actors == 0


async def test_a_str_field_that_is_not_a_str_or_not_unicode_is_refused() -> None:
    async with open_system(":memory:") as system:
        await _opened(system)
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", _bad(OpenAccount("a", "ada"), owner=7))
        assert caught.value.field == "owner"
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", OpenAccount("a", "ad\ud800a"))
        assert caught.value.field == "owner"
        assert "not valid Unicode" in caught.value.reason
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", _bad(Deposit("a", 1), amount=2**70))
        assert caught.value.field == "amount"
        assert "OverflowError" in caught.value.reason
        with pytest.raises(InvalidCommand) as caught:
            await accounts.ask("a", _bad(Deposit("a", 1), amount=object()))
        assert caught.value.field == "amount"
        assert "TypeError" in caught.value.reason


class Tagged(Command, tag="test.door.tagged"):
    count: Annotated[int, msgspec.Meta(ge=1)]
    name: str = msgspec.field(default="", name="label")
    lines: tuple[int, ...] = ()


class TaggedState(msgspec.Struct, frozen=True):
    count: int = 0


class TaggedEvent(Event, tag="test.door.tagged_event"):
    count: int


class Constrained(Aggregate[TaggedState, Tagged, TaggedEvent]):
    initial = TaggedState()
    category = "constrained"

    def decide(self, state: TaggedState, command: Tagged) -> Sequence[TaggedEvent]:
        return [TaggedEvent(command.count)]

    def evolve(self, state: TaggedState, event: TaggedEvent) -> TaggedState:
        return TaggedState(state.count + event.count)


async def test_constraints_renamed_and_nested_fields_are_checked_too() -> None:
    async with open_system(":memory:") as system:
        router = system.aggregates(Constrained)
        with pytest.raises(InvalidCommand) as caught:
            await router.ask("x", Tagged(count=0))
        assert (caught.value.field, caught.value.reason) == ("count", "Expected `int` >= 1")
        with pytest.raises(InvalidCommand) as caught:
            await router.ask("x", Tagged(count=1, name=3))  # type: ignore[arg-type]
        assert caught.value.field == "name"  # the attribute, not its encoded name
        with pytest.raises(InvalidCommand) as caught:
            await router.ask("x", Tagged(count=1, lines=(1, 2.5)))  # type: ignore[arg-type]
        assert caught.value.field == "lines"
        assert caught.value.reason == "Expected `int`, got `float` - at `$.lines[1]`"
        assert (await router.ask("x", Tagged(count=2, name="n", lines=(1,)))).version == 1


async def test_valid_commands_still_pass() -> None:
    async with open_system(":memory:") as system:
        await _opened(system)
        result = await system.aggregates(Account).ask("a", Deposit("a", 100))
        assert result.version == 2


def test_an_invalid_command_error_pickles_with_its_attributes() -> None:
    error = InvalidCommand(
        "Account", "Expected `int`", command_type="Deposit", field="amount", aggregate_id="a"
    )
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert (again.command_type, again.field, again.aggregate_id) == ("Deposit", "amount", "a")
    plain = pickle.loads(pickle.dumps(InvalidCommand("Account", "not JSON")))
    assert str(plain) == "invalid command for Account: not JSON"


class Sloppy(ProcessManager):
    """Dispatches a deposit with a float amount for every account opened."""

    name = "sloppy"
    event_types = (domain.AccountOpened,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        return [Dispatch(domain.Account, "target", domain.Deposit(amount=cast(int, 2.5)))]


async def test_a_process_manager_s_invalid_command_is_parked_not_stored() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(domain.Account)
        await accounts.ask("target", domain.OpenAccount(owner="ada"))
        manager = await system.run_process_manager(Sloppy())
        last = (await accounts.ask("source", domain.OpenAccount(owner="bob"))).position
        await manager.wait_for(last)
        parked = manager.dead_letters()
        assert len(parked) == 2
        assert all(p.error.startswith("InvalidCommand: invalid command Deposit") for p in parked)
        assert (await accounts.state("target")).balance == 0
        assert system.statistics().failures == 0


# -- D: after shutdown, the refusal says what was refused ------------------------------


async def test_after_shutdown_a_command_and_a_state_query_are_refused_as_such() -> None:
    with capture_logs() as logs:
        async with open_system(":memory:") as system:
            accounts = system.aggregates(Account)
            await _opened(system)
        with pytest.raises(
            ShuttingDown, match=r"; command for Account 'a' refused \(not applied\)"
        ):
            await accounts.ask("a", Deposit("a", 1))
        with pytest.raises(
            ShuttingDown, match=r"; command for Account 'a' refused \(not applied\)"
        ):
            accounts.tell("a", Deposit("a", 1))
        with pytest.raises(ShuttingDown) as caught:
            await accounts.state("a")
        assert str(caught.value).endswith("; state query for Account 'a' refused")
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


# -- B: ids the store cannot take are refused at the door ------------------------------

_BAD_IDS = ["x" * 10_000, "a\x00b", "a\nb", "a\ud800", "", " ", 7, None, b"a"]


@pytest.mark.parametrize("bad", _BAD_IDS, ids=repr)
async def test_an_id_the_store_cannot_take_is_refused_before_any_actor(bad: object) -> None:
    aggregate_id = cast(str, bad)
    with capture_logs() as logs:
        async with open_system(":memory:") as system:
            accounts = system.aggregates(Account)
            with pytest.raises(InvalidStreamId):
                accounts.stream_id(aggregate_id)
            with pytest.raises(InvalidStreamId):
                await accounts.ask(aggregate_id, OpenAccount("a", "ada"))
            with pytest.raises(InvalidStreamId):
                accounts.tell(aggregate_id, OpenAccount("a", "ada"))
            with pytest.raises(InvalidStreamId):
                await accounts.state(aggregate_id)
            with pytest.raises(InvalidStreamId):
                await accounts.state_at(aggregate_id, version=1)
            with pytest.raises(InvalidStreamId):
                await accounts.history(aggregate_id)
            stats = system.statistics()
            assert (stats.live_actors, stats.commands, stats.failures) == (0, 0, 0)
            assert await system.store.last_position() == 0
    assert [e for e in logs if e["log_level"] in ("warning", "error", "critical")] == []


async def test_an_id_refusal_names_the_aggregate_and_what_is_wrong() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        with pytest.raises(InvalidStreamId) as caught:
            await accounts.ask("", OpenAccount("a", "ada"))
        assert caught.value.stream_id == "account-"
        assert caught.value.reason == "the Account id must be a non-empty str (not blank), not ''"
        with pytest.raises(InvalidStreamId) as caught:
            await accounts.ask(cast(str, 7), OpenAccount("a", "ada"))
        assert caught.value.stream_id == 7
        assert caught.value.reason == "the Account id must be a non-empty str, not int"
        with pytest.raises(InvalidStreamId) as caught:
            await accounts.ask("x" * 10_000, OpenAccount("a", "ada"))
        assert caught.value.stream_id == "account-" + "x" * 10_000
        assert "max_stream_id_bytes" in caught.value.reason
        assert accounts.stream_id("a") == "account-a"


# -- C: a naive datetime is refused, not read as local time ----------------------------


async def test_state_at_refuses_a_naive_datetime_like_the_store() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        await _opened(system)
        naive = datetime(2030, 1, 1)  # naive: the point of the test
        with pytest.raises(NaiveDatetime) as caught:
            await accounts.state_at("a", at=naive)
        assert (caught.value.what, caught.value.value) == ("state_at('account-a')", naive)
        with pytest.raises(NaiveDatetime):
            await system.store.read_stream_until("account-a", naive)
        aware = await accounts.state_at("a", at=datetime(2030, 1, 1, tzinfo=UTC))
        assert aware.owner == "ada"
        assert (await accounts.state_at("a", at=0)).owner is None


@pytest.mark.parametrize("at", [float("nan"), True, "2030-01-01", object()], ids=repr)
async def test_state_at_refuses_a_moment_that_is_not_one(at: object) -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        await _opened(system)
        with pytest.raises(InvalidReadArgument) as caught:
            await accounts.state_at("a", at=cast(float, at))
        assert (caught.value.call, caught.value.argument) == ("state_at('account-a')", "at")


async def test_state_at_with_both_version_and_at_and_history_with_a_bad_limit() -> None:
    async with open_system(":memory:") as system:
        accounts = system.aggregates(Account)
        await _opened(system)
        with pytest.raises(InvalidReadArgument, match="give either version or at"):
            await accounts.state_at("a", version=1, at=0.0)
        for limit in (0, -1, 1.5, True):
            with pytest.raises(InvalidReadArgument) as caught:
                await accounts.history("a", limit=cast(int, limit))
            assert (caught.value.call, caught.value.argument) == ("history('account-a')", "limit")
        assert len(await accounts.history("a", limit=1)) == 1
