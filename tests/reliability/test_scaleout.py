"""Scale-out under kill -9 (SCALE-1): 4 worker processes on one store (a SQLite file,
PostgreSQL), one of them SIGKILLed and started again repeatedly while the others load it.

The run is the demo's simulation on several processes (`python -m demo simulate
--processes 4 --chaos`): every worker runs its share of the customers and every process
manager (each under a lease, so it runs in one worker at a time and another takes it
over when its holder is killed); a worker started in place of a killed one resends its
customers' commands under their ids. Every worker (and the parent's restocks) appends
each acknowledged command's stream, version and position to one ack log, before its
customer sends the next command. After the load, the sagas settle and each surviving
worker checks the whole store and its read models. Then this test checks the store
against every acknowledgement and every stream's versions, and the run's invariants.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from demo._simulate import SimOptions, SimReport, simulate
from tests.demo._acks import missing_acks, read_acks, version_gaps
from tests.demo.test_postgres import stored
from tests.demo.test_postgres import version_gaps as postgres_version_gaps
from tests.reliability._report import Report, size, time_limit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(time_limit(300))]

PROCESSES = 4
# Must hold in every run.
REQUIRED = (
    "settled",
    "orders_final",
    "read_models_rebuild",
    "money_conserved",
    "transfers_ended",
    "no_negative_balance",
)


def options(db: str, acks: Path) -> SimOptions:
    return SimOptions(
        db=db,
        seed=7,
        customers=size(16, 64),
        steps=None,
        duration=size(3.0, 300.0),
        couriers=4,
        settle_timeout=size(120.0, 600.0),
        processes=PROCESSES,
        lease_ttl=1.0,
        chaos=True,
        chaos_interval=size(1.2, 3.0),
        ack_log=str(acks),
    )


async def run(db: str, acks: Path) -> SimReport:
    with anyio.fail_after(size(240, 3_600)):
        return await simulate(options(db, acks))


def check(
    sim: SimReport,
    acks: list[tuple[str, int, int]],
    lost: list[tuple[str, int, int]],
    gaps: list[str],
    report: Report,
    backend: str,
) -> None:
    found = {inv.name: inv for inv in sim.invariants}
    report.record(
        "SCALE-1",
        backend=backend,
        processes=sim.processes,
        partitions=sim.partitions,
        seconds=sim.seconds,
        kills=sim.kills,
        restarts=sim.restarts,
        takeovers=sim.takeovers,
        commands=sim.commands,
        commands_per_s=sim.commands_per_s,
        duplicates=sim.duplicates,
        acknowledged_logged=len(acks),
        lost=len(lost),
        version_gaps=len(gaps),
        events=sim.events,
        settle_seconds=sim.settle_seconds,
        failed=[name for name, inv in found.items() if not inv.ok],
    )
    assert sim.kills >= 1
    assert sim.restarts == sim.kills
    assert len(sim.workers) == PROCESSES
    assert lost == [], f"{len(lost)} acknowledged commands missing, e.g. {lost[:5]}"
    assert gaps == [], f"streams whose versions are not 1..n: {gaps[:5]}"
    assert len(acks) > 0
    broken = {name: found[name] for name in REQUIRED if not found[name].ok}
    assert broken == {}
    assert sim.errors == 0 or set(sim.error_types) <= {"TooManyAttempts"}


async def test_scale1_sqlite_four_processes_one_killed_repeatedly(
    tmp_path: Path, report: Report
) -> None:
    db, acks = tmp_path / "scale.db", tmp_path / "acks.tsv"
    sim = await run(str(db), acks)
    logged = read_acks(acks)
    check(sim, logged, missing_acks(logged, db), version_gaps(db), report, "sqlite")


async def test_scale1_postgresql_four_processes_one_killed_repeatedly(
    postgres_url: str, postgres_schema: str, tmp_path: Path, report: Report
) -> None:
    acks = tmp_path / "acks.tsv"
    sim = await run(postgres_url, acks)
    logged = read_acks(acks)
    rows = await stored(postgres_schema)
    lost = [ack for ack in logged if ack not in rows]
    gaps = await postgres_version_gaps(postgres_schema)
    check(sim, logged, lost, gaps, report, "postgresql")
