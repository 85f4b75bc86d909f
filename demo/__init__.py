"""The demo: runnable domains built on esactors, and the command line around them.

- `demo.bank`: accounts (open, deposit, withdraw, close) and transfers carried out by a
  stateless process manager, with balances, statements and bank totals as read models.
- `demo.shop`: orders requested, validated against the inventory, paid from the
  customer's bank account, shipped and delivered; order history, details, analytics.
- `python -m demo` (or `simulate`): concurrent simulated customers, then invariants
  checked over the store; `tour`: a short walk-through; `loadtest`: throughput and latency.

See docs/demo.md for the domain rules, the simulation's invariants and the load test's
options.
"""

from __future__ import annotations

__all__: list[str] = []
