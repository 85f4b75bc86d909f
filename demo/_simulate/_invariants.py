"""The invariants checked over every event of the store, and `check_store` running them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from actors import ActorSystem
from demo._simulate._customers import _Routers
from demo._simulate._fold import _Fold, _fold
from demo._simulate._report import Invariant
from demo.bank import BalancesView
from readmodels import Projection, ProjectionHandle

__all__ = ["FINAL_ORDER", "check_store"]

FINAL_ORDER = frozenset({"delivered", "rejected", "cancelled"})


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


def _cap(items: Iterable[str]) -> tuple[str, ...]:
    """The first five, sorted: what a report shows of many offenders."""
    return tuple(sorted(items)[:5])


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
