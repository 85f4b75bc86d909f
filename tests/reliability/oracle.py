"""The reliability suite's oracle and checkers: pure folds over a store file.

`fold_balances` folds stored bank events into the expected balances (and stream
versions) independently of the framework's read models; the checkers compare a store
file with a child's acknowledgement lines and return lists of violations, so each one
runs on real and on deliberately broken evidence alike.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import msgspec

_CREDIT = {"bank.deposited", "bank.credited", "bank.refunded"}
_DEBIT = {"bank.withdrawn", "bank.debited", "bank.order_charged"}
_EVENTS = "SELECT position, stream_id, version, event_type, data, command_id FROM events ORDER BY position"


def read_lines(raw: bytes) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """A child's stdout as (ack lines, digest lines); a line cut by a kill is dropped."""
    acks: list[dict[str, object]] = []
    digests: list[dict[str, object]] = []
    for line in raw.decode().splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        record = json.loads(line)
        if "sent" in record:
            continue
        (digests if "digest" in record else acks).append(record)
    return acks, digests


def sent_commands(raw: bytes) -> dict[str, dict[str, object]]:
    """A child's "sent" lines by command id."""
    sent = {}
    for line in raw.decode().splitlines(keepends=True):
        if line.endswith("\n") and line.startswith('{"sent"'):
            record = json.loads(line)
            sent[str(record["sent"])] = record
    return sent


def stored_events(db: Path) -> list[tuple[int, str, int, str, bytes, str | None]]:
    """Every stored event as (position, stream, version, type, data, command id)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(_EVENTS).fetchall()
    conn.close()
    return [(int(p), str(s), int(v), str(t), bytes(d), c) for p, s, v, t, d, c in rows]


def fold_balances(
    events: list[tuple[int, str, int, str, bytes, str | None]], upto: int | None = None
) -> dict[str, int]:
    """Expected balances (account id -> cents) after the events up to position `upto`."""
    balances: dict[str, int] = {}
    for position, stream, _version, event_type, data, _cmd in events:
        if upto is not None and position > upto:
            break
        if not stream.startswith("account-"):
            continue
        account = stream.removeprefix("account-")
        if event_type == "bank.account_opened":
            balances.setdefault(account, 0)
        elif event_type in _CREDIT or event_type in _DEBIT:
            amount = _amount(data)
            balances[account] = balances.get(account, 0) + (
                amount if event_type in _CREDIT else -amount
            )
    return balances


def _amount(data: bytes) -> int:
    return int(msgspec.msgpack.decode(data)["amount"])


def acked_then_lost(acks: list[dict[str, object]], db: Path) -> list[str]:
    """Acknowledged commands whose events are not stored at the acked versions/position."""
    rows = {(s, v): (p, c) for p, s, v, _t, _d, c in stored_events(db)}
    lost = []
    for ack in acks:
        if ack["outcome"] != "ok":
            continue
        stream, last, position = (
            str(ack["stream"]),
            int(str(ack["last_version"])),
            int(str(ack["position"])),
        )
        for version in range(int(str(ack["first_version"])), last + 1):
            found = rows.get((stream, version))
            if (
                found is None
                or (version == last and found[0] != position)
                or found[1] != ack["cmd_id"]
            ):
                lost.append(f"{ack['cmd_id']} {stream}@{version}")
                break
    return lost


def partial_commands(db: Path) -> list[str]:
    """Command ids whose stored events do not match their `commands` row in full."""
    with sqlite3.connect(db) as conn:
        recorded = {
            str(c): (int(a), int(b))
            for c, a, b in conn.execute(
                "SELECT command_id, first_version, last_version FROM commands"
            )
        }
    conn.close()
    versions: dict[str, list[int]] = defaultdict(list)
    for _p, _s, version, _t, _d, cmd in stored_events(db):
        if cmd is not None:
            versions[cmd].append(version)
    bad = [
        c
        for c, vs in versions.items()
        if c not in recorded or sorted(vs) != list(range(recorded[c][0], recorded[c][1] + 1))
    ]
    return sorted(bad + [c for c in recorded if c not in versions])


def version_gaps(db: Path) -> list[str]:
    """Streams whose versions are not exactly 1..n."""
    seen: dict[str, list[int]] = defaultdict(list)
    for _p, stream, version, _t, _d, _c in stored_events(db):
        seen[stream].append(version)
    return sorted(s for s, vs in seen.items() if sorted(vs) != list(range(1, len(vs) + 1)))


def position_violations(db: Path) -> list[int]:
    """Positions that do not increase strictly in log order (must be empty)."""
    positions = [p for p, *_ in stored_events(db)]
    return [b for a, b in itertools.pairwise(positions) if b <= a]


def integrity_failures(db: Path) -> list[str]:
    """`PRAGMA integrity_check` messages other than "ok"."""
    with sqlite3.connect(db) as conn:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    conn.close()
    return [r for r in rows if r != "ok"]


def transfer_legs(
    events: list[tuple[int, str, int, str, bytes, str | None]],
) -> dict[str, dict[str, int]]:
    """Per transfer id: how many times each leg and outcome event was stored."""
    legs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _p, stream, _v, event_type, data, _c in events:
        if event_type in ("bank.debited", "bank.credited", "bank.refunded"):
            transfer_id = str(msgspec.msgpack.decode(data)["transfer_id"])
            legs[transfer_id][event_type] += 1
        elif event_type in (
            "bank.transfer_requested",
            "bank.transfer_completed",
            "bank.transfer_failed",
        ):
            legs[stream.removeprefix("transfer-")][event_type] += 1
    return legs


def saga_violations(
    events: list[tuple[int, str, int, str, bytes, str | None]],
) -> tuple[list[str], list[str]]:
    """(double-applied, never-applied) transfers of a settled store: a leg stored more
    than once, or a requested transfer that neither completed nor failed."""
    double, never = [], []
    for transfer_id, counts in sorted(transfer_legs(events).items()):
        if any(n > 1 for n in counts.values()):
            double.append(transfer_id)
        ended = counts["bank.transfer_completed"] + counts["bank.transfer_failed"]
        if counts["bank.transfer_requested"] and ended != 1:
            never.append(transfer_id)
    return double, never


def money_violations(events: list[tuple[int, str, int, str, bytes, str | None]]) -> list[str]:
    """Transfers must conserve money once settled: debited = credited + refunded."""
    totals: dict[str, int] = defaultdict(int)
    for _p, _s, _v, event_type, data, _c in events:
        if event_type in ("bank.debited", "bank.credited", "bank.refunded"):
            totals[event_type] += _amount(data)
    moved = totals["bank.debited"] - totals["bank.credited"] - totals["bank.refunded"]
    return [] if moved == 0 else [f"debited - credited - refunded = {moved}"]
