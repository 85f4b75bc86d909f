"""`python -m demo simulate`: many customers at once, then a report and invariants checked.

Many customers act at once on the bank and the shop, then the run reports and checks
invariants against the store.

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

The package, one concern a module (each imports only those listed before it):

- `_options`: `SimOptions`, checked when made, and `SimulationError`.
- `_report`: `SimReport`, `Invariant` and `render`.
- `_customers`: what each customer sends (the catalogue, and each one's generator).
- `_couriers`: `Couriers`, the process manager that delivers every shipped order.
- `_driver`: restocks the shop, runs the customers and counts the answers.
- `_progress`: the live progress line on a terminal.
- `_settling`: waiting until the process managers reach the store's head.
- `_system`: the read models and process managers every process runs.
- `_fold`: the store folded once, as the invariants need it.
- `_invariants`: the invariants and `check_store`.
- `_wire`: the lines a several-process run's parent and workers exchange.
- `_worker`: one worker process of a several-process run (`--processes N`).
- `_processes`: `simulate_processes`, the parent of a several-process run, and the
  chaos that kills and restarts its workers.
- `_simulation`: `simulate`, one run from start to report.
- `_cli`: the `simulate` subcommand's options and output.
"""

from __future__ import annotations

from demo._simulate._cli import add_arguments, run_cli
from demo._simulate._couriers import Couriers
from demo._simulate._invariants import check_store
from demo._simulate._options import SimOptions, SimulationError
from demo._simulate._report import Invariant, SimReport, render
from demo._simulate._simulation import simulate

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
