"""SIGKILL a load test at a seeded random moment once acknowledgements flow, then check
the file: every acknowledged command is stored with its version and position, stream
versions are contiguous, and a rebuilt read model matches the stored events and the
aggregates loaded from them."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from actors import open_system
from demo.bank import Account, AccountOpened, Balances, Deposit, Deposited, OpenAccount
from tests.demo._acks import missing_acks, read_acks, version_gaps

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3


async def kill_once_acks_flow(argv: list[str], extra_lines: int) -> int:
    """Start the load test, read its progress pipe until it reports acknowledgements,
    read `extra_lines` more, SIGKILL it; returns the acks its last line reported."""
    acked = 0
    async with await anyio.open_process(
        [sys.executable, "-m", "demo", "loadtest", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            assert process.stderr is not None
            lines = BufferedByteReceiveStream(process.stderr)
            after = 0
            while True:
                line = (await lines.receive_until(b"\n", 4096)).decode()
                assert line.startswith("progress acked="), line
                acked = int(line.split()[1].removeprefix("acked="))
                if acked and after >= extra_lines:
                    break
                after += 1 if acked else 0
        finally:
            if process.returncode is None:  # also when a check failed: never leave it running
                process.kill()
        assert await process.wait() == -9
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_a_killed_load_test_lost_no_acknowledged_command(tmp_path: Path, round_: int) -> None:
    rng = random.Random(f"crash-round-{round_}")
    db, acks = tmp_path / "load.db", tmp_path / "acks.tsv"
    argv = ["--aggregates", "40", "--duration", "120", "--concurrency", "48"]
    argv += ["--db", str(db), "--ack-log", str(acks), "--seed", str(rng.randrange(2**31))]
    argv += ["--synchronous", rng.choice(["FULL", "NORMAL"])]
    argv += ["--progress", "always", "--progress-interval", "0.02"]
    with anyio.fail_after(60):
        reported = await kill_once_acks_flow(argv, extra_lines=rng.randrange(0, 10))

        logged = read_acks(acks)
        assert len(logged) >= 40 + reported  # openings, then at least what was reported
        assert missing_acks(logged, db) == []
        assert version_gaps(db) == []

        async with open_system(str(db)) as system:
            accounts = system.aggregates(Account)  # registers the account event types
            last = await system.store.last_position()
            expected: dict[str, int] = {}
            position = 0
            while position < last:
                page = await system.store.read_all(from_position=position + 1, limit=5_000)
                for recorded in page:
                    account = recorded.stream_id.removeprefix("account-")
                    match recorded.event:
                        case AccountOpened():
                            expected.setdefault(account, 0)
                        case Deposited(amount=amount):
                            expected[account] += amount
                        case other:
                            raise AssertionError(f"unexpected event {other!r}")
                position = page[-1].position
            balances = await system.project(Balances())
            await balances.wait_for(last)
            assert balances.view.balances == expected
            for account in sorted(expected)[:: max(1, len(expected) // 10)]:
                assert (await accounts.state(account)).balance == expected[account]


async def test_the_checks_see_a_lost_ack_a_cut_line_and_a_version_gap(tmp_path: Path) -> None:
    """The crash test's checks against deliberately broken evidence, so a green crash
    test cannot be vacuous."""
    db, acks = tmp_path / "x.db", tmp_path / "acks.tsv"
    async with open_system(str(db)) as system:
        accounts = system.aggregates(Account)
        results = [await accounts.ask("a", OpenAccount("a", "ada"))]
        results += [await accounts.ask("a", Deposit("a", n)) for n in (1, 2, 3)]
        results.append(await accounts.ask("b", OpenAccount("b", "bob")))
    streams = ["account-a"] * 4 + ["account-b"]
    lines = [f"{s}\t{r.version}\t{r.position}\n" for s, r in zip(streams, results, strict=True)]
    acks.write_text("".join(lines) + "account-a\t9\t99\n" + "account-b\t2\t")
    logged = read_acks(acks)
    assert len(logged) == 6  # the cut last line is not an acknowledgement
    assert missing_acks(logged, db) == [("account-a", 9, 99)]
    assert version_gaps(db) == []
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE stream_id = 'account-a' AND version = 2")
    conn.close()
    assert version_gaps(db) == ["account-a"]
    assert missing_acks(logged, db) == [("account-a", 2, results[1].position), ("account-a", 9, 99)]
