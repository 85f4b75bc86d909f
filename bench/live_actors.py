"""What a live actor costs at rest: memory and objects the garbage collector walks.

    python -m bench.live_actors                    # 20,000 accounts
    python -m bench.live_actors --accounts 100000

Opens `--accounts` bank accounts (500 asks in flight, an in-memory store), then counts
what the live actors hold once every command was answered: the bytes allocated since
before the first command (`tracemalloc`: the actors, their states, mailboxes and the
registry's entries; the store's rows excluded, they live in SQLite) and the objects the
collector tracks (`gc.get_objects()`), each per live actor. Then it sends each account
a command through its mailbox (`tell`), so every actor gets a task, waits for them all
to be answered, and counts again with up to `idle_actor_tasks` tasks waiting.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

import anyio

from actors import ActorSystem, open_system
from demo.bank import Account, Deposit, OpenAccount


def _snapshot() -> tuple[int, int]:
    gc.collect()
    return tracemalloc.get_traced_memory()[0], len(gc.get_objects())


def _row(what: str, system: ActorSystem, base: tuple[int, int], accounts: int) -> None:
    memory, objects = _snapshot()
    stats = system.statistics()
    print(
        f"{what:<38} {stats.live_actors:>8,} {stats.actor_tasks:>7,}"
        f" {(memory - base[0]) / accounts:>10,.0f} {(objects - base[1]) / accounts:>9.1f}"
    )


async def _run(accounts: int) -> None:
    async with open_system(":memory:", max_live_actors=max(accounts, 1) + 1) as system:
        router = system.aggregates(Account)
        await router.ask("warm", OpenAccount(account_id="warm", owner="x"))  # code paths
        limiter = anyio.CapacityLimiter(500)

        async def open_one(n: int) -> None:
            async with limiter:
                await router.ask(f"a{n}", OpenAccount(account_id=f"a{n}", owner="x"))

        tracemalloc.start()
        base = _snapshot()
        async with anyio.create_task_group() as tg:
            for n in range(accounts):
                tg.start_soon(open_one, n)
        print(f"# {accounts:,} accounts opened; per live actor, what it holds at rest")
        print(f"{'':<38} {'live':>8} {'tasks':>7} {'bytes/actor':>10} {'objects/actor':>9}")
        _row("opened (each on its caller's task)", system, base, accounts)
        for start in range(0, accounts, 1_000):  # within max_queued_commands
            chunk = range(start, min(start + 1_000, accounts))
            for n in chunk:
                router.tell(f"a{n}", Deposit(account_id=f"a{n}", amount=1))
            for n in chunk:
                await router.state(f"a{n}")  # through the mailbox: after the deposit
        _row("after a command through each mailbox", system, base, accounts)
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    args = parser.parse_args()
    anyio.run(_run, args.accounts)


if __name__ == "__main__":
    main()
