"""The customers: each a deterministic sequence of commands drawn from its own generator."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgspec

from actors import ActorSystem, AggregateRouter, Command
from demo.bank import Account, Deposit, OpenAccount, RequestTransfer, Transfer, Withdraw
from demo.shop import Inventory, Order, OrderLine, PlaceOrder

__all__ = ["PRICES", "SKUS", "WAREHOUSES", "Router"]

Router = AggregateRouter[Any, Any, Any]

WAREHOUSES = ("w0", "w1", "w2")
SKUS = tuple(f"sku-{n:02d}" for n in range(12))
PRICES = {sku: 150 + 83 * n % 1_200 for n, sku in enumerate(SKUS)}


class _Routers:
    def __init__(self, system: ActorSystem) -> None:
        self.accounts: Router = system.aggregates(Account)
        self.transfers: Router = system.aggregates(Transfer)
        self.orders: Router = system.aggregates(Order)
        self.inventory: Router = system.aggregates(Inventory)


class _Customer:
    """One customer: a deterministic sequence of commands drawn from its own generator."""

    def __init__(self, index: int, seed: int, customers: int, prefix: str) -> None:
        self.index = index
        self.customers = customers
        self.prefix = prefix
        self.rng = random.Random(f"esactors-simulate:{seed}:{index}")
        self.account = f"{prefix}c{index}"
        self.sent = 0
        self._hash = hashlib.blake2b(f"customer {index}".encode(), digest_size=16)

    def command(self, k: int, routers: _Routers) -> tuple[Router, str, Command]:
        """The customer's `k`-th command (0-based)."""
        rng, me = self.rng, self.account
        if k == 0:
            return routers.accounts, me, OpenAccount(me, f"customer {self.index}")
        if k == 1:
            return routers.accounts, me, Deposit(me, rng.randint(5_000, 50_000))
        roll = rng.random()
        if roll < 0.20:
            return routers.accounts, me, Deposit(me, rng.randint(1, 20_000))
        if roll < 0.30:
            return routers.accounts, me, Withdraw(me, rng.randint(1, 20_000))
        if roll < 0.60:
            return self._transfer(k, routers)
        return self._order(k, routers)

    def command_id(self, k: int) -> str:
        """The id of the customer's `k`-th command: the same in every process that sends
        it, so a worker started in place of a killed one resends its customers'
        commands harmlessly (each is stored once)."""
        return f"{self.account}-{k}"

    def _transfer(self, k: int, routers: _Routers) -> tuple[Router, str, Command]:
        """A transfer to another customer (or, now and then, to an account never opened:
        refunded)."""
        rng, prefix = self.rng, self.prefix
        other = rng.randrange(self.customers)
        if other == self.index or rng.random() < 0.03:
            target = f"{prefix}x{rng.randrange(100)}"  # never opened: refunded
        else:
            target = f"{prefix}c{other}"
        transfer_id = f"{prefix}t{self.index}-{k}"
        command = RequestTransfer(transfer_id, self.account, target, rng.randint(1, 20_000))
        return routers.transfers, transfer_id, command

    def _order(self, k: int, routers: _Routers) -> tuple[Router, str, Command]:
        """An order of one to three products (now and then one listed twice: rejected)."""
        rng, me = self.rng, self.account
        skus = rng.sample(SKUS, rng.randint(1, 3))
        lines = [OrderLine(sku, rng.randint(1, 3), PRICES[sku]) for sku in skus]
        if rng.random() < 0.02:
            lines.append(lines[0])  # a product listed twice: rejected by validation
        order_id = f"{self.prefix}o{self.index}-{k}"
        warehouse = WAREHOUSES[rng.randrange(len(WAREHOUSES))]
        order = PlaceOrder(order_id, me, me, tuple(lines), warehouse)
        return routers.orders, order_id, order

    def record(self, command: Command) -> None:
        """Count `command` and hash it, with the run's id prefix taken out (a running
        hash, not a log: memory stays flat however long the run)."""
        encoded = msgspec.json.encode(command).replace(self.prefix.encode(), b"")
        self._hash.update(type(command).__name__.encode() + b" " + encoded + b"\n")
        self.sent += 1

    def digest(self) -> bytes:
        """The hash of every command recorded so far."""
        return self._hash.digest()
