"""The collector's first threshold while systems are open: raised, never lowered, put
back by the last system to close unless someone else changed it meanwhile."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from actors import InvalidOption, SystemOptions, open_system
from demo.bank import Account, Deposit, OpenAccount

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def python_default() -> Iterator[None]:
    """Each test starts at Python's default thresholds and leaves them as it found them."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


async def test_an_open_system_raises_the_first_threshold_and_puts_it_back() -> None:
    async with open_system(":memory:") as system:
        assert gc.get_threshold() == (20_000, 10, 10)
        router = system.aggregates(Account)
        await router.ask("a", OpenAccount("a", "ann"))
        assert (await router.ask("a", Deposit("a", 5))).version == 2
    assert gc.get_threshold() == (700, 10, 10)


async def test_the_last_system_to_close_puts_it_back() -> None:
    async with open_system(":memory:", gc_threshold=5_000):
        async with open_system(":memory:", gc_threshold=50_000):
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000  # another system is still open
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_higher_threshold_is_never_lowered() -> None:
    gc.set_threshold(100_000, 10, 10)
    async with open_system(":memory:"):
        assert gc.get_threshold()[0] == 100_000
    assert gc.get_threshold()[0] == 100_000


async def test_none_leaves_the_collector_alone() -> None:
    async with open_system(":memory:", gc_threshold=None):
        assert gc.get_threshold() == (700, 10, 10)


async def test_thresholds_changed_meanwhile_are_left_as_they_are() -> None:
    async with open_system(":memory:"):
        gc.set_threshold(3_000, 5, 5)  # the application's own choice
    assert gc.get_threshold() == (3_000, 5, 5)


@pytest.mark.parametrize("value", [699, 10_000_001, True, 2.5e4, "20000"])
def test_a_threshold_out_of_range_is_refused_naming_it(value: object) -> None:
    with pytest.raises(InvalidOption, match="gc_threshold"):
        SystemOptions(gc_threshold=value)  # type: ignore[arg-type]
