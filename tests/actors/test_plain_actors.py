"""Plain actors and ask deadlocks (CAN-4): self-asks and cycles fail fast."""

from __future__ import annotations

import anyio
import pytest

from actors import ActorRef, ReentrantAskError, ShuttingDown, open_system
from tests.actors.domain import Counter, Increment


async def test_a_plain_actor_answers_its_messages_in_order() -> None:
    async with open_system(":memory:") as system:
        seen: list[int] = []

        async def double(n: int) -> int:
            seen.append(n)
            return 2 * n

        ref = system.spawn("doubler", double)
        assert [await ref.ask(i) for i in range(3)] == [0, 2, 4]
        ref.tell(10)
        assert await ref.ask(11) == 22
        assert seen == [0, 1, 2, 10, 11]


async def test_a_handler_error_goes_to_the_caller_and_the_actor_goes_on() -> None:
    async with open_system(":memory:") as system:

        async def picky(n: int) -> int:
            if n < 0:
                raise ValueError(f"negative: {n}")
            return n

        ref = system.spawn("picky", picky)
        with pytest.raises(ValueError, match="negative"):
            await ref.ask(-1)
        assert await ref.ask(5) == 5
        assert (ref.handled, ref.failed) == (1, 1)


async def test_a_self_ask_from_a_handler_raises_at_once() -> None:
    async with open_system(":memory:") as system:
        refs: dict[str, ActorRef[int, int]] = {}

        async def narcissist(n: int) -> int:
            return await refs["me"].ask(n + 1)  # would wait on itself forever

        refs["me"] = system.spawn("me", narcissist)
        with anyio.fail_after(5), pytest.raises(ReentrantAskError) as caught:
            await refs["me"].ask(1)
        assert caught.value.chain == ("me",)


async def test_an_ask_cycle_through_three_actors_fails_fast_and_all_keep_working() -> None:
    async with open_system(":memory:") as system:
        refs: dict[str, ActorRef[int, int]] = {}

        def forwarder(target: str) -> object:
            async def handle(n: int) -> int:
                if n == 0:
                    return 0
                return await refs[target].ask(n)

            return handle

        for name, target in (("a", "b"), ("b", "c"), ("c", "a")):
            refs[name] = system.spawn(name, forwarder(target))  # type: ignore[arg-type]
        with anyio.fail_after(5), pytest.raises(ReentrantAskError) as caught:
            await refs["a"].ask(1)  # a -> b -> c -> a
        assert caught.value.chain == ("a", "b", "c")
        for name in "abc":
            assert await refs[name].ask(0) == 0


async def test_a_plain_actor_can_drive_aggregates_and_is_drained_on_shutdown() -> None:
    async with open_system(":memory:") as system:
        counters = system.aggregates(Counter)

        async def bump(aggregate_id: str) -> int:
            return (await counters.ask(aggregate_id, Increment(by=1))).version

        ref = system.spawn("bumper", bump)
        for _ in range(20):
            ref.tell("x")
        assert await system.shutdown()  # the bumper drains first, its asks still go in
        assert (ref.handled, ref.failed) == (20, 0)
        assert await system.store.stream_version("counter-x") == 20
        with pytest.raises(ShuttingDown):
            await counters.ask("x", Increment(by=1))
        with pytest.raises(ShuttingDown):
            await ref.ask("x")
        with pytest.raises(ShuttingDown):
            system.spawn("late", bump)
    async with open_system(":memory:") as system:
        system.spawn("dup", bump)
        with pytest.raises(ValueError, match="already running"):
            system.spawn("dup", bump)
