"""The child-process workload of the crash tests: the bank under load, reporting as it goes.

    python -m tests.reliability.child --db F --seed S [--synchronous FULL|NORMAL]
        [--accounts N] [--clients C] [--commands K] [--run TAG] [--snapshot-every V]
        [--transfers] [--broken ack-before-commit] [--on-sigterm]

It opens `--accounts` accounts (ids `acc-<i>`, command ids `open-<i>`, `seed-<i>`: a
restart resends them harmlessly), then `--clients` tasks send deposits, withdrawals and
(with `--transfers`, carried out by the transfer process manager) transfers at full
speed, `--commands` each (0: until killed). Faults come from `ES_FAULTS`, armed once the
accounts are open (so `nth` counts hits of the load).

Stdout carries one JSON line per event of interest, flushed at once, so every line the
parent has read survives a SIGKILL of the child:

- `{"send": id, "kind": k, "account": a, "target": t, "amount": n}` before each ask;
- `{"ack": id, "stream": s, "version": v, "position": p, "events": n, "duplicate": b}`
  once the ask returned (a durable acknowledgement);
- `{"refused": id, "error": type}` for a refusal (nothing stored);
- `{"failed": id, "error": type}` for a failure of unknown outcome (a timeout under
  load, the store unavailable): the command may or may not be stored;
- `{"digest": p, "hash": h}` about every 200 ms: the hash of the live balances read
  model at position p (see `oracle.balances_hash`);
- `{"ready": true}` once the accounts are open, `{"done": true}` at a clean end.

With `--on-sigterm`, SIGTERM shuts the system down gracefully, as a service's handler
would: `{"sigterm": true}`, then `system.shutdown(grace=5)` and `{"shutdown": drained}`
once it returned; clients end on their first `ShuttingDown` (reported as refused), the
last digest is printed and the child exits 0.

`--broken ack-before-commit` is the deliberately broken variant of the durability
checker's self-test: the writer answers its callers but commits only every 8th batch,
so a kill loses acknowledged commands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from typing import Any

import anyio

from actors import ActorSystem, CommandResult, Rejected, ShuttingDown, open_system
from demo.bank import (
    Account,
    Balances,
    BalancesView,
    Deposit,
    OpenAccount,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdraw,
)
from readmodels import ProjectionHandle
from store import faults
from tests.reliability._broken import acks_before_commit
from tests.reliability.oracle import balances_hash

SEED_BALANCE = 100_000


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def client(system: ActorSystem, args: argparse.Namespace, number: int) -> None:
    rng = random.Random(f"{args.seed}-{number}")
    accounts = system.aggregates(Account)
    transfers = system.aggregates(Transfer)
    sent = 0
    result: CommandResult[Any]
    while args.commands == 0 or sent < args.commands:
        sent += 1
        command_id = f"{args.run}-{number}-{sent}"
        account = f"{rng.randrange(args.accounts)}"
        amount = rng.randint(1, 5_000)
        roll = rng.random()
        kind = (
            "deposit"
            if roll < 0.4
            else "withdraw"
            if roll < 0.7 or not args.transfers
            else "transfer"
        )
        target = f"{rng.randrange(args.accounts)}"
        if kind == "transfer" and target == account:
            kind = "deposit"
        emit(send=command_id, kind=kind, account=account, target=target, amount=amount)
        try:
            if kind == "transfer":
                result = await transfers.ask(
                    command_id,
                    RequestTransfer(
                        transfer_id=command_id, source=account, target=target, amount=amount
                    ),
                    command_id=command_id,
                )
                stream = f"{Transfer.category}-{command_id}"
            else:
                command = (Deposit if kind == "deposit" else Withdraw)(
                    account_id=account, amount=amount
                )
                result = await accounts.ask(account, command, command_id=command_id)
                stream = f"{Account.category}-{account}"
        except Rejected as refusal:
            emit(refused=command_id, error=type(refusal).__name__)
            continue
        except ShuttingDown:
            emit(refused=command_id, error="ShuttingDown")
            return
        except Exception as exc:  # noqa: BLE001 - outcome unknown (timeout...): reported
            emit(failed=command_id, error=type(exc).__name__)
            continue
        emit(
            ack=command_id,
            stream=stream,
            version=result.version,
            position=result.position,
            events=len(result.events),
            duplicate=result.duplicate,
        )


async def digests(system: ActorSystem, handle: ProjectionHandle[BalancesView]) -> None:
    while True:
        await anyio.sleep(0.2)
        emit(digest=handle.position, hash=balances_hash(handle.view.balances))


async def on_sigterm(system: ActorSystem) -> None:
    """Shut the system down gracefully at the first SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            emit(sigterm=True)
            emit(shutdown=await system.shutdown(grace=5))
            return


async def main(args: argparse.Namespace) -> None:
    if args.broken == "ack-before-commit":
        acks_before_commit()
    # Fault rules count from the start of the load, not from the accounts' opening.
    spec = os.environ.get(faults.ENV)
    faults.configure(None)
    async with open_system(
        args.db,
        synchronous=args.synchronous,
        writer=args.writer,
        idle_timeout=None,
        max_live_actors=100_000,
    ) as system:
        accounts = system.aggregates(Account, snapshot_every=args.snapshot_every)
        system.aggregates(Transfer)
        if args.transfers:
            await system.run_process_manager(TransferProcess())
        for i in range(args.accounts):
            await accounts.ask(
                f"{i}", OpenAccount(account_id=f"{i}", owner=f"o{i}"), command_id=f"open-{i}"
            )
            await accounts.ask(
                f"{i}", Deposit(account_id=f"{i}", amount=SEED_BALANCE), command_id=f"seed-{i}"
            )
        balances = await system.project(Balances())
        faults.configure(spec, seed=args.seed)
        emit(ready=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(digests, system, balances)
            if args.on_sigterm:
                tg.start_soon(on_sigterm, system)
            async with anyio.create_task_group() as clients:
                for number in range(args.clients):
                    clients.start_soon(client, system, args, number)
            tg.cancel_scope.cancel()
        if args.on_sigterm:  # the read model reaches the head before the process exits
            await balances.wait_for(await system.store.last_position(), timeout=30)
        emit(digest=balances.position, hash=balances_hash(balances.view.balances))
    emit(done=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.child")
    parser.add_argument("--db", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--writer", choices=("thread", "process"), default="thread")
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--commands", type=int, default=0)
    parser.add_argument("--run", default="r0")
    parser.add_argument("--snapshot-every", type=int, default=None)
    parser.add_argument("--transfers", action="store_true")
    parser.add_argument("--broken", choices=("ack-before-commit",), default=None)
    parser.add_argument("--on-sigterm", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
