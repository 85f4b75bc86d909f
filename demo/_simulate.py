"""`python -m demo simulate`: many customers acting at once on the bank and the shop,
then a report and invariants checked against the store.

Each customer is one task sending one command at a time through `router.ask`: it opens
an account, pays in a salary, then deposits, withdraws, transfers money to other
customers (through `TransferProcess`; a few transfers go to accounts that do not exist
and are refunded) and places orders (validated against the inventory and paid from its
account by `OrderFulfilment`, shipped by `Shipping`). Simulated couriers (a process
manager outside the domain, `Couriers`) deliver every shipped order.

**Reproducible.** Each customer draws from its own random generator, seeded with the
run's seed and the customer's number, and never looks at an outcome to choose its next
command. So with `--steps` the commands each customer sends (and the run's
`commands_digest`) depend on the seed alone; their interleaving, and therefore which
orders find stock or funds, depends on scheduling. With `--duration` each customer's
commands are a prefix of the same sequence.

**Checked over the whole store.** After the customers stop, the run settles (every
process manager's position reaches the store's head, with nothing appended meanwhile,
within `settle_timeout`), then the invariants are checked against every event in the
file: a file holding earlier runs is checked with them, and each run uses ids of its own
(prefixed with the store's head when it began), so runs never touch each other's
customers. See `check_store` for what each invariant checks.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TextIO

import anyio
import msgspec

from actors import (
    ActorSystem,
    AggregateRouter,
    Command,
    Dispatch,
    Event,
    ProcessManager,
    ProcessManagerHandle,
    ProcessManagerOptions,
    Rejected,
    ShuttingDown,
    open_system,
)
from demo._backend import backend_of, redacted
from demo._streams import aggregate_id
from demo.bank import (
    Account,
    Balances,
    BalancesView,
    BankTotals,
    Credited,
    Debited,
    Deposit,
    Deposited,
    OpenAccount,
    OrderCharged,
    Refunded,
    RequestTransfer,
    Statements,
    Transfer,
    TransferCompleted,
    TransferFailed,
    TransferProcess,
    TransferRequested,
    Withdraw,
    Withdrawn,
)
from demo.shop import (
    DeliverOrder,
    Inventory,
    Order,
    OrderCancelled,
    OrderDelivered,
    OrderDetails,
    OrderFulfilment,
    OrderHistory,
    OrderLine,
    OrderPaid,
    OrderRejected,
    OrderRequested,
    OrderShipped,
    OrderValidated,
    PlaceOrder,
    Restock,
    Shipping,
    ShopAnalytics,
)
from readmodels import Projection, ProjectionHandle
from store import RecordedEvent, StoreError

__all__ = [
    "Couriers",
    "Invariant",
    "SimOptions",
    "SimReport",
    "SimulationError",
    "add_arguments",
    "check_store",
    "render",
    "run_cli",
    "simulate",
]

Router = AggregateRouter[Any, Any, Any]

WAREHOUSES = ("w0", "w1", "w2")
SKUS = tuple(f"sku-{n:02d}" for n in range(12))
PRICES = {sku: 150 + 83 * n % 1_200 for n, sku in enumerate(SKUS)}
FINAL_ORDER = frozenset({"delivered", "rejected", "cancelled"})
READ_PAGE = 10_000
_ORDER_STATUS: dict[type[object], str] = {
    OrderRequested: "requested",
    OrderValidated: "validated",
    OrderRejected: "rejected",
    OrderPaid: "paid",
    OrderCancelled: "cancelled",
    OrderShipped: "shipped",
    OrderDelivered: "delivered",
}
PROGRESS_INTERVAL = 0.25


class SimulationError(Exception):
    """The simulation cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What a simulation does.

    Attributes:
        db: the SQLite file (":memory:" works) or a `postgresql://` URL (its
            `?schema=` parameter names the schema); an existing store is added to and
            checked whole.
        seed: seeds every customer's choices.
        customers: customers acting at once (one task each).
        steps: commands the customers send in all (split evenly between them), or
            None with `duration`.
        duration: seconds the customers keep acting, instead of `steps`.
        couriers: deliveries under way at once.
        settle_timeout: seconds the process managers get to finish after the
            customers stop, and each read model to catch up.
    """

    db: str = "demo.db"
    seed: int = 1
    customers: int = 50
    steps: int | None = 2_000
    duration: float | None = None
    couriers: int = 4
    settle_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("customers", "couriers"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 100_000:
                raise SimulationError(f"--{name} must be an integer in 1..100000, not {value!r}")
        if (self.steps is None) == (self.duration is None):
            raise SimulationError("give exactly one of --steps and --duration")
        if self.steps is not None and (type(self.steps) is not int or self.steps < 1):
            raise SimulationError(f"--steps must be a positive integer, not {self.steps!r}")
        if self.duration is not None and not 0 < self.duration < math.inf:
            raise SimulationError(f"--duration must be > 0 seconds, not {self.duration!r}")
        if not 0 < self.settle_timeout < math.inf:
            raise SimulationError(
                f"settle_timeout must be > 0 seconds, not {self.settle_timeout!r}"
            )


class Invariant(msgspec.Struct, frozen=True):
    """The outcome of one invariant check.

    Attributes:
        name: which invariant.
        ok: whether it holds.
        checked: how many things it looked at (accounts, orders, read models...).
        failures: how many of them break it.
        summary: the figures behind the verdict, in one line.
        examples: up to 5 offenders, each named.
    """

    name: str
    ok: bool
    checked: int
    failures: int
    summary: str
    examples: tuple[str, ...] = ()


class SimReport(msgspec.Struct, frozen=True):
    """The figures of one simulation run (`--json` prints it as one object).

    Attributes:
        db, seed, customers, steps, duration: what ran (db: a PostgreSQL URL without
            its password; steps: commands the customers sent; duration: the one asked
            for, or None).
        backend: the store that ran: "sqlite" or "postgresql".
        store_before: the store's head when the run began (earlier runs' events).
        store_head: the store's head after settling.
        seconds: wall time while the customers acted.
        commands: commands sent by the simulation (setup and customers), answered.
        acknowledged, rejected, errors: how they were answered (`errors`: neither
            committed nor refused by the domain: timeouts, store errors...).
        commands_per_s, events_per_s: throughput while the customers acted (their
            commands; every event appended meanwhile, process managers' included).
        commands_by_type, rejected_by_type, error_types: counts per command type or
            error type.
        commands_digest: BLAKE2b of every customer's command sequence (ids relative
            to the run): equal for equal seeds and `--steps`.
        events: events this run appended (process managers' included).
        events_by_type: those per event tag.
        settle_seconds: time from the customers' last command to a settled store.
        process_managers: per process manager: handled, sent, rejected,
            compensations, retries, parked.
        invariants: each invariant's outcome, checked over the whole store.
        ok: every invariant holds.
    """

    db: str
    backend: str
    seed: int
    customers: int
    steps: int
    duration: float | None
    store_before: int
    store_head: int
    seconds: float
    commands: int
    acknowledged: int
    rejected: int
    errors: int
    commands_per_s: float
    events_per_s: float
    commands_by_type: dict[str, int]
    rejected_by_type: dict[str, int]
    error_types: dict[str, int]
    commands_digest: str
    events: int
    events_by_type: dict[str, int]
    settle_seconds: float
    process_managers: dict[str, dict[str, int]]
    invariants: tuple[Invariant, ...]
    ok: bool


class Couriers(ProcessManager):
    """The simulated couriers: every shipped order is delivered (`DeliverOrder`).

    Not part of the shop: delivery comes from outside, and this stands in for the
    outside. Its concurrency is the number of couriers on the road.
    """

    name: ClassVar[str] = "demo.simulate.couriers"
    event_types: ClassVar[tuple[type[Event], ...]] = (OrderShipped,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """Deliver the order that was shipped."""
        if not isinstance(recorded.event, OrderShipped):
            return []
        order_id = aggregate_id(recorded, Order)
        return [Dispatch(Order, order_id, DeliverOrder(order_id))]


# -- the customers -----------------------------------------------------------------------


@dataclass
class _Counts:
    acknowledged: int = 0
    rejected: int = 0
    errors: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_type: Counter[str] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return self.acknowledged + self.rejected + self.errors


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
        rng, me, prefix = self.rng, self.account, self.prefix
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
            other = rng.randrange(self.customers)
            if other == self.index or rng.random() < 0.03:
                target = f"{prefix}x{rng.randrange(100)}"  # never opened: refunded
            else:
                target = f"{prefix}c{other}"
            transfer_id = f"{prefix}t{self.index}-{k}"
            command = RequestTransfer(transfer_id, me, target, rng.randint(1, 20_000))
            return routers.transfers, transfer_id, command
        skus = rng.sample(SKUS, rng.randint(1, 3))
        lines = [OrderLine(sku, rng.randint(1, 3), PRICES[sku]) for sku in skus]
        if rng.random() < 0.02:
            lines.append(lines[0])  # a product listed twice: rejected by validation
        order_id = f"{prefix}o{self.index}-{k}"
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


class _Run:
    def __init__(self, options: SimOptions, system: ActorSystem, prefix: str) -> None:
        self.options = options
        self.system = system
        self.routers = _Routers(system)
        self.counts = _Counts()
        self.customers = [
            _Customer(i, options.seed, options.customers, prefix) for i in range(options.customers)
        ]
        self.deadline = math.inf
        self.started = 0.0
        self.setup = 0  # commands answered before the customers started (the restocks)

    async def send(self, router: Router, target: str, command: Command) -> None:
        counts = self.counts
        kind = type(command).__name__
        counts.by_type[kind] += 1
        try:
            await router.ask(target, command)
        except Rejected:
            counts.rejected += 1
            counts.rejected_by_type[kind] += 1
        except Exception as error:  # noqa: BLE001 - counted and reported by type
            counts.errors += 1
            counts.error_types[type(error).__name__] += 1
        else:
            counts.acknowledged += 1

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
            await self.send(router, target, command)
            k += 1

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for customer in self.customers:
            h.update(customer.digest())
        return h.hexdigest()


# -- settling and checking ---------------------------------------------------------------


async def _settle(system: ActorSystem, managers: Sequence[ProcessManagerHandle]) -> int:
    """Wait until every process manager has handled the store's head and nothing was
    appended meanwhile; return that head. No deadline of its own (the caller's)."""
    while True:
        head = await system.store.last_position()
        for handle in managers:
            await handle.wait_for(head, timeout=math.inf)
        if await system.store.last_position() == head:
            return head


def _cap(items: Iterable[str]) -> tuple[str, ...]:
    """The first five, sorted: what a report shows of many offenders."""
    return tuple(sorted(items)[:5])


@dataclass
class _Fold:
    """What the store says, folded once: money, orders, transfers."""

    deposits: int = 0
    withdrawals: int = 0
    charges: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    # account -> (its lowest balance below 0, the version that reached it)
    negative: dict[str, tuple[int, int]] = field(default_factory=dict)
    debits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    credits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    refunds: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    charged: dict[str, int] = field(default_factory=dict)
    paid: dict[str, int] = field(default_factory=dict)
    order_status: dict[str, str] = field(default_factory=dict)
    transfer_status: dict[str, str] = field(default_factory=dict)
    by_type: Counter[str] = field(default_factory=Counter)
    events: int = 0

    def account(self, recorded: RecordedEvent) -> None:
        account = aggregate_id(recorded, Account)
        balance = self.balances.setdefault(account, 0)
        match recorded.event:
            case Deposited(amount=amount):
                self.deposits += amount
                balance += amount
            case Withdrawn(amount=amount):
                self.withdrawals += amount
                balance -= amount
            case OrderCharged(order_id=order_id, amount=amount):
                self.charges += amount
                self.charged[order_id] = self.charged.get(order_id, 0) + amount
                balance -= amount
            case Debited(transfer_id=transfer_id, amount=amount):
                self.debits.setdefault(transfer_id, []).append((account, amount))
                balance -= amount
            case Credited(transfer_id=transfer_id, amount=amount):
                self.credits.setdefault(transfer_id, []).append((account, amount))
                balance += amount
            case Refunded(transfer_id=transfer_id, amount=amount):
                self.refunds.setdefault(transfer_id, []).append((account, amount))
                balance += amount
            case _:
                pass
        self.balances[account] = balance
        if balance < self.negative.get(account, (0, 0))[0]:
            self.negative[account] = (balance, recorded.version)

    def order(self, recorded: RecordedEvent) -> None:
        order_id = aggregate_id(recorded, Order)
        event = recorded.event
        status = _ORDER_STATUS.get(type(event))
        if status is not None:
            self.order_status[order_id] = status
        if isinstance(event, OrderPaid):
            self.paid[order_id] = self.paid.get(order_id, 0) + event.amount

    def transfer(self, recorded: RecordedEvent) -> None:
        transfer_id = aggregate_id(recorded, Transfer)
        match recorded.event:
            case TransferRequested():
                self.transfer_status[transfer_id] = "requested"
            case TransferCompleted():
                self.transfer_status[transfer_id] = "completed"
            case TransferFailed():
                self.transfer_status[transfer_id] = "failed"
            case _:
                pass


async def _fold(system: ActorSystem, head: int, since: int) -> _Fold:
    fold = _Fold()
    position = 0
    prefixes = (
        (Account.category + "-", fold.account),
        (Order.category + "-", fold.order),
        (Transfer.category + "-", fold.transfer),
    )
    while position < head:
        page = await system.store.read_all(
            from_position=position + 1, to_position=head, limit=READ_PAGE
        )
        if not page:
            break
        for recorded in page:
            fold.events += 1
            if recorded.position > since:
                fold.by_type[recorded.event_type] += 1
            for prefix, handler in prefixes:
                if recorded.stream_id.startswith(prefix):
                    handler(recorded)
                    break
        position = page[-1].position
    return fold


def _money(fold: _Fold, states: dict[str, int]) -> Invariant:
    problems: list[str] = []
    for transfer_id in sorted(fold.debits.keys() | fold.credits.keys() | fold.refunds.keys()):
        debits = fold.debits.get(transfer_id, [])
        ends = fold.credits.get(transfer_id, []) + fold.refunds.get(transfer_id, [])
        out = sum(amount for _, amount in debits)
        back = sum(amount for _, amount in ends)
        if len(debits) > 1 or len(ends) > 1 or out != back:
            problems.append(
                f"transfer {transfer_id!r}: debited {out} in {len(debits)} event(s),"
                f" credited or refunded {back} in {len(ends)}"
            )
    for order_id in sorted(fold.charged.keys() | fold.paid.keys()):
        charged, paid = fold.charged.get(order_id, 0), fold.paid.get(order_id, 0)
        if charged != paid:
            problems.append(
                f"order {order_id!r}: the bank charged {charged}, the order paid {paid}"
            )
    debited = sum(a for legs in fold.debits.values() for _, a in legs)
    returned = sum(a for legs in (*fold.credits.values(), *fold.refunds.values()) for _, a in legs)
    in_flight = debited - returned
    total = sum(states.values())
    expected = fold.deposits - fold.withdrawals - fold.charges
    if total != expected:
        problems.append(f"the balances hold {total} cents, not {expected} ({total - expected:+})")
    if in_flight:
        problems.append(
            f"in flight after settling: {in_flight} cents (debited - credited - refunded), not 0"
        )
    summary = (
        f"balances {total:,} = deposits {fold.deposits:,} - withdrawals {fold.withdrawals:,}"
        f" - order payments {fold.charges:,} (= {expected:,}); in flight {in_flight:,};"
        f" {len(fold.debits):,} transfers debited, {sum(map(len, fold.refunds.values())):,}"
        " refunded"
    )
    checked = len(states) + len(fold.debits) + len(fold.charged)
    return Invariant(
        "money_conserved", not problems, checked, len(problems), summary, _cap(problems)
    )


def _no_negative(fold: _Fold, states: dict[str, int]) -> Invariant:
    problems = [
        f"account {a!r} went to {low} cents at version {version}"
        for a, (low, version) in fold.negative.items()
    ]
    problems += [f"account {a!r} holds {b} cents" for a, b in states.items() if b < 0]
    lowest = min(states.values(), default=0)
    summary = (
        f"{len(states):,} accounts, lowest balance now {lowest:,}, never below 0 in any stream"
    )
    if problems:
        summary = f"{len(problems)} negative balance(s) in {len(states)} accounts"
    return Invariant(
        "no_negative_balance", not problems, len(states), len(problems), summary, _cap(problems)
    )


def _orders_final(fold: _Fold) -> Invariant:
    statuses = Counter(fold.order_status.values())
    open_orders = [
        f"order {o!r} is {s}" for o, s in fold.order_status.items() if s not in FINAL_ORDER
    ]
    summary = ", ".join(f"{s} {n:,}" for s, n in sorted(statuses.items())) or "no orders"
    return Invariant(
        "orders_final",
        not open_orders,
        len(fold.order_status),
        len(open_orders),
        summary,
        _cap(open_orders),
    )


def _transfers_ended(fold: _Fold) -> Invariant:
    problems: list[str] = []
    for transfer_id, status in fold.transfer_status.items():
        credited = transfer_id in fold.credits
        if status == "requested":
            problems.append(f"transfer {transfer_id!r} has not ended")
        elif (status == "completed") != credited:
            state = "credited" if credited else "not credited"
            problems.append(f"transfer {transfer_id!r} is {status} but {state}")
    statuses = Counter(fold.transfer_status.values())
    summary = ", ".join(f"{s} {n:,}" for s, n in sorted(statuses.items())) or "no transfers"
    return Invariant(
        "transfers_ended",
        not problems,
        len(fold.transfer_status),
        len(problems),
        summary,
        _cap(problems),
    )


async def _read_models(
    system: ActorSystem,
    live: Sequence[ProjectionHandle[Any]],
    head: int,
    states: dict[str, int],
    timeout: float,  # noqa: ASYNC109
) -> Invariant:
    problems: list[str] = []
    for handle in live:
        try:
            await handle.wait_for(head, timeout=timeout)
        except Exception as error:  # noqa: BLE001 - reported as the invariant's failure
            problems.append(f"{handle.name}: live view did not reach {head}: {error}")
            continue
        projection: Projection[Any] = type(handle.projection)()
        fresh = await system.project(projection)
        try:
            await fresh.wait_for(head, timeout=timeout)
            if fresh.view != handle.view:
                problems.append(f"{handle.name}: the live view differs from a rebuild from 0")
            if handle.dead_letters():
                problems.append(f"{handle.name}: {len(handle.dead_letters())} parked event(s)")
        finally:
            await fresh.stop()
        view = handle.view
        if isinstance(view, BalancesView):
            problems += [
                f"{handle.name}: account {a!r} shows {view.balance_of(a)}, the aggregate holds {b}"
                for a, b in states.items()
                if view.balance_of(a) != b
            ]
    summary = f"{len(live)} live read models equal a fresh projection from position 0"
    if problems:
        summary = f"{len(problems)} read model problem(s)"
    return Invariant(
        "read_models_rebuild", not problems, len(live), len(problems), summary, _cap(problems)
    )


async def check_store(
    system: ActorSystem,
    live: Sequence[ProjectionHandle[Any]],
    *,
    head: int,
    since: int = 0,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> tuple[tuple[Invariant, ...], Counter[str]]:
    """Check the invariants over every event of the store up to `head`.

    - `money_conserved`: the balances of every account, as its aggregate loads them,
      add up to deposits - withdrawals - order payments (all read from the log); every
      transfer's debit is matched by one credit or one refund of the same amount, so
      nothing is in flight; every order charged by the bank was paid the same amount.
    - `no_negative_balance`: no account's balance is below 0 now, nor after any event
      of its stream.
    - `orders_final`: every order is delivered, rejected or cancelled.
    - `transfers_ended`: every transfer is completed (and its target credited) or
      failed (and its target not credited).
    - `read_models_rebuild`: each live read model in `live`, once at `head`, equals the
      same projection started afresh from position 0, has parked nothing, and the
      balances read model equals the aggregates' balances.

    Returns:
        The invariants' outcomes, and the count of each event tag after `since`.
    """
    accounts = _Routers(system).accounts  # registers every demo event type, for reading
    fold = await _fold(system, head, since)
    states = {a: (await accounts.state(a)).balance for a in sorted(fold.balances)}
    invariants = (
        _money(fold, states),
        _no_negative(fold, states),
        _orders_final(fold),
        _transfers_ended(fold),
        await _read_models(system, live, head, states, timeout),
    )
    return invariants, fold.by_type


def _statistics(handle: ProcessManagerHandle) -> dict[str, int]:
    s = handle.statistics()
    return {
        "handled": s.handled,
        "sent": s.sent,
        "rejected": s.rejected,
        "compensations": s.compensations,
        "retries": s.retries,
        "parked": s.parked,
    }


def _progress_line(
    run: _Run,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
) -> str:
    elapsed = max(time.perf_counter() - run.started, 1e-9)
    sent = run.counts.answered - run.setup
    lag = max((h.statistics().lag for h in live), default=0)
    sagas = sum(h.statistics().in_flight for h in managers)
    events = run.system.store.statistics().last_position - before
    return (
        f"\r  {elapsed:5.1f} s  {sent:,} commands ({sent / elapsed:,.0f}/s)"
        f"  {events:,} events  read model lag {lag:,}  sagas in flight {sagas:,}   "
    )


async def _progress(
    out: TextIO,
    run: _Run,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
) -> None:
    """One line on `out`, rewritten in place every `PROGRESS_INTERVAL` until cancelled."""
    while True:
        out.write(_progress_line(run, live, managers, before))
        out.flush()
        await anyio.sleep(PROGRESS_INTERVAL)


async def simulate(options: SimOptions, *, stderr: TextIO | None = None) -> SimReport:
    """Run one simulation, settle it, check the invariants and return the report.

    Args:
        options: what to run.
        stderr: where the live progress line goes, if it is a terminal (default
            `sys.stderr`).

    Raises:
        StoreError: the store could not be opened.

    Cancellation: the customers stop; the actor system drains and closes the store.
    """
    err = sys.stderr if stderr is None else stderr
    show = err.isatty()
    async with open_system(
        options.db,
        synchronous="NORMAL",  # a demo: survives a crash of the process, not of the machine
        idle_timeout=None,
        max_live_actors=max(10_000, 4 * options.customers),
    ) as system:
        before = await system.store.last_position()
        prefix = f"r{before}."
        # The routers register the domain's event types, which the read models need to
        # decode what earlier runs left in the file: make them first.
        run = _Run(options, system, prefix)
        live: list[ProjectionHandle[Any]] = [
            await system.project(p)
            for p in (
                Balances(),
                Statements(),
                BankTotals(),
                OrderHistory(),
                OrderDetails(),
                ShopAnalytics(),
            )
        ]
        managers = [
            await system.run_process_manager(TransferProcess()),
            await system.run_process_manager(OrderFulfilment()),
            await system.run_process_manager(Shipping()),
            await system.run_process_manager(
                Couriers(), options=ProcessManagerOptions(concurrency=options.couriers)
            ),
        ]
        await run.restock()
        run.setup = run.counts.answered
        run.started = time.perf_counter()
        if options.duration is not None:
            run.deadline = run.started + options.duration
        async with anyio.create_task_group() as outer:
            if show:
                outer.start_soon(_progress, err, run, live, managers, before)
            async with anyio.create_task_group() as tg:
                for customer in run.customers:
                    tg.start_soon(run.act, customer)
            seconds = time.perf_counter() - run.started
            sent_head = await system.store.last_position()
            settle_began = time.perf_counter()
            settled = await _settled(system, managers, options.settle_timeout)
            settle_seconds = time.perf_counter() - settle_began
            outer.cancel_scope.cancel()
        if show:  # the final figures, and the line ends
            err.write(_progress_line(run, live, managers, before) + "\n")
            err.flush()
        head = await system.store.last_position()
        checks, by_type = await check_store(
            system, live, head=head, since=before, timeout=options.settle_timeout
        )
        invariants = (settled, *checks)
        pm_stats = {h.name: _statistics(h) for h in managers}
    counts = run.counts
    events = head - before
    events_in_run = sent_head - before
    return SimReport(
        db=redacted(options.db),
        backend=backend_of(options.db),
        seed=options.seed,
        customers=options.customers,
        steps=sum(c.sent for c in run.customers),
        duration=options.duration,
        store_before=before,
        store_head=head,
        seconds=round(seconds, 3),
        commands=counts.answered,
        acknowledged=counts.acknowledged,
        rejected=counts.rejected,
        errors=counts.errors,
        commands_per_s=round((counts.answered - run.setup) / seconds, 1) if seconds else 0.0,
        events_per_s=round(events_in_run / seconds, 1) if seconds else 0.0,
        commands_by_type=dict(sorted(counts.by_type.items())),
        rejected_by_type=dict(sorted(counts.rejected_by_type.items())),
        error_types=dict(sorted(counts.error_types.items())),
        commands_digest=run.digest(),
        events=events,
        events_by_type=dict(sorted(by_type.items())),
        settle_seconds=round(settle_seconds, 3),
        process_managers=pm_stats,
        invariants=invariants,
        ok=all(i.ok for i in invariants),
    )


async def _settled(
    system: ActorSystem,
    managers: Sequence[ProcessManagerHandle],
    timeout: float,  # noqa: ASYNC109
) -> Invariant:
    """Settle within `timeout`; the outcome as an invariant naming who lagged."""
    failure = ""
    with anyio.move_on_after(timeout) as scope:
        try:
            head = await _settle(system, managers)
        except ShuttingDown as error:
            failure = f"a process manager stopped: {error}"
    if scope.cancelled_caught:
        failure = f"not settled within {timeout:g} s"
    if not failure:
        names = ", ".join(h.name for h in managers)
        return Invariant("settled", True, len(managers), 0, f"{names} reached head {head}")
    last = await system.store.last_position()
    behind = tuple(
        f"{h.name} at {h.position} of {last} ({h.statistics().in_flight} in flight)"
        for h in managers
        if h.position < last
    )
    return Invariant("settled", False, len(managers), max(1, len(behind)), failure, behind)


# -- the report and the command line -------------------------------------------------------


def render(report: SimReport) -> str:
    """The report as human-readable lines."""
    amount = f"{report.steps:,} steps" if report.duration is None else f"{report.duration:g} s"
    earlier = (
        f", after {report.store_before:,} events of earlier runs" if report.store_before else ""
    )
    head = (
        f"simulate: {report.customers:,} customers, {amount}, seed {report.seed},"
        f" db {report.db}{earlier}"
    )
    rate = (
        f"  {report.steps:,} customer commands in {report.seconds:.2f} s:"
        f" {report.commands_per_s:,.0f} commands/s, {report.events_per_s:,.0f} events/s;"
        f" settled in {report.settle_seconds:.2f} s"
    )
    answers = (
        f"  {report.commands:,} commands with the restocks: acknowledged {report.acknowledged:,},"
        f" refused by the domain {report.rejected:,},"
        f" errors {report.errors:,}"
    )
    if report.error_types:
        answers += f" {report.error_types}"
    lines = [head, rate, answers, "  commands sent (refused):"]
    lines += [
        f"    {name:<16} {n:>7,}"
        + (f"  ({report.rejected_by_type[name]:,})" if name in report.rejected_by_type else "")
        for name, n in report.commands_by_type.items()
    ]
    lines.append(f"  events appended: {report.events:,}")
    lines += [f"    {tag:<26} {n:>7,}" for tag, n in report.events_by_type.items()]
    lines.append("  process managers: handled / sent / refused / compensations / parked")
    lines += [
        f"    {name:<24} {s['handled']:>7,} {s['sent']:>7,} {s['rejected']:>7,}"
        f" {s['compensations']:>7,} {s['parked']:>7,}"
        for name, s in report.process_managers.items()
    ]
    lines.append(f"  invariants, over the whole store ({report.store_head:,} events):")
    for inv in report.invariants:
        mark = "ok  " if inv.ok else "FAIL"
        lines.append(f"    {mark} {inv.name}: {inv.summary}")
        if not inv.ok:
            lines.append(f"         {inv.failures:,} of {inv.checked:,} checked fail, e.g.:")
            lines += [f"         - {example}" for example in inv.examples]
    failed = [i.name for i in report.invariants if not i.ok]
    lines.append(
        "  every invariant holds" if not failed else f"  INVARIANTS BROKEN: {', '.join(failed)}"
    )
    lines.append(f"  commands digest {report.commands_digest}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's options."""
    parser.add_argument(
        "--db",
        default="demo.db",
        help="SQLite file (default demo.db; ':memory:' works) or a postgresql:// URL"
        " (?schema=name picks the schema)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds the customers (default 1)")
    parser.add_argument("--customers", type=int, default=50, help="default 50")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--steps", type=int, help="commands the customers send (default 2,000)")
    amount.add_argument("--duration", type=float, help="seconds the customers act, instead")
    parser.add_argument("--couriers", type=int, default=4, help="deliveries at once (default 4)")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time the process managers get to finish (default 300)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_cli(args: argparse.Namespace) -> int:
    """Run `simulate` with parsed `args`; print the report.

    Returns:
        0 when every invariant holds, 1 when one does not, 2 for options that cannot
        run or a store that cannot be opened (with a message on stderr).
    """
    steps = args.steps
    if steps is None and args.duration is None:
        steps = 2_000
    try:
        options = SimOptions(
            db=args.db,
            seed=args.seed,
            customers=args.customers,
            steps=steps,
            duration=args.duration,
            couriers=args.couriers,
            settle_timeout=args.settle_timeout,
        )
    except SimulationError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2

    async def one() -> SimReport:
        return await simulate(options)

    try:
        report = anyio.run(one, backend="asyncio")
    except StoreError as error:  # the file cannot be opened or read: nothing was checked
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode(report).decode(), flush=True)
    else:
        print(render(report), flush=True)
    return 0 if report.ok else 1
