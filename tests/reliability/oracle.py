"""The in-memory oracle and the checkers of the durability tests.

The oracle folds a list of stored events with plain dict arithmetic, independent of the
framework's read models, into what the bank's balances must be. Each checker is a plain
function that returns its violations (an empty list when the invariant holds), so the
same checker runs on a real run and on the deliberately broken variant of its self-test.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from actors import ProcessManagerHandle
from demo.bank import (
    AccountOpened,
    Credited,
    Debited,
    Deposited,
    OrderCharged,
    Refunded,
    Withdrawn,
)
from store import EventStore, RecordedEvent

ACCOUNT_PREFIX = "account-"


def fold_balances(events: Iterable[RecordedEvent]) -> dict[str, int]:
    """Every account's balance after `events` (which must be in position order)."""
    return _fold_into({}, events)


def _fold_into(balances: dict[str, int], events: Iterable[RecordedEvent]) -> dict[str, int]:
    for recorded in events:
        if not recorded.stream_id.startswith(ACCOUNT_PREFIX):
            continue
        account = recorded.stream_id.removeprefix(ACCOUNT_PREFIX)
        match recorded.event:
            case AccountOpened():
                balances.setdefault(account, 0)
            case Deposited(amount=n) | Credited(amount=n) | Refunded(amount=n):
                balances[account] = balances.get(account, 0) + n
            case Withdrawn(amount=n) | Debited(amount=n) | OrderCharged(amount=n):
                balances[account] = balances.get(account, 0) - n
    return balances


def balances_hash(balances: Mapping[str, int]) -> str:
    """A stable digest of a balances mapping (the child reports it for its read model)."""
    text = json.dumps(sorted(balances.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_lines(raw: bytes) -> list[dict[str, object]]:
    """The complete JSON lines of a child's stdout (a line cut by the kill is dropped)."""
    return [
        json.loads(line)
        for line in raw.decode().splitlines(keepends=True)
        if line.endswith("\n") and line.startswith("{")
    ]


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def lost_acks(lines: list[dict[str, object]], db: Path) -> list[str]:
    """Acknowledged commands whose last event is not in the file at the acked version
    and position (acknowledged-then-lost)."""
    with _connect(db) as conn:
        rows = set(conn.execute("SELECT stream_id, version, position FROM events"))
    conn.close()
    return [
        str(line["ack"])
        for line in lines
        if "ack" in line
        and line["events"]
        and (line["stream"], line["version"], line["position"]) not in rows
    ]


def partial_commands(db: Path) -> list[str]:
    """Commands whose stored events are not exactly the versions their record names."""
    with _connect(db) as conn:
        # One read transaction for both tables: a writer still running (the writer
        # process of a killed program finishes its batch) may commit between them.
        conn.execute("BEGIN")
        commands = conn.execute(
            "SELECT command_id, stream_id, first_version, last_version FROM commands"
        ).fetchall()
        stored: dict[str, list[tuple[str, int]]] = {}
        for command_id, stream_id, version in conn.execute(
            "SELECT command_id, stream_id, version FROM events WHERE command_id IS NOT NULL"
        ):
            stored.setdefault(command_id, []).append((stream_id, version))
        conn.execute("COMMIT")
    conn.close()
    bad = []
    for command_id, stream_id, first, last in commands:
        expected = [(stream_id, v) for v in range(first, last + 1)]
        if sorted(stored.pop(command_id, [])) != expected:
            bad.append(command_id)
    bad.extend(stored)  # events of a command that has no command record
    return bad


def log_gaps(db: Path) -> list[str]:
    """Streams whose versions are not 1..n, and a global log whose positions are not 1..n."""
    with _connect(db) as conn:
        streams = conn.execute(
            "SELECT stream_id, count(*), min(version), max(version) FROM events GROUP BY stream_id"
        ).fetchall()
        total, low, high = conn.execute(
            "SELECT count(*), min(position), max(position) FROM events"
        ).fetchone()
    conn.close()
    gaps = [str(s) for s, n, lo, hi in streams if (lo, hi) != (1, n)]
    if total and (low, high) != (1, total):
        gaps.append(f"positions {low}..{high} for {total} events")
    return gaps


def integrity(db: Path) -> list[str]:
    """`PRAGMA integrity_check` findings (none when the file is sound)."""
    with sqlite3.connect(db) as conn:
        found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    conn.close()
    return [] if found == ["ok"] else found


def digest_mismatches(lines: list[dict[str, object]], events: list[RecordedEvent]) -> list[int]:
    """Positions at which the child's live read model differed from the oracle fold of
    the stored events up to that position (one pass over the log, digests in order)."""
    digests = sorted(
        (int(str(line["digest"])), str(line["hash"])) for line in lines if "digest" in line
    )
    bad = []
    folded: list[RecordedEvent] = []
    index = 0
    balances: dict[str, int] = {}
    for position, expected_hash in digests:
        while index < len(events) and events[index].position <= position:
            folded.append(events[index])
            index += 1
        balances = _fold_into(balances, folded)
        folded.clear()
        if balances_hash(balances) != expected_hash:
            bad.append(position)
    return bad


async def whole_log(store: EventStore) -> list[RecordedEvent]:
    """Every event of `store` in position order, read page by page (reads are capped at
    `max_read_limit` events, so one call never returns a long log whole)."""
    events: list[RecordedEvent] = []
    while True:
        start = events[-1].position + 1 if events else 0
        page = await store.read_all(from_position=start, limit=10_000)
        if not page:
            return events
        events.extend(page)


async def settle(store: EventStore, process: ProcessManagerHandle, step_limit: float = 60) -> int:
    """Wait until `process` has handled every event, including those its own commands
    appended meanwhile (each saga step appends what the saga reacts to next); returns
    the quiet head position."""
    head = -1
    while head != (last := await store.last_position()):
        head = last
        await process.wait_for(head, timeout=step_limit)
    return head
