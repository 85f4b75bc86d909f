"""A bank workload in a child process, for crash tests of the reliability suite.

Run as::

    python -m tests.reliability.child --db FILE --seed S --synchronous FULL|NORMAL \
        --accounts N --clients C [--commands K] [--digest-interval SECONDS]

It opens an actor system on FILE with a live `Balances` projection, opens N accounts
(`acct-0`...), then C client tasks send deposits and withdrawals at full speed, each
with an explicit command id (`c<client>-<n>`), until K commands in all (default: no
limit, run until killed). For every completed ask it writes one flushed JSON line to
stdout::

    {"cmd_id": ..., "stream": ..., "outcome": "ok"|"rejected"|<error type>,
     "first_version": ..., "last_version": ..., "position": ...}

(versions and position only for "ok"), and about every `--digest-interval` seconds (and
at the end) a digest line `{"digest": position, "hash": h}` with `h` = `balances_hash` of
the projection's view at that position. Faults come from `ES_FAULTS` in its environment.

Before each client ask it prints `{"sent": cmd_id, "deposit"|"withdraw": [account,
amount]}` or `{"sent": cmd_id, "transfer": [source, target, amount]}`, so a test can
resend a command whose reply was lost. `--transfers P` makes a fraction P of the commands
transfers (`RequestTransfer` on the transfer aggregate, id = command id) carried out by a
running `TransferProcess`; `--snapshot-every N` snapshots accounts every N events.
`--faults SPEC` configures fault rules (the `ES_FAULTS` syntax) once the accounts are
open, so their hits count from the client load on.

`--ack-before-commit` (with `--clients 1`) is a deliberately broken variant for checker
self-tests: each client command is a deposit whose "ok" line (with the version and
position it will get) is printed before it is sent, so a crash before its commit leaves
an acknowledged command that was never stored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Awaitable
from typing import Any

import anyio

from actors import CommandResult, Rejected, open_system
from demo.bank import (
    Account,
    Balances,
    Deposit,
    OpenAccount,
    RequestTransfer,
    Transfer,
    TransferProcess,
    Withdraw,
)
from store import faults


def balances_hash(balances: dict[str, int]) -> str:
    """A stable hash of an account id -> balance mapping."""
    text = json.dumps(sorted(balances.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _emit(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _ask(line: dict[str, object], ask: Awaitable[CommandResult[Any]]) -> None:
    try:
        result = await ask
    except Rejected:
        line["outcome"] = "rejected"
    except Exception as exc:  # noqa: BLE001 - reported by type, the test judges
        line["outcome"] = type(exc).__name__
    else:
        line["outcome"] = "ok"
        line["first_version"] = result.version - len(result.events) + 1
        line["last_version"] = result.version
        line["position"] = result.position
    _emit(line)


async def run(args: argparse.Namespace) -> None:
    """Open the system, the accounts, and run the clients (see the module docstring)."""
    if args.snapshot_every:
        Account.snapshot_every = args.snapshot_every  # this process only
    async with open_system(args.db, synchronous=args.synchronous) as system:
        accounts = system.aggregates(Account)
        transfers = system.aggregates(Transfer)
        balances = await system.project(Balances())
        if args.transfers > 0:
            await system.run_process_manager(TransferProcess())
        ids = [f"acct-{i}" for i in range(args.accounts)]
        for account in ids:
            result = await accounts.ask(
                account, OpenAccount(account, "owner"), command_id=f"open-{account}"
            )
            _emit(
                {
                    "cmd_id": f"open-{account}",
                    "stream": f"account-{account}",
                    "outcome": "ok",
                    "first_version": result.version - len(result.events) + 1,
                    "last_version": result.version,
                    "position": result.position,
                }
            )
        if args.faults:
            faults.configure(args.faults, seed=args.seed)  # counted from the load on
        budget = [args.commands]
        versions = dict.fromkeys(ids, 1)  # for --ack-before-commit (one client: exact)
        position = [await system.store.last_position()]
        done = anyio.Event()

        async def client(n: int) -> None:
            rng = random.Random(f"{args.seed}-{n}")
            k = 0
            while budget[0] != 0:
                if budget[0] > 0:
                    budget[0] -= 1
                k += 1
                account = rng.choice(ids)
                amount = rng.randint(1, 500)
                command = (
                    Deposit(account, amount) if rng.random() < 0.6 else Withdraw(account, amount)
                )
                cmd_id = f"c{n}-{k}"
                line: dict[str, object] = {"cmd_id": cmd_id, "stream": f"account-{account}"}
                if rng.random() < args.transfers:
                    target = rng.choice(ids)
                    if target != account:
                        transfer = RequestTransfer(cmd_id, account, target, amount)
                        line["stream"] = f"transfer-{cmd_id}"
                        _emit({"sent": cmd_id, "transfer": [account, target, amount]})
                        await _ask(line, transfers.ask(cmd_id, transfer, command_id=cmd_id))
                        continue
                if args.ack_before_commit:  # the broken variant: a deposit acked, then sent
                    command = Deposit(account, amount)
                    versions[account] += 1
                    position[0] += 1
                    _emit(
                        line
                        | {
                            "outcome": "ok",
                            "first_version": versions[account],
                            "last_version": versions[account],
                            "position": position[0],
                        }
                    )
                    await accounts.ask(account, command, command_id=cmd_id)
                    continue
                kind = "deposit" if isinstance(command, Deposit) else "withdraw"
                _emit({"sent": cmd_id, kind: [account, amount]})
                await _ask(line, accounts.ask(account, command, command_id=cmd_id))

        async def digests() -> None:
            while not done.is_set():
                with anyio.move_on_after(args.digest_interval):
                    await done.wait()
                view = balances.view
                _emit({"digest": balances.position, "hash": balances_hash(view.balances)})

        async with anyio.create_task_group() as outer:
            outer.start_soon(digests)
            async with anyio.create_task_group() as tg:
                for n in range(args.clients):
                    tg.start_soon(client, n)
            await balances.wait_for(await system.store.last_position())
            done.set()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the workload."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.child")
    parser.add_argument("--db", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--commands", type=int, default=-1)
    parser.add_argument("--digest-interval", type=float, default=0.5)
    parser.add_argument("--ack-before-commit", action="store_true")
    parser.add_argument("--faults", default="")
    parser.add_argument("--transfers", type=float, default=0.0)
    parser.add_argument("--snapshot-every", type=int, default=0)
    args = parser.parse_args(argv)
    if args.ack_before_commit and args.clients != 1:
        parser.error("--ack-before-commit needs --clients 1 (it predicts versions and positions)")
    anyio.run(run, args)


if __name__ == "__main__":
    main()
