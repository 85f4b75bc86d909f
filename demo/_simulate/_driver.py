"""The driver: stocks the shop, runs every customer's commands and counts the answers."""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from actors import ActorSystem, Command, Rejected
from demo._loadtest._instruments import _AckLog
from demo._simulate._customers import SKUS, WAREHOUSES, Router, _Customer, _Routers
from demo._simulate._options import SimOptions
from demo.shop import Restock

__all__: list[str] = []


@dataclass
class _Counts:
    acknowledged: int = 0
    rejected: int = 0
    errors: int = 0
    duplicates: int = 0  # acknowledged with the first result of an earlier send
    by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_type: Counter[str] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return self.acknowledged + self.rejected + self.errors


class _Run:
    """The customers of one process: all of them, or the share `indices` names (a
    worker's, in a several-process run); `ack_log` logs every acknowledgement."""

    def __init__(
        self,
        options: SimOptions,
        system: ActorSystem,
        prefix: str,
        indices: Sequence[int] | None = None,
        ack_log: _AckLog | None = None,
    ) -> None:
        self.options = options
        self.system = system
        self.routers = _Routers(system)
        self.counts = _Counts()
        self.ack_log = ack_log
        chosen = range(options.customers) if indices is None else indices
        self.customers = [_Customer(i, options.seed, options.customers, prefix) for i in chosen]
        self.deadline = math.inf
        self.started = 0.0
        self.setup = 0  # commands answered before the customers started (the restocks)

    async def send(
        self, router: Router, target: str, command: Command, command_id: str | None = None
    ) -> None:
        """Ask `command` of `target` and count the answer. With `command_id`, a command
        already committed under that id (by a worker killed before it heard the answer)
        is answered with its first result and stored nothing again."""
        counts = self.counts
        kind = type(command).__name__
        counts.by_type[kind] += 1
        try:
            result = await router.ask(target, command, command_id=command_id)
        except Rejected:
            counts.rejected += 1
            counts.rejected_by_type[kind] += 1
        except Exception as error:  # noqa: BLE001 - counted and reported by type
            counts.errors += 1
            counts.error_types[type(error).__name__] += 1
        else:
            counts.acknowledged += 1
            counts.duplicates += result.duplicate
            if self.ack_log is not None:
                self.ack_log.write(router.stream_id(target), result.version, result.position)

    async def restock(self) -> None:
        """Stock every warehouse for roughly 80% of the units the orders will ask for."""
        options = self.options
        # With a duration, guess the pace (about 3,000 commands/s on a 2-core machine).
        planned = (
            options.steps if options.steps is not None else int((options.duration or 0) * 3_000)
        )
        units = planned * 0.4 * 4  # 40% orders, ~4 units each
        quantity = max(5, min(1_000_000, int(0.8 * units / (len(WAREHOUSES) * len(SKUS)))))
        async with anyio.create_task_group() as tg:
            for warehouse in WAREHOUSES:

                async def one(warehouse: str = warehouse) -> None:
                    for sku in SKUS:
                        await self.send(
                            self.routers.inventory, warehouse, Restock(warehouse, sku, quantity)
                        )

                tg.start_soon(one)

    async def start(self) -> None:
        """Restock, then start the clock (and the deadline, with a duration)."""
        await self.restock()
        self.setup = self.counts.answered
        self.started = time.perf_counter()
        if self.options.duration is not None:
            self.deadline = self.started + self.options.duration

    def share(self, index: int) -> float:
        steps = self.options.steps
        if steps is None:
            return math.inf
        base, extra = divmod(steps, self.options.customers)
        return base + (1 if index < extra else 0)

    async def act(self, customer: _Customer) -> None:
        limit = self.share(customer.index)
        k = 0
        while k < limit and time.perf_counter() < self.deadline:
            router, target, command = customer.command(k, self.routers)
            customer.record(command)
            await self.send(router, target, command, customer.command_id(k))
            k += 1

    async def act_all(self) -> None:
        """Every customer at once, one task each; return when all have stopped."""
        async with anyio.create_task_group() as tg:
            for customer in self.customers:
                tg.start_soon(self.act, customer)

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for customer in self.customers:
            h.update(customer.digest())
        return h.hexdigest()
