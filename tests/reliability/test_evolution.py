"""Schema evolution (EVO-1, EVO-2): old stored shapes still load; the demo's tags and
field names do not drift by accident."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

import demo.bank
import demo.shop
from actors import Command, Event

GOLDEN = Path(__file__).parent / "fixtures" / "demo_schema.json"
HOW_TO_UPDATE = (
    "the demo's stored or accepted shapes changed. Stored events are permanent: add an"
    " upcaster or a new tag instead of renaming. If the change is deliberate (a new type or"
    " field with a default), regenerate the golden file with"
    " `python -m tests.reliability.test_evolution` and commit it with the change."
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


if __name__ == "__main__":
    GOLDEN.write_text(
        json.dumps(schema_of([demo.bank, demo.shop]), indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
