"""Two actor systems on one store (a SQLite file, a PostgreSQL schema), as two processes
would be: each answers on the latest committed state, whoever wrote it.

A refusal, a no-op and a state query write nothing, so no expected version checks them:
the actor confirms the stream's version before answering, and decides again when
another process moved it. The bus's follower also tells live actors which streams
others wrote, so they reload before the next decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import anyio
import pytest

from actors import ActorSystem, open_system
from demo.bank import Account, Deposit, Deposited, InsufficientFunds, OpenAccount, Withdraw
from store import EventStore, RecordedEvent, open_store
from tests.actors.domain import Counter, Increment
from tests.actors.support import _Wrapper


async def opened_at_100(system: ActorSystem, account: str = "acc") -> None:
    router = system.aggregates(Account)
    await router.ask(account, OpenAccount(account, "ann"))
    await router.ask(account, Deposit(account, 100))


@pytest.mark.parametrize("follow", [False, True])
async def test_a_withdrawal_is_decided_on_another_process_deposit(
    durable_target: str, follow: bool
) -> None:
    """The issue's case: A holds a live account at 100, B deposits 1,000, A's
    Withdraw(500) is accepted and A's state shows 600 (with the follower off, only
    the confirmation can tell A)."""
    async with (
        open_system(durable_target, follow=follow) as a,
        open_system(durable_target, follow=False) as b,
    ):
        await opened_at_100(a)
        a_accounts = a.aggregates(Account)
        assert (await a_accounts.state("acc")).balance == 100  # live in A
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        result = await a_accounts.ask("acc", Withdraw("acc", 500))
        assert result.version == 4
        assert (await a_accounts.state("acc")).balance == 600
        assert (await b.aggregates(Account).state("acc")).balance == 600


async def test_a_state_query_and_a_no_op_see_another_process_commit(
    durable_target: str,
) -> None:
    async with (
        open_system(durable_target, follow=False) as a,
        open_system(durable_target, follow=False) as b,
    ):
        await opened_at_100(a)
        accounts = a.aggregates(Account)
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        assert (await accounts.state("acc")).balance == 1100
        await b.aggregates(Account).ask("acc", Deposit("acc", 5))
        # opening it again is a no-op: answered at the stream's version now, not A's
        noop = await accounts.ask("acc", OpenAccount("acc", "ann"))
        assert noop.events == ()
        assert noop.version == 4
        assert a.statistics().conflicts >= 2


async def test_a_refusal_that_still_holds_is_answered_after_the_check(
    durable_target: str,
) -> None:
    async with (
        open_system(durable_target, follow=False) as a,
        open_system(durable_target, follow=False) as b,
    ):
        await opened_at_100(a)
        await b.aggregates(Account).ask("acc", Deposit("acc", 10))
        with pytest.raises(InsufficientFunds):
            await a.aggregates(Account).ask("acc", Withdraw("acc", 500))
        assert (await a.aggregates(Account).state("acc")).balance == 110


class ReadCounter(_Wrapper):
    """Counts the reads of one stream (an actor's loads and catch-ups)."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.stream_reads = 0

    async def read_stream(self, stream_id: str, **kw: Any) -> list[RecordedEvent]:
        self.stream_reads += 1
        return await self.inner.read_stream(stream_id, **kw)


async def test_a_live_actor_folds_what_the_follower_read_before_its_next_decision(
    durable_target: str,
) -> None:
    seen = anyio.Event()

    def written(events: Sequence[RecordedEvent]) -> None:
        if any(e.stream_id == "account-acc" and e.version == 4 for e in events):
            seen.set()

    async with (
        open_store(durable_target) as inner,
        open_system(ReadCounter(inner).as_store()) as a,
        open_system(durable_target, follow=False) as b,
    ):
        counter = cast(ReadCounter, a.store)
        await opened_at_100(a)
        a.bus.add_external_listener(written)
        await b.aggregates(Account).ask("acc", Deposit("acc", 1000))
        await b.aggregates(Account).ask("acc", Deposit("acc", 1))
        with anyio.fail_after(10):
            await seen.wait()
        conflicts, reads = a.statistics().conflicts, counter.stream_reads
        result = await a.aggregates(Account).ask("acc", Withdraw("acc", 500))
        assert result.version == 5
        assert (await a.aggregates(Account).state("acc")).balance == 601
        # folded before deciding: no conflict, and no read of the stream
        assert a.statistics().conflicts == conflicts
        assert counter.stream_reads == reads


async def test_a_read_model_in_one_process_sees_commits_of_another(
    durable_target: str,
) -> None:
    async with (
        open_system(durable_target) as a,
        open_system(durable_target, follow=False) as b,
        a.bus.subscribe() as subscription,
    ):
        a.aggregates(Account)  # registers the account's events: A can decode them
        result = await b.aggregates(Account).ask("x", OpenAccount("x", "bob"))
        got: list[Any] = []
        with anyio.fail_after(10):
            async for recorded in subscription:
                got.append(recorded.event)
                if recorded.position == result.position:
                    break
        assert [type(e).__name__ for e in got] == ["AccountOpened"]


async def test_the_follower_skips_event_types_this_process_cannot_decode(
    durable_target: str,
) -> None:
    """A process that never registered the account's events (another service on the
    same store) follows past them instead of failing on every read."""
    async with (
        open_system(durable_target) as a,
        open_system(durable_target, follow=False) as b,
    ):
        counters = a.aggregates(Counter)
        tags = [a.store.registry.tag_of(tp) for tp in Counter.event_types]
        async with a.bus.subscribe(event_types=tags) as subscription:
            first = await counters.ask("c", Increment(tag="zero"))
            with anyio.fail_after(10):  # live now: it reads the store no more
                assert [e.position for e in (await subscription.next_batch()).events] == [
                    first.position
                ]
            catch_ups = subscription.statistics().catch_ups
            await b.aggregates(Account).ask("x", OpenAccount("x", "bob"))
            # A's own commit lands behind B's: the bus holds it until its follower
            # has read the gap, which it can only do by skipping B's event
            mine = await counters.ask("c", Increment(tag="one"))
            events: list[RecordedEvent] = []
            with anyio.fail_after(10):
                while not events:  # a batch covering only B's event, skipped, is empty
                    events = list((await subscription.next_batch()).events)
            assert [e.position for e in events] == [mine.position]
            assert subscription.statistics().catch_ups == catch_ups  # the bus fed it


async def test_follow_must_be_a_bool() -> None:
    from actors import InvalidOption

    with pytest.raises(InvalidOption, match="follow must be a bool"):
        async with open_system(":memory:", follow="yes"):  # type: ignore[arg-type]
            pass


async def test_another_process_event_before_the_actor_own_answer_is_kept_past_the_gap(
    tmp_path: str,
) -> None:
    """Another process appended right after this actor's append, and that commit was
    handed on before this actor's own answer: the event is kept past the gap the answer
    then fills, and folded without a read of the store."""
    async with open_system(f"{tmp_path}/events.db", follow=False) as system:
        await opened_at_100(system)
        actor: Any = system._registry.live["account-acc"]
        assert actor.version == 2
        later = RecordedEvent("account-acc", 4, 4, "bank.deposited", 1, Deposited(7), {}, 0.0)
        actor.offer(later)
        assert actor.behind == 4
        assert not actor._absorb()
        # the answer to its own append at version 3 arrives
        actor.state = Account().evolve(actor.state, Deposited(3))
        actor.version = 3
        assert actor._absorb()
        assert (actor.version, actor.state.balance) == (4, 110)
