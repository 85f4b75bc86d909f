"""Every option value `open_system` accepts works; every other is refused at open with
`InvalidOption` naming the option and its range."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import anyio
import pytest

from actors import (
    AggregateSettings,
    AskTimeout,
    InvalidOption,
    MailboxFull,
    OpenSystemSettings,
    Overloaded,
    ProcessManagerOptions,
    SystemOptions,
    SystemSettings,
    open_system,
)
from actors._options import OPTION_RANGES
from demo.bank import Account, Deposit, InsufficientFunds, OpenAccount, Withdraw
from store import StoreOptions, open_store


def _ends() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for name, (low, high) in OPTION_RANGES.items():
        values = {low, high, 1 if isinstance(low, int) else 1.0}
        cases += [(name, value) for value in sorted(values) if low <= value <= high]
    return cases


def _outside() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for name, (low, high) in OPTION_RANGES.items():
        below = low - 1 if isinstance(low, int) else low - 0.0005 if low else -1.0
        cases += [(name, below), (name, high + 1), (name, "3"), (name, True)]
        cases.append((name, float("nan")) if not isinstance(low, int) else (name, 2.0))
    cases.append(("ask_timeout", 10**400))
    return cases


async def _exercise(options: dict[str, Any]) -> None:
    """Commands through a system opened with `options`: each answer is one the runtime
    documents, and the live state always equals the stored one."""
    timeouts_allowed = options.get("ask_timeout", 1.0) < 0.5
    async with (
        open_store(":memory:", max_read_limit=1_000_000, max_events_per_append=1_000_000) as store,
        open_system(store, **options) as system,
    ):
        accounts = system.aggregates(Account)
        acceptable: tuple[type[BaseException], ...] = (Overloaded, MailboxFull)
        if timeouts_allowed:
            acceptable += (AskTimeout,)

        async def ask(account: str, command: Any, command_id: str | None) -> None:
            try:
                await accounts.ask(account, command, command_id=command_id)
            except acceptable:
                pass

        with anyio.fail_after(30):
            for account in ("a", "b"):
                await accounts.ask(account, OpenAccount(account_id=account, owner="o"), timeout=10)
                first = await accounts.ask(
                    account,
                    Deposit(account_id=account, amount=7),
                    command_id=f"d-{account}",
                    timeout=10,
                )
                again = await accounts.ask(
                    account,
                    Deposit(account_id=account, amount=7),
                    command_id=f"d-{account}",
                    timeout=10,
                )
                assert again.duplicate
                assert again.version == first.version
                with pytest.raises(InsufficientFunds):
                    await accounts.ask(account, Withdraw(account_id=account, amount=8), timeout=10)
            system.passivate_idle(older_than=0)
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(ask, "a", Deposit(account_id="a", amount=1), "same")
                    tg.start_soon(ask, "b", Deposit(account_id="b", amount=1), None)
            for account in ("a", "b"):
                live = await accounts.state(account, timeout=10)
                assert live == await accounts.state_at(account)
            assert await system.store.stream_version("account-a") in (2, 3)


@pytest.mark.parametrize(("name", "value"), _ends())
async def test_every_value_in_an_options_range_works(name: str, value: Any) -> None:
    await _exercise({name: value})


@pytest.mark.parametrize(("name", "value"), _outside())
def test_a_value_outside_an_options_range_is_refused_naming_it(name: str, value: Any) -> None:
    with pytest.raises(InvalidOption, match=rf"^{name} must be .* from .* to ") as caught:
        SystemOptions(**{name: value})
    assert caught.value.name == name
    assert isinstance(caught.value, ValueError)


async def test_open_system_refuses_an_out_of_range_option_before_opening_anything() -> None:
    with pytest.raises(InvalidOption, match="recent_command_ids must be an int from 0 to"):
        async with open_system(":memory:", recent_command_ids=-1):
            pass


async def test_a_batch_append_over_the_stores_limit_is_refused_at_open() -> None:
    with pytest.raises(
        InvalidOption, match=r"max_events_per_append .* \(the store's max_events_per_append\)"
    ):
        async with open_system(":memory:", max_events_per_append=20_000):
            pass


def test_every_option_has_a_range() -> None:
    fields = {f.name for f in dataclasses.fields(SystemOptions)}
    assert fields - {"idle_timeout", "follow", "decide_in_store"} <= set(OPTION_RANGES)  # bools
    assert set(OPTION_RANGES) <= fields


def _fields(struct: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(struct)}


def test_the_settings_keys_are_the_options_fields_with_their_types() -> None:
    assert typing.get_type_hints(SystemSettings) == typing.get_type_hints(SystemOptions)
    assert SystemSettings.__required_keys__ == frozenset()
    assert OpenSystemSettings.__optional_keys__ == (
        _fields(SystemOptions) | _fields(StoreOptions) | {"schema"}
    )
    hints = typing.get_type_hints(AggregateSettings)
    assert hints.items() <= typing.get_type_hints(SystemOptions).items()
    # what one aggregate type cannot set apart: the whole system's
    assert set(SystemSettings.__optional_keys__ - AggregateSettings.__optional_keys__) == {
        "max_queued_commands",
        "max_live_actors",
        "idle_actor_tasks",
        "idle_timeout",
        "grace",
        "gc_threshold",
        "follow",
    }


@pytest.mark.parametrize("opened", [False, True])
async def test_an_unknown_option_of_open_system_is_refused_naming_it_and_the_others(
    opened: bool,
) -> None:
    async with open_store(":memory:") as store:
        target = store if opened else ":memory:"
        with pytest.raises(
            InvalidOption, match=r"^open_system: unknown option 'mailbox_size'; "
        ) as caught:
            async with open_system(target, mailbox_size=8):  # type: ignore[call-arg]
                pass
    error = caught.value
    assert (error.name, error.value, error.unknown) == ("mailbox_size", 8, True)
    for valid in ("mailbox_capacity", "ask_timeout", "synchronous", "writer"):
        assert valid in str(error)


async def test_a_whole_options_struct_is_taken_and_keywords_override_it() -> None:
    base = SystemOptions(ask_timeout=3.0, grace=2.0)
    async with open_system(":memory:", options=base, grace=1.0, synchronous="NORMAL") as system:
        assert system.options == dataclasses.replace(base, grace=1.0)
    with pytest.raises(InvalidOption, match="options must be a SystemOptions or None"):
        async with open_system(":memory:", options={"grace": 1.0}):  # type: ignore[arg-type]
            pass


async def test_aggregates_refuses_an_unknown_or_system_wide_option_naming_it() -> None:
    async with open_system(":memory:") as system:
        for name in ("mailbox_size", "grace"):
            with pytest.raises(
                InvalidOption, match=rf"^aggregates\(Account\): unknown option '{name}'; "
            ) as caught:
                system.aggregates(Account, **{name: 1})  # type: ignore[arg-type]
            assert caught.value.name == name
            assert "mailbox_capacity" in str(caught.value)
        with pytest.raises(InvalidOption, match="max_batch must be an int from 1 to"):
            system.aggregates(Account, max_batch=0)
        with pytest.raises(InvalidOption, match="snapshot_every must be a positive int or None"):
            system.aggregates(Account, snapshot_every=0)
        # nothing refused was kept: the router is made on the next, good call
        router = system.aggregates(Account, max_batch=4)
        assert router.options.max_batch == 4
        assert router.options.grace == system.options.grace


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("concurrency", 0),
        ("max_parked", True),
        ("retry_delay", float("nan")),
        ("ask_timeout", -1.0),
        ("lease", 1),
        ("lease_ttl", 0.01),
        ("partitions", 2000),
    ],
)
def test_a_process_manager_option_out_of_range_is_an_invalid_option(name: str, value: Any) -> None:
    with pytest.raises(InvalidOption, match=rf"^{name} must be ") as caught:
        ProcessManagerOptions(**{name: value})
    assert (caught.value.name, caught.value.value) == (name, value)
    assert isinstance(caught.value, ValueError)


async def test_a_renamed_option_is_refused_naming_its_new_name() -> None:
    with pytest.raises(
        InvalidOption, match=r"^open_system: unknown option 'park_for'; it is quarantine_for now; "
    ):
        async with open_system(":memory:", park_for=1.0):  # type: ignore[call-arg]
            pass


@pytest.mark.parametrize("name", ["follow", "decide_in_store"])
def test_a_switch_takes_a_bool_only(name: str) -> None:
    with pytest.raises(InvalidOption, match=f"{name}.*a bool") as caught:
        SystemOptions(**{name: 1})  # type: ignore[arg-type]
    assert caught.value.name == name
