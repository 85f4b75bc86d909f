"""What a load test does: its options, checked when made."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from demo._backend import backend_of
from demo._distribution import Distribution

__all__ = [
    "MAX_PROCESSES",
    "MAX_ZIPF_EXPONENT",
    "LoadOptions",
    "LoadTestError",
    "Mix",
    "Synchronous",
    "Writer",
]

Mix = Literal["deposit", "bank", "shop"]
Synchronous = Literal["FULL", "NORMAL"]
Writer = Literal["thread", "process"]

MAX_PROCESSES = 64
"""The most worker processes a load test starts (`processes`)."""

MAX_ZIPF_EXPONENT = 10.0
"""The largest `zipf_exponent` (beyond it nearly every command hits one account)."""


class LoadTestError(Exception):
    """A load test cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a load test does.

    Attributes:
        aggregates: bank accounts the commands are spread over (by `distribution`).
        commands: commands to send (ignored when `duration` is set).
        duration: seconds to keep sending instead of a command count (each client
            sends at least one command).
        concurrency: commands in flight at once (one task each).
        db: the SQLite file (None: a temporary file, removed afterwards; ":memory:"),
            or a `postgresql://` URL (its `?schema=` parameter names the schema).
        synchronous: the store's durability mode.
        writer: the store's writer, "thread" or "process" (`open_store`'s option; a
            SQLite file only: not ":memory:", not PostgreSQL).
        mix: "deposit" (deposits only), "bank" (transfers, deposits, withdrawals) or
            "shop" (orders paid from bank accounts); see `demo._workloads`.
        projection: run a live `Balances` read model and measure its lag.
        distribution: how commands pick their account: "uniform" (each equally likely)
            or "zipf" (the account of rank k with probability proportional to
            1 / k**zipf_exponent; see `demo._distribution`).
        zipf_exponent: the exponent s of `zipf` (> 0; 1 is the classic law).
        zipf_seed: seeds which accounts are hot under `zipf` (None: `seed`); the
            workers of a `processes` run all get the run's, so they agree.
        seed: seeds the choice of accounts and amounts (and which accounts are hot).
        ack_log: append one line per acknowledged command to this file.
        progress: print a progress line to stderr: "auto" (only on a terminal),
            "always" (one line per interval; for tools reading a pipe), "never".
        progress_interval: seconds between progress lines.
        cold: passivate every actor after the setup, so the measured phase loads each
            account from the store on its first command (first-touch loads: snapshot,
            events, fold) instead of finding it live (one process only).
        processes: worker OS processes, each with an actor system of its own on the
            same store, sending to the same accounts (1: the load runs in this process;
            more: a SQLite file or PostgreSQL, the deposit mix, `commands` divided
            between them or each for `duration`; no progress lines).
        own_accounts: with `processes` > 1, each worker draws only from its own share of
            the accounts (those whose index modulo `processes` is the worker's), as
            when a router sends each aggregate's commands to one process: no two
            processes decide on one account, so none of their appends conflict.
        account_share: (worker index, workers) of a worker run with `own_accounts`, set
            by the parent for each worker; None otherwise.
        pin: with `processes` > 1, pin each worker to a CPU of its own
            (`os.sched_setaffinity`, Linux), round robin over the CPUs this process may
            use (a `writer` "process" inherits its worker's); False (the default)
            leaves them to the OS.
        cpu: the CPU a worker pins itself to, set by the parent for each worker when
            it pins them; None otherwise.
    """

    aggregates: int = 1_000
    commands: int = 100_000
    duration: float | None = None
    concurrency: int = 1_000
    db: str | None = None
    synchronous: Synchronous = "FULL"
    writer: Writer = "thread"
    mix: Mix = "deposit"
    projection: bool = True
    distribution: Distribution = "uniform"
    zipf_exponent: float = 1.0
    zipf_seed: int | None = None
    seed: int = 0
    ack_log: str | None = None
    progress: Literal["auto", "always", "never"] = "auto"
    progress_interval: float = 0.5
    processes: int = 1
    cold: bool = False
    own_accounts: bool = False
    account_share: tuple[int, int] | None = None
    pin: bool = False
    cpu: int | None = None

    def __post_init__(self) -> None:
        for name in ("aggregates", "commands", "concurrency"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LoadTestError(f"--{name} must be a positive integer, not {value!r}")
        if self.duration is not None and not 0 < self.duration < math.inf:
            raise LoadTestError(f"--duration must be > 0 seconds, not {self.duration!r}")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise LoadTestError(f"--synchronous must be FULL or NORMAL, not {self.synchronous!r}")
        if self.writer not in ("thread", "process"):
            raise LoadTestError(f"--writer must be thread or process, not {self.writer!r}")
        if self.writer == "process" and self.db == ":memory:":
            raise LoadTestError("--writer process needs a database file, not --db :memory:")
        if self.writer == "process" and backend_of(self.db) == "postgresql":
            raise LoadTestError(
                "--writer process is SQLite's (a writer process on a file); the PostgreSQL"
                " store writes on a connection of its own: drop --writer process"
            )
        if self.mix not in ("deposit", "bank", "shop"):
            raise LoadTestError(f"--mix must be deposit, bank or shop, not {self.mix!r}")
        if self.distribution not in ("uniform", "zipf"):
            raise LoadTestError(
                f"--distribution must be uniform or zipf, not {self.distribution!r}"
            )
        exponent = self.zipf_exponent
        if not isinstance(exponent, int | float) or not 0 < exponent <= MAX_ZIPF_EXPONENT:
            raise LoadTestError(
                f"--zipf-exponent must be > 0 and at most {MAX_ZIPF_EXPONENT:g}, not {exponent!r}"
            )
        if self.zipf_seed is not None and type(self.zipf_seed) is not int:
            raise LoadTestError(f"zipf_seed must be an int or None, not {self.zipf_seed!r}")
        if not 0 < self.progress_interval < math.inf:
            raise LoadTestError(
                f"--progress-interval must be > 0 seconds, not {self.progress_interval!r}"
            )
        self._check_processes()

    def _check_processes(self) -> None:
        processes = self.processes
        if type(processes) is not int or not 1 <= processes <= MAX_PROCESSES:
            raise LoadTestError(
                f"--processes must be an integer from 1 to {MAX_PROCESSES}, not {processes!r}"
            )
        share = self.account_share
        if share is not None and not (
            len(share) == 2 and 0 <= share[0] < share[1] <= self.aggregates
        ):
            raise LoadTestError(
                f"account_share must be (worker index, workers) with the index below the"
                f" workers and at most --aggregates ({self.aggregates}) workers, not {share!r}"
            )
        if type(self.pin) is not bool:
            raise LoadTestError(f"pin must be True or False, not {self.pin!r}")
        if self.pin and not hasattr(os, "sched_setaffinity"):
            raise LoadTestError(
                "--pin needs os.sched_setaffinity, which this platform lacks: drop --pin"
            )
        cpu = self.cpu
        if cpu is not None and (type(cpu) is not int or cpu < 0):
            raise LoadTestError(f"cpu must be a CPU number (>= 0), not {cpu!r}")
        if cpu is not None and processes != 1:
            raise LoadTestError(
                f"cpu pins one worker process (the parent sets it for each worker): drop it"
                f" with --processes {processes}"
            )
        if processes == 1:
            if self.own_accounts and share is None:
                raise LoadTestError(
                    "--own-accounts shares the accounts out between worker processes:"
                    " give --processes 2 or more"
                )
            if self.pin and cpu is None:
                raise LoadTestError(
                    "--pin places worker processes on CPUs of their own: give --processes 2"
                    " or more (one process runs unpinned)"
                )
            return
        if self.own_accounts and self.aggregates < processes:
            raise LoadTestError(
                f"--own-accounts gives each of --processes {processes} accounts of its own:"
                f" give at least {processes} --aggregates, not {self.aggregates}"
            )
        if self.cold:
            raise LoadTestError(
                f"--cold passivates the actors of this process: drop --processes {processes}"
            )
        if self.db == ":memory:":
            raise LoadTestError(
                f"--processes {processes} share one store: a SQLite file or a PostgreSQL"
                " URL, not --db :memory: (one process's own)"
            )
        if self.mix != "deposit":
            raise LoadTestError(
                f"--processes {processes} runs the deposit mix only (the {self.mix} mix's"
                " process managers would run once per process): use --mix deposit"
            )
        if self.duration is None and self.commands < processes:
            raise LoadTestError(
                f"--processes {processes} divides --commands between them: give at least"
                f" {processes} commands, not {self.commands}"
            )
