from __future__ import annotations

import time

import anyio
import pytest

from actors import (
    ActorSystem,
    CommandFailed,
    CommandResult,
    MailboxFull,
    RecoveryError,
    ReentrantAskError,
    ShuttingDown,
    open_system,
)
from actors._context import handling
from bus import EventBus
from store import NO_STREAM, EventRegistry, open_store
from tests.actors.domain import (
    Account,
    AccountNotOpen,
    AccountOpened,
    AccountState,
    Boom,
    Counter,
    CounterState,
    Deposit,
    Deposited,
    Increment,
    Incremented,
    Noop,
    OpenAccount,
    Poisoned,
    Withdraw,
)


async def test_ask_returns_after_commit_with_version_and_position(system: ActorSystem) -> None:
    accounts = system.aggregates(Account)
    opened = await accounts.ask("a1", OpenAccount(owner="ada"))
    deposited = await accounts.ask("a1", Deposit(amount=5))
    assert opened == CommandResult((AccountOpened(owner="ada"),), version=1, position=1)
    assert deposited == CommandResult((Deposited(amount=5),), version=2, position=2)
    stored = await system.store.read_stream("account-a1")
    assert [(e.version, e.position, e.event) for e in stored] == [
        (1, 1, AccountOpened(owner="ada")),
        (2, 2, Deposited(amount=5)),
    ]


async def test_a_command_without_events_answers_the_current_version_and_position(
    system: ActorSystem,
) -> None:
    counters = system.aggregates(Counter)
    accounts = system.aggregates(Account)
    await accounts.ask("x", OpenAccount(owner="x"))  # position 1, another stream
    await counters.ask("c", Increment(by=2))  # position 2
    await accounts.ask("x", Deposit(amount=1))  # position 3
    assert await counters.ask("c", Noop()) == CommandResult((), version=1, position=2)
    assert await counters.ask("fresh", Noop()) == CommandResult((), version=0, position=0)


async def test_a_rejection_reaches_the_caller_and_stores_nothing(system: ActorSystem) -> None:
    accounts = system.aggregates(Account)
    with pytest.raises(AccountNotOpen):
        await accounts.ask("a1", Deposit(amount=5))
    assert await system.store.stream_version("account-a1") == 0
    await accounts.ask("a1", OpenAccount(owner="ada"))
    assert (await accounts.ask("a1", Deposit(amount=5))).version == 2
    assert system.statistics().rejections == 1


async def test_an_unexpected_decide_error_is_wrapped_with_type_and_id(
    system: ActorSystem,
) -> None:
    counters = system.aggregates(Counter)
    await counters.ask("c1", Increment(by=1))
    with pytest.raises(CommandFailed) as caught:
        await counters.ask("c1", Boom())
    error = caught.value
    assert (error.aggregate, error.aggregate_id, error.command_type) == ("Counter", "c1", "Boom")
    assert isinstance(error.__cause__, RuntimeError)
    assert "Counter 'c1'" in str(error)
    after = await counters.ask("c1", Increment(by=1))
    assert after.version == 2
    assert await counters.state("c1") == CounterState(value=2, count=2)
    stats = system.statistics()
    assert (stats.failures, stats.restarts) == (1, 0)


async def test_tell_enqueues_and_the_command_is_applied_in_order(system: ActorSystem) -> None:
    counters = system.aggregates(Counter)
    for i in range(10):
        counters.tell("c", Increment(by=1, tag=str(i)))
    state = await counters.state("c")  # answered after the tells, in mailbox order
    assert state.tags == tuple(str(i) for i in range(10))
    assert await system.store.stream_version("counter-c") == 10


async def test_event_types_are_registered_on_first_use(system: ActorSystem) -> None:
    assert not system.store.registry.is_registered(Incremented)
    router = system.aggregates(Counter)
    assert system.store.registry.is_registered(Incremented)
    assert system.store.registry.is_registered(Poisoned)
    assert system.aggregates(Counter) is router
    assert router.stream_id("7") == "counter-7"


async def test_a_bad_aggregate_id_is_refused_with_a_clear_error(system: ActorSystem) -> None:
    counters = system.aggregates(Counter)
    with pytest.raises(ValueError, match="non-empty str"):
        await counters.ask("", Increment(by=1))


async def test_history_and_state_at_a_version_or_moment(system: ActorSystem) -> None:
    accounts = system.aggregates(Account)
    await accounts.ask("h", OpenAccount(owner="ada"))
    await accounts.ask("h", Deposit(amount=10))
    history = await accounts.history("h")
    moment = history[-1].recorded_at
    await accounts.ask("h", Withdraw(amount=4))
    assert [e.event for e in await accounts.history("h")] == [
        AccountOpened(owner="ada"),
        Deposited(amount=10),
        *[e.event for e in (await accounts.history("h", from_version=3))],
    ]
    assert await accounts.state_at("h", version=1) == AccountState(owner="ada", balance=0)
    assert await accounts.state_at("h", version=2) == AccountState(owner="ada", balance=10)
    assert await accounts.state_at("h") == AccountState(owner="ada", balance=6)
    assert await accounts.state_at("h", at=moment) == AccountState(owner="ada", balance=10)
    assert await accounts.state_at("h", at=moment - 3600) == AccountState()
    assert await accounts.state_at("h") == await accounts.state("h")
    assert len(await accounts.history("h", limit=2)) == 2


async def test_statistics_count_live_actors_and_commands(system: ActorSystem) -> None:
    counters = system.aggregates(Counter)
    for name in ("a", "b", "c"):
        await counters.ask(name, Increment(by=1))
    stats = system.statistics()
    assert (stats.live_actors, stats.commands, stats.queued, stats.accepting) == (3, 3, 0, True)


async def test_a_self_ask_raises_at_once(system: ActorSystem) -> None:
    counters = system.aggregates(Counter)
    await counters.ask("me", Increment(by=1))
    with handling("counter-me"), pytest.raises(ReentrantAskError) as caught:
        await counters.ask("me", Increment(by=1))
    assert caught.value.chain == ("counter-me",)
    with handling("counter-b", chain=("counter-me",)), pytest.raises(ReentrantAskError):
        await counters.ask("me", Increment(by=1))  # a cycle me -> b -> me
    assert (await counters.ask("me", Increment(by=1))).version == 2


async def test_new_commands_after_shutdown_fail_fast(durable_target: str) -> None:
    async with open_system(durable_target) as system:
        counters = system.aggregates(Counter)
        await counters.ask("a", Increment(by=1))
        assert await system.shutdown()
        with pytest.raises(ShuttingDown):
            await counters.ask("a", Increment(by=1))
        with pytest.raises(ShuttingDown):
            counters.tell("a", Increment(by=1))
        assert not system.statistics().accepting


async def test_a_given_store_is_used_and_left_open() -> None:
    async with open_store(":memory:") as store:
        async with open_system(store) as system:
            await system.aggregates(Counter).ask("a", Increment(by=1))
        assert not store.closed
        assert await store.stream_version("counter-a") == 1
        with pytest.raises(TypeError, match="registry"):
            async with open_system(store, synchronous="FULL"):
                pass


class _Starter:
    def __init__(self) -> None:
        self.args: tuple[object, ...] = ()

    async def start(
        self,
        task_group: anyio.abc.TaskGroup,
        store: object,
        bus: EventBus,
        *,
        from_position: int = 0,
    ) -> str:
        self.args = (task_group, store, bus, from_position)
        return "running"


async def test_project_starts_a_projection_in_the_system_task_group(system: ActorSystem) -> None:
    starter = _Starter()
    assert await system.project(starter, from_position=7) == "running"
    assert starter.args == (system.task_group, system.store, system.bus, 7)


async def test_an_undecodable_stored_event_gives_a_recovery_error_and_others_work(
    durable_target: str,
) -> None:
    from actors import Event

    class Stranger(Event, tag="test.stranger"):
        pass

    path = durable_target
    async with open_store(path, registry=EventRegistry([Stranger, Incremented])) as store:
        await store.append("counter-bad", [Incremented(by=1)], expected_version=NO_STREAM)
        await store.append("counter-bad", [Stranger()], expected_version=1)
    async with open_system(path, quarantine_for=60) as system:
        counters = system.aggregates(Counter)
        with anyio.fail_after(5):
            with pytest.raises(RecoveryError) as caught:
                await counters.ask("bad", Increment(by=1))
            error = caught.value
            assert (error.stream_id, error.version, error.event_type) == (
                "counter-bad",
                2,
                "test.stranger",
            )
            started = time.monotonic()
            with pytest.raises(RecoveryError):  # quarantined: refused without reloading
                await counters.ask("bad", Increment(by=1))
            assert time.monotonic() - started < 5
            assert (await counters.ask("good", Increment(by=1))).version == 1
        assert system.statistics().restarts == 1
        assert await system.store.stream_version("counter-bad") == 2


async def test_an_event_evolve_refuses_at_load_names_stream_version_and_type(
    system: ActorSystem,
) -> None:
    counters = system.aggregates(Counter)
    await system.store.append("counter-p", [Poisoned()], expected_version=NO_STREAM)
    with anyio.fail_after(5), pytest.raises(RecoveryError) as caught:
        await counters.ask("p", Increment(by=1))
    assert (caught.value.stream_id, caught.value.version) == ("counter-p", 1)
    assert caught.value.event_type == "test.counter.poisoned"
    assert isinstance(caught.value.__cause__, ValueError)


async def test_tell_to_a_full_mailbox_raises_mailbox_full_at_once(system: ActorSystem) -> None:
    counters = system.aggregates(Counter, mailbox_capacity=2)
    counters.tell("m", Increment(by=1))
    counters.tell("m", Increment(by=1))
    with pytest.raises(MailboxFull) as caught:
        counters.tell("m", Increment(by=1))
    assert (caught.value.stream_id, caught.value.capacity) == ("counter-m", 2)
    assert (await counters.state("m")).value == 2
