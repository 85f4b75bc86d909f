"""The load test's account distributions: uniform as before, Zipf's law by its weights,
hot accounts agreed by seed, and a run that reports how it drew."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import msgspec
import pytest

from demo.__main__ import main
from demo._distribution import picker
from demo._loadtest import LoadOptions, LoadTestError
from demo._loadtest._driver import _workload
from demo._loadtest._processes import _child_options
from demo._workloads import DepositWorkload


def test_uniform_draws_what_randrange_draws() -> None:
    pick = picker(1_000, "uniform", 1.0, seed=3)
    a, b = random.Random(5), random.Random(5)
    assert [pick(a) for _ in range(200)] == [b.randrange(1_000) for _ in range(200)]


@pytest.mark.parametrize("exponent", [0.8, 1.0, 1.2])
def test_zipf_draws_each_rank_in_proportion_to_its_weight(exponent: float) -> None:
    count, draws = 200, 200_000
    pick = picker(count, "zipf", exponent, seed=1)
    rng = random.Random(11)
    seen = collections.Counter(pick(rng) for _ in range(draws))
    weights = [k**-exponent for k in range(1, count + 1)]
    total = sum(weights)
    ranked = [n for _, n in sorted(((-c, i) for i, c in seen.items()))]
    # the most drawn accounts, hottest first, match the law's head within 5%
    for rank in range(5):
        share = seen[ranked[rank]] / draws
        assert share == pytest.approx(weights[rank] / total, rel=0.05), (rank, share)
    assert set(seen) <= set(range(count))


def test_zipf_with_a_larger_exponent_is_more_skewed() -> None:
    def hottest_share(exponent: float) -> float:
        pick, rng = picker(1_000, "zipf", exponent, seed=0), random.Random(2)
        seen = collections.Counter(pick(rng) for _ in range(50_000))
        return seen.most_common(1)[0][1] / 50_000

    assert hottest_share(0.8) < hottest_share(1.2)


def test_the_hot_accounts_are_a_function_of_the_seed() -> None:
    def hottest(seed: int) -> int:
        pick, rng = picker(1_000, "zipf", 1.2, seed=seed), random.Random(seed + 100)
        return collections.Counter(pick(rng) for _ in range(20_000)).most_common(1)[0][0]

    assert hottest(4) == hottest(4)
    assert len({hottest(seed) for seed in range(6)}) > 1


def test_the_exponent_is_checked() -> None:
    with pytest.raises(LoadTestError, match="--zipf-exponent must be > 0"):
        LoadOptions(distribution="zipf", zipf_exponent=0.0)
    with pytest.raises(LoadTestError, match="--zipf-exponent must be > 0 and at most 10"):
        LoadOptions(distribution="zipf", zipf_exponent=11.0)
    with pytest.raises(LoadTestError, match="--distribution must be uniform or zipf"):
        LoadOptions(distribution="pareto")  # type: ignore[arg-type]


def test_a_zipf_run_reports_its_distribution_and_stays_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["loadtest", "--aggregates", "50", "--commands", "600", "--concurrency", "40"]
    argv += ["--db", str(tmp_path / "z.db"), "--json", "--distribution", "zipf"]
    assert main([*argv, "--zipf-exponent", "1.2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["distribution"], report["zipf_exponent"]) == ("zipf", 1.2)
    assert report["acknowledged"] == 600
    assert report["errors"] == 0
    assert report["projection_ok"] is True


def test_the_workers_of_a_processes_run_agree_on_the_hot_accounts() -> None:
    options = LoadOptions(processes=2, distribution="zipf", zipf_exponent=1.2, seed=5)
    children = [
        msgspec.json.decode(_child_options(options, i, None), type=LoadOptions) for i in (0, 1)
    ]
    assert children[0].seed != children[1].seed  # each worker draws its own commands

    def hottest(child: LoadOptions) -> str:
        workload = _workload(child)
        assert isinstance(workload, DepositWorkload)
        rng = random.Random(9)
        seen = collections.Counter(workload.pick(rng) for _ in range(20_000))
        return workload.accounts[seen.most_common(1)[0][0]]

    assert hottest(children[0]) == hottest(children[1]) == hottest(options)


def test_with_own_accounts_each_worker_draws_from_its_share_only() -> None:
    options = LoadOptions(processes=3, aggregates=10, own_accounts=True, db="x.db", seed=2)
    drawn: list[set[str]] = []
    for index in range(3):
        child = msgspec.json.decode(_child_options(options, index, None), type=LoadOptions)
        assert child.account_share == (index, 3)
        workload = _workload(child)
        assert isinstance(workload, DepositWorkload)
        workload.router = object()  # type: ignore[assignment]  # step only names it
        rng = random.Random(index)
        drawn.append({workload.step(rng, n)[1] for n in range(2_000)})
    accounts = DepositWorkload(10).accounts
    assert drawn == [set(accounts[index::3]) for index in range(3)]


def test_without_own_accounts_every_worker_draws_from_all() -> None:
    options = LoadOptions(processes=2, aggregates=10, db="x.db")
    child = msgspec.json.decode(_child_options(options, 1, None), type=LoadOptions)
    assert child.account_share is None
    workload = _workload(child)
    assert isinstance(workload, DepositWorkload)
    workload.router = object()  # type: ignore[assignment]  # step only names it
    rng = random.Random(1)
    assert {workload.step(rng, n)[1] for n in range(2_000)} == set(workload.accounts)
