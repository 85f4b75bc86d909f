"""Schema evolution (EVO-1, EVO-2): old stored shapes still load; the demo's tags and
field names do not drift by accident."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import demo.bank
import demo.shop
from actors import Aggregate, Command, Event, RecoveryError, open_system
from store import EventRegistry

GOLDEN = Path(__file__).parent / "fixtures" / "demo_schema.json"
HOW_TO_UPDATE = (
    "the demo's stored or accepted shapes changed. Stored events are permanent: add an"
    " upcaster or a new tag instead of renaming. If the change is deliberate (a new type or"
    " field with a default), regenerate the golden file with"
    " `python -m tests.reliability.test_evolution` (EVO-1: with the argument `evo`) and commit it with the change."
)


def schema_of(modules: list[Any]) -> dict[str, dict[str, list[str]]]:
    """Tag -> {kind, fields (encoded names, required ones without '?')} of every event and
    command class the modules export."""
    out: dict[str, dict[str, list[str]]] = {}
    for module in modules:
        for name in sorted(module.__all__):
            obj = getattr(module, name)
            if not (isinstance(obj, type) and issubclass(obj, Command | Event)):
                continue
            if obj in (Command, Event):
                continue
            tag = obj.__struct_config__.tag
            fields = [
                f.encode_name + ("" if f.required else "?") for f in msgspec.structs.fields(obj)
            ]
            kind = "command" if issubclass(obj, Command) else "event"
            out[str(tag)] = {"kind": [kind], "fields": fields}
    return dict(sorted(out.items()))


def drift(golden: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """EVO-2 checker: tags removed, renamed or whose fields changed."""
    found = [f"tag {t!r} is gone" for t in golden if t not in current]
    found += [f"tag {t!r} is new" for t in current if t not in golden]
    found += [
        f"{t!r} fields {golden[t]['fields']} -> {current[t]['fields']}"
        for t in golden
        if t in current and golden[t] != current[t]
    ]
    return found


def test_evo2_demo_tags_and_fields_match_the_golden_file(report: Any) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    current = schema_of([demo.bank, demo.shop])
    found = drift(golden, current)
    report.record("EVO-2", tags=len(current), drift=len(found))
    assert not found, f"{'; '.join(found)}: {HOW_TO_UPDATE}"


def test_evo2_checker_sees_a_renamed_tag_and_a_renamed_field() -> None:
    """Broken variant: the golden file as it would be after a rename of each kind."""
    current = schema_of([demo.bank])
    renamed = dict(current)
    renamed["bank.deposited.v0"] = renamed.pop("bank.deposited")
    fields = dict(current["bank.withdrawn"])
    fields["fields"] = ["account", *fields["fields"][1:]]
    renamed["bank.withdrawn"] = fields
    assert len(drift(renamed, current)) == 3


if __name__ == "__main__" and sys.argv[1:] != ["evo"]:
    GOLDEN.write_text(
        json.dumps(schema_of([demo.bank, demo.shop]), indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )


# -- EVO-1: old stored shapes load -----------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "evo_v1.db"
GOLDEN_STATE = Path(__file__).parent / "fixtures" / "evo_golden.json"


class AccountOpened(Event, tag="evo.account_opened"):
    owner: str
    currency: str  # new in v2: old events get "EUR" from the upcaster


class Deposited(Event, tag="evo.deposited"):  # stored as "evo.money_in" before the rename
    amount: int


class Withdrawn(Event, tag="evo.withdrawn"):
    amount: int  # was "amt" in v1


class Deposit(Command, tag="evo.deposit"):
    amount: int


class EvoState(msgspec.Struct, frozen=True):
    owner: str | None = None
    currency: str = ""
    balance: int = 0


class Evo(Aggregate[EvoState, Deposit, AccountOpened | Deposited | Withdrawn]):
    initial = EvoState()
    category = "evo"
    state_version = 2  # the v1 snapshot (owner, cents) is of another shape: ignored

    def decide(self, state: EvoState, command: Deposit) -> list[Deposited]:
        return [Deposited(command.amount)]

    def evolve(self, state: EvoState, event: AccountOpened | Deposited | Withdrawn) -> EvoState:
        if isinstance(event, AccountOpened):
            return EvoState(event.owner, event.currency, state.balance)
        if isinstance(event, Deposited):
            return msgspec.structs.replace(state, balance=state.balance + event.amount)
        return msgspec.structs.replace(state, balance=state.balance - event.amount)


def evolved_registry(*, with_upcasters: bool = True) -> EventRegistry:
    registry = EventRegistry()
    registry.register(AccountOpened, Withdrawn, schema_version=2)
    registry.register(Deposited)
    if with_upcasters:
        registry.upcaster("evo.account_opened", 1, lambda d: {**d, "currency": "EUR"})
        registry.upcaster("evo.withdrawn", 1, lambda d: {"amount": d["amt"]})
        registry.alias("evo.money_in", Deposited)
    return registry


async def evolved_view(path: Path, registry: EventRegistry) -> dict[str, Any]:
    """Load every aggregate, append one new event each, re-read the mixed history."""
    out: dict[str, Any] = {}
    async with open_system(path, registry=registry) as system:
        router = system.aggregates(Evo)
        for account in ("a", "b"):
            before = msgspec.to_builtins(await router.state(account))
            await router.ask(account, Deposit(5))
            history = [msgspec.to_builtins(r.event) for r in await router.history(account)]
            out[account] = {
                "loaded": before,
                "after": msgspec.to_builtins(await router.state(account)),
                "history": history,
                "types": [type(r.event).__name__ for r in await router.history(account)],
            }
    return out


def _copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "evo.db"
    target.write_bytes(FIXTURE.read_bytes())
    return target


async def test_evo1_v1_events_and_snapshot_load_into_the_current_shapes(
    tmp_path: Path, report: Any
) -> None:
    view = await evolved_view(_copy_fixture(tmp_path), evolved_registry())
    golden = json.loads(GOLDEN_STATE.read_text(encoding="utf-8"))
    mismatches = [k for k in golden if golden[k] != view.get(k)]
    report.record("EVO-1", aggregates=len(view), mismatches=len(mismatches))
    assert view == golden, f"to update deliberately: {HOW_TO_UPDATE}"
    assert view["a"]["after"] == {"owner": "ada", "currency": "EUR", "balance": 75}


async def test_evo1_without_the_upcasters_old_data_fails_by_name(tmp_path: Path) -> None:
    """Broken variant: the evolved types without their upcasters and alias are refused
    with a typed recovery error (never read as zeros or skipped)."""
    with pytest.raises(RecoveryError):
        await evolved_view(_copy_fixture(tmp_path), evolved_registry(with_upcasters=False))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "evo":
    with tempfile.TemporaryDirectory() as scratch:
        data = anyio.run(evolved_view, _copy_fixture(Path(scratch)), evolved_registry())
    GOLDEN_STATE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
