"""The inventory of one warehouse: restock, and reserve or release the stock of orders.

One aggregate holds every product of its warehouse, so reserving all the lines of an
order is one command and one decision: either every line is reserved or none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

import msgspec

from actors import Aggregate, Command, Event, Rejected
from demo.shop._order import MAX_QUANTITY, OrderLine, order_problem

__all__ = [
    "InvalidLines",
    "Inventory",
    "InventoryCommand",
    "InventoryEvent",
    "InventoryState",
    "OutOfStock",
    "ReleaseStock",
    "ReserveStock",
    "Restock",
    "Restocked",
    "StockReleased",
    "StockReserved",
]


class Restock(Command, tag="shop.restock"):
    """Add `quantity` units of `sku` to the warehouse."""

    warehouse_id: str
    sku: str
    quantity: int


class ReserveStock(Command, tag="shop.reserve_stock"):
    """Take the stock of every line of order `order_id` out of the available stock, all
    or nothing."""

    warehouse_id: str
    order_id: str
    lines: tuple[OrderLine, ...]


class ReleaseStock(Command, tag="shop.release_stock"):
    """Put the reserved stock of order `order_id` back (its payment was refused)."""

    warehouse_id: str
    order_id: str
    lines: tuple[OrderLine, ...]


InventoryCommand = Restock | ReserveStock | ReleaseStock


class Restocked(Event, tag="shop.restocked"):
    """`quantity` units of `sku` arrived."""

    sku: str
    quantity: int


class StockReserved(Event, tag="shop.stock_reserved"):
    """The stock of every line of `order_id` is set aside for it."""

    order_id: str
    lines: tuple[OrderLine, ...]


class StockReleased(Event, tag="shop.stock_released"):
    """The stock reserved for `order_id` is available again."""

    order_id: str
    lines: tuple[OrderLine, ...]


InventoryEvent = Restocked | StockReserved | StockReleased


class OutOfStock(Rejected):
    """A line asks for more units than are available."""


class InvalidLines(Rejected):
    """The lines cannot make an order (see `order_problem`)."""


class InventoryState(msgspec.Struct, frozen=True):
    """Units available per product."""

    stock: dict[str, int] = msgspec.field(default_factory=dict)


def _moved(stock: dict[str, int], lines: Sequence[OrderLine], sign: int) -> dict[str, int]:
    out = dict(stock)
    for line in lines:
        out[line.sku] = out.get(line.sku, 0) + sign * line.quantity
    return out


class Inventory(Aggregate[InventoryState, InventoryCommand, InventoryEvent]):
    """A warehouse's stock (stream `inventory-<warehouse id>`)."""

    initial = InventoryState()
    category = "inventory"

    def decide(self, state: InventoryState, command: InventoryCommand) -> Sequence[InventoryEvent]:
        """The events `command` produces, or a `Rejected`."""
        match command:
            case Restock(warehouse_id=warehouse_id, sku=sku, quantity=quantity):
                if not 0 < quantity <= MAX_QUANTITY:
                    raise InvalidLines(
                        f"restock of {quantity} units of {sku!r} at {warehouse_id!r}:"
                        f" must be 1..{MAX_QUANTITY}"
                    )
                return [Restocked(sku=sku, quantity=quantity)]
            case ReserveStock(warehouse_id=warehouse_id, order_id=order_id, lines=lines):
                problem = order_problem(lines)
                if problem is not None:
                    raise InvalidLines(f"order {order_id!r}: {problem}")
                for line in lines:
                    available = state.stock.get(line.sku, 0)
                    if line.quantity > available:
                        raise OutOfStock(
                            f"order {order_id!r} wants {line.quantity} of {line.sku!r};"
                            f" {available} available at {warehouse_id!r}"
                        )
                return [StockReserved(order_id=order_id, lines=lines)]
            case ReleaseStock(order_id=order_id, lines=lines):
                return [StockReleased(order_id=order_id, lines=lines)]
            case _:
                assert_never(command)

    def evolve(self, state: InventoryState, event: InventoryEvent) -> InventoryState:
        """The state after `event`."""
        match event:
            case Restocked(sku=sku, quantity=quantity):
                return InventoryState({**state.stock, sku: state.stock.get(sku, 0) + quantity})
            case StockReserved(lines=lines):
                return InventoryState(_moved(state.stock, lines, -1))
            case StockReleased(lines=lines):
                return InventoryState(_moved(state.stock, lines, +1))
            case _:
                assert_never(event)
