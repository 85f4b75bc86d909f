"""Bad input (BAD-1..BAD-6): untrusted command bytes, unknown and corrupted stored
events, oversized and deep payloads, hostile stream ids and non-UTF-8 text. Only the
framework's typed errors escape; nothing invalid is stored; nothing wrong decodes.

Checkers are plain functions returning violation lists; each has a self-test running it
on a deliberately broken variant."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import Aggregate, Command, CommandDecoder, InvalidCommand, RecoveryError, open_system
from demo.bank import Account, Deposit, OpenAccount, Transfer
from demo.shop import Inventory, Order
from store import (
    ANY,
    NO_STREAM,
    CorruptEvent,
    EventTooLarge,
    InvalidAppend,
    InvalidStreamId,
    StoreCorrupted,
    StoreError,
    TooManyEvents,
    UnknownEventType,
    open_store,
)
from tests.reliability._report import ROOT, Report, size
from tests.store._events import Deposited, Noted, Opened, make_registry

AGGREGATES: tuple[type[Aggregate[Any, Any, Any]], ...] = (Account, Transfer, Inventory, Order)


def _command_types(aggregate: type[Aggregate[Any, Any, Any]]) -> tuple[type[Command], ...]:
    union = aggregate.__orig_bases__[0].__args__[1]  # type: ignore[attr-defined]
    return tuple(getattr(union, "__args__", (union,)))


COMMAND_TYPES = [(agg, cmd) for agg in AGGREGATES for cmd in _command_types(agg)]

# -- BAD-1: malformed command payloads ------------------------------------------------------

HOSTILE_SCALARS = st.one_of(
    st.sampled_from(
        [2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, -1, 0, "", "x" * 100_000, None, True]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.text(max_size=20),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def command_shapes(draw: st.DrawFn, cmd: type[Command]) -> dict[str, Any]:
    """A command-like object: the right tag, each field hostile, some missing or extra."""
    info = msgspec.structs.fields(cmd)
    out: dict[str, Any] = {"type": draw(st.sampled_from([cmd.__struct_config__.tag, "nope", 7]))}
    for f in info:
        if draw(st.integers(0, 9)) > 0:
            out[f.encode_name] = draw(HOSTILE_VALUES)
    if draw(st.booleans()):
        out[draw(st.text(min_size=1, max_size=8))] = draw(HOSTILE_VALUES)
    return out


def _encode(obj: Any, fmt: str) -> bytes:
    if fmt == "json":
        # NaN/Inf are not JSON; write them the way a sloppy client would.
        return json.dumps(obj, allow_nan=True).encode()
    try:
        return msgspec.msgpack.encode(obj)
    except OverflowError:  # msgpack has no ints past 64 bits: send the widest it has
        return msgspec.msgpack.encode(json.loads(json.dumps(obj), parse_int=_clamp))


def _clamp(text: str) -> int:
    return max(-(2**63), min(2**64 - 1, int(text)))


def decode_violations(
    decode: Callable[[bytes], object], union: tuple[type[Command], ...], inputs: Iterable[bytes]
) -> list[str]:
    """Anything other than InvalidCommand escaping, or a result that is not a fully valid
    command of the aggregate (re-validated strictly against its annotations)."""
    found: list[str] = []
    for data in inputs:
        try:
            result = decode(data)
        except InvalidCommand as exc:
            if not exc.aggregate or not exc.reason:
                found.append(f"{data[:40]!r}: InvalidCommand without aggregate or reason")
            continue
        except Exception as exc:  # noqa: BLE001 - what the checker counts
            found.append(f"{data[:40]!r}: {type(exc).__name__} escaped")
            continue
        if type(result) not in union:
            found.append(f"{data[:40]!r}: decoded to {type(result).__name__}")
            continue
        try:
            msgspec.convert(msgspec.to_builtins(result), type(result), strict=True)
        except msgspec.ValidationError as exc:
            found.append(f"{data[:40]!r}: decoded to an invalid {type(result).__name__}: {exc}")
    return found


@pytest.mark.parametrize(("aggregate", "cmd"), COMMAND_TYPES, ids=lambda x: x.__name__)
def test_bad1_only_invalid_command_escapes_the_decoder(
    aggregate: type[Aggregate[Any, Any, Any]], cmd: type[Command], report: Report
) -> None:
    decoders = {
        "json": CommandDecoder(aggregate, format="json", max_bytes=64 * 1024),
        "msgpack": CommandDecoder(aggregate, format="msgpack", max_bytes=64 * 1024),
    }
    union = _command_types(aggregate)
    seen: list[bytes] = []

    @settings(
        max_examples=size(200, 10_000),
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.one_of(command_shapes(cmd), st.binary(max_size=64)), st.sampled_from(sorted(decoders))
    )
    def run(shape: dict[str, Any] | bytes, fmt: str) -> None:
        data = shape if isinstance(shape, bytes) else _encode(shape, fmt)
        seen.append(data)
        assert decode_violations(decoders[fmt].decode, union, [data]) == []

    run()
    report.record(
        "BAD-1",
        aggregate=aggregate.__name__,
        command=cmd.__name__,
        inputs=len(seen),
        violations=0,
    )


def test_bad1_checker_catches_an_untyped_decoder() -> None:
    """Broken variant: a decoder that is not typed lets dicts (and floats as money) out."""
    loose = msgspec.json.Decoder()
    inputs = [b'{"type":"bank.deposit","account_id":"a","amount":5.5}', b"[1,2]"]
    assert len(decode_violations(loose.decode, _command_types(Account), inputs)) == 2


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"type":"bank.deposit","account_id":"a","amount":5.0}', "`int`, got `float`"),
        (b'{"type":"bank.deposit","account_id":"a","amount":5,"extra":1}', "unknown field"),
        (b'{"type":"bank.deposit","account_id":"a"}', "missing required field `amount`"),
        (b'{"type":"bank.nope","account_id":"a","amount":5}', "Invalid value 'bank.nope'"),
        (b'{"type":"bank.deposit","account_id":"a","amount":NaN}', "malformed"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_bad1_each_bad_command_names_aggregate_and_what_was_wrong(body: bytes, named: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        CommandDecoder(Account).decode(body)
    assert caught.value.aggregate == "Account"
    assert "Account" in str(caught.value)
    assert named in str(caught.value)


async def test_bad1_bad_commands_reach_no_actor_and_store_nothing(tmp_path: Path) -> None:
    """An ingress that decodes before asking: bad bodies never reach an actor."""
    decoder = CommandDecoder(Account)
    bodies = [b"{}", b'{"type":"bank.deposit","account_id":"a","amount":1e3}', b"\x00" * 70_000]
    async with open_system(tmp_path / "e.db") as system:
        accounts = system.aggregates(Account)
        for body in bodies:
            with pytest.raises(InvalidCommand):
                await accounts.ask("a", decoder.decode(body))
        good = decoder.decode(b'{"type":"bank.open_account","account_id":"a","owner":"ada"}')
        assert good == OpenAccount("a", "ada")
        result = await accounts.ask("a", good)
        assert result.position == 1  # the first event in the store: nothing came before
        assert system.store.statistics().events == 1


# -- BAD-2: an unknown event type in the store -----------------------------------------------


def _raw_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    return int(count)


async def silent_skips(path: Path, registry: Any) -> list[str]:
    """Rows in the file that a full read neither returned nor refused with a typed error."""
    async with open_store(path, registry=registry) as store:
        try:
            events = await store.read_all()
        except (UnknownEventType, CorruptEvent):
            return []
    missing = _raw_rows(path) - len(events)
    return [f"{missing} stored rows silently skipped"] if missing else []


async def _file_with_unknown_type(path: Path) -> None:
    async with open_store(path, registry=make_registry()) as store:
        await store.append("s", [Opened("ada"), Deposited(5)], expected_version=NO_STREAM)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO events (stream_id, version, event_type, schema_version, data,"
            " metadata, command_id, recorded_at, checksum)"
            " SELECT stream_id, 3, 'Nope.V9', 1, data, metadata, NULL, recorded_at, checksum"
            " FROM events WHERE version = 2"
        )
    conn.close()


async def test_bad2_unknown_event_type_names_stream_version_and_type(
    tmp_path: Path, report: Report
) -> None:
    path = tmp_path / "events.db"
    await _file_with_unknown_type(path)
    async with open_store(path, registry=make_registry()) as store:
        with pytest.raises(UnknownEventType) as caught:
            await store.read_stream("s")
        assert (caught.value.stream_id, caught.value.version, caught.value.event_type) == (
            "s",
            3,
            "Nope.V9",
        )
    found = await silent_skips(path, make_registry())
    report.record("BAD-2", unknown_rows=1, silent_skips=len(found))
    assert found == []


async def test_bad2_aggregate_load_fails_with_recovery_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_system(path) as system:
        await system.aggregates(Account).ask("a", OpenAccount("a", "ada"))
        await system.aggregates(Account).ask("a", Deposit("a", 5))
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO events (stream_id, version, event_type, schema_version, data,"
            " metadata, command_id, recorded_at, checksum)"
            " SELECT stream_id, 3, 'Nope.V9', 1, data, metadata, NULL, recorded_at, checksum"
            " FROM events WHERE version = 2"
        )
    conn.close()
    async with open_system(path) as system:
        with pytest.raises(RecoveryError) as caught:
            await system.aggregates(Account).ask("a", Deposit("a", 1))
        cause = caught.value.__cause__
        assert isinstance(cause, UnknownEventType)
        assert (cause.stream_id, cause.version, cause.event_type) == ("account-a", 3, "Nope.V9")
    assert _raw_rows(path) == 3  # nothing appended after the refused load


async def test_bad2_checker_catches_a_decode_that_skips_unknown_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken variant: reads drop rows of unknown types instead of raising."""
    import store._sqlite as sqlite_module

    path = tmp_path / "events.db"
    await _file_with_unknown_type(path)
    real = sqlite_module.SQLiteEventStore._decode_rows

    def skipping(self: Any, rows: list[Any]) -> list[Any]:
        known = self.registry.tags() if hasattr(self.registry, "tags") else None
        kept = (
            [r for r in rows if r[3] != "Nope.V9"]
            if known is None
            else [r for r in rows if r[3] in known]
        )
        return real(self, kept)

    monkeypatch.setattr(sqlite_module.SQLiteEventStore, "_decode_rows", skipping)
    assert len(await silent_skips(path, make_registry())) == 1


# -- BAD-3: corrupted blobs and pages ----------------------------------------------------------


async def _file_with_events(path: Path, count: int) -> list[Any]:
    async with open_store(path, registry=make_registry()) as store:
        events: list[msgspec.Struct] = [Opened("ada")]
        events += [Deposited(i * 37) if i % 2 else Noted(f"note {i}") for i in range(1, count)]
        await store.append("s", events, expected_version=NO_STREAM)
    return events


def _set_data(path: Path, version: int, data: bytes, *, fix_checksum: bool) -> None:
    with sqlite3.connect(path) as conn:
        if fix_checksum:
            conn.execute(
                "UPDATE events SET data = ?, checksum = ? WHERE version = ?",
                (data, zlib.crc32(data), version),
            )
        else:
            conn.execute("UPDATE events SET data = ? WHERE version = ?", (data, version))
    conn.close()


def _get_data(path: Path, version: int) -> bytes:
    with sqlite3.connect(path) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE version = ?", (version,)).fetchone()
    conn.close()
    return bytes(data)


async def blob_damage_outcomes(
    path: Path, original: list[Any], trials: int, seed: int, *, truncate: bool, fix_checksum: bool
) -> tuple[int, list[str]]:
    """Damage one event's payload per trial; a violation is a read that returns without
    CorruptEvent naming that stream and version (a wrong-but-valid decode, or silence)."""
    rng = random.Random(seed)
    found: list[str] = []
    done = 0
    for _ in range(trials):
        version = rng.randrange(1, len(original) + 1)
        clean = _get_data(path, version)
        if truncate:
            damaged = clean[: rng.randrange(0, len(clean))]
        else:
            buf = bytearray(clean)
            for pos in rng.sample(range(len(buf)), min(len(buf), rng.randint(1, 8))):
                buf[pos] ^= rng.randrange(1, 256)
            damaged = bytes(buf)
        _set_data(path, version, damaged, fix_checksum=fix_checksum)
        done += 1
        try:
            async with open_store(path, registry=make_registry()) as store:
                try:
                    events = [e.event for e in await store.read_stream("s")]
                except CorruptEvent as exc:
                    if (exc.stream_id, exc.version) != ("s", version):
                        found.append(
                            f"v{version}: CorruptEvent names {exc.stream_id}/{exc.version}"
                        )
                else:
                    if events != original:
                        found.append(f"v{version}: wrong but valid decode")
                    else:
                        found.append(f"v{version}: damage read back unnoticed")
        finally:
            _set_data(path, version, clean, fix_checksum=True)
    return done, found


@pytest.mark.parametrize("truncate", [False, True], ids=["flip", "truncate"])
async def test_bad3_damaged_payloads_are_corrupt_events(
    tmp_path: Path, report: Report, truncate: bool
) -> None:
    path = tmp_path / "events.db"
    original = await _file_with_events(path, 20)
    trials = size(5, 10) if truncate else size(30, 100)
    done, found = await blob_damage_outcomes(
        path, original, trials, 3, truncate=truncate, fix_checksum=False
    )
    report.record(
        "BAD-3",
        damage="truncate" if truncate else "flip 1-8 bytes",
        undetected=len(found),
        trials=done,
    )
    assert found == []


async def test_bad3_checker_catches_damage_without_the_checksum(tmp_path: Path) -> None:
    """Broken variant: the checksum is recomputed over the damaged bytes (as if there
    were no per-event CRC): flipped bytes then decode to wrong but valid events."""
    path = tmp_path / "events.db"
    original = await _file_with_events(path, 20)
    _, found = await blob_damage_outcomes(path, original, 30, 3, truncate=False, fix_checksum=True)
    assert any("wrong but valid" in v for v in found)


_READER = """
import json, sys, anyio
from store import open_store, StoreError
from tests.store._events import make_registry
async def main():
    try:
        async with open_store(sys.argv[1], registry=make_registry()) as store:
            events = await store.read_all(limit=100_000)
            print(json.dumps({"ok": len(events)}))
    except StoreError as exc:
        print(json.dumps({"error": type(exc).__name__}))
anyio.run(main)
"""


def page_damage_outcome(path: Path, timeout: float) -> str:
    """Read the whole file in a child; 'ok:N', the typed error's name, 'crash' or 'hang'."""
    child = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    finally:
        child.kill()
        child.wait()
    if child.returncode != 0 or not out.strip():
        return "crash"
    line = json.loads(out.decode().strip().splitlines()[-1])
    return f"ok:{line['ok']}" if "ok" in line else str(line["error"])


@pytest.mark.slow
async def test_bad3_damaged_pages_fail_typed_without_crash_or_hang(
    tmp_path: Path, report: Report
) -> None:
    source = tmp_path / "source.db"
    original = await _file_with_events(source, 400)
    data = source.read_bytes()
    pages = len(data) // 4096
    rng = random.Random(11)
    outcomes: list[str] = []
    for trial in range(size(10, 50)):
        damaged = bytearray(data)
        page = rng.randrange(0, pages)
        damaged[page * 4096 : (page + 1) * 4096] = rng.randbytes(4096)
        copy = tmp_path / f"damaged-{trial}.db"
        copy.write_bytes(bytes(damaged))
        outcomes.append(page_damage_outcome(copy, timeout=60))
    typed = {"StoreCorrupted", "CorruptEvent", "UnknownEventType", "StoreError", "StoreUnavailable"}
    crashes = outcomes.count("crash") + outcomes.count("hang")
    # A read that returns every event means the page held nothing read (free space);
    # returning a different count without an error would be an undetected loss.
    undetected = sum(1 for o in outcomes if o.startswith("ok:") and o != f"ok:{len(original)}")
    report.record(
        "BAD-3",
        damage="4 KiB page",
        trials=len(outcomes),
        crashes=crashes,
        undetected=undetected,
        outcomes={o: outcomes.count(o) for o in set(outcomes)},
    )
    assert crashes == 0
    assert all(o in typed or o.startswith("ok:") for o in outcomes), outcomes
    assert undetected == 0, outcomes


def test_bad3_page_checker_sees_a_crash(tmp_path: Path) -> None:
    """Broken variant: a reader that dies (as a segfault would) is counted as a crash."""
    path = tmp_path / "x.db"
    path.write_bytes(b"")
    global _READER
    saved = _READER
    _READER = "import os; os.abort()"
    try:
        assert page_damage_outcome(path, timeout=60) == "crash"
    finally:
        _READER = saved


# -- BAD-4: oversized and deep payloads --------------------------------------------------------


async def test_bad4_event_size_limit_is_exact(tmp_path: Path, report: Report) -> None:
    limit = 1000
    async with open_store(
        tmp_path / "e.db", registry=make_registry(), max_event_bytes=limit, max_events_per_append=3
    ) as store:
        overhead = len(msgspec.msgpack.encode(Noted("")))
        fits = Noted("x" * (limit - overhead - 2))  # str8 header grows by 1 byte past 31 chars
        while len(msgspec.msgpack.encode(fits)) < limit:
            fits = Noted(fits.text + "x")
        assert len(msgspec.msgpack.encode(fits)) == limit
        await store.append("s", [fits], expected_version=NO_STREAM)
        over = Noted(fits.text + "x")
        with pytest.raises(EventTooLarge) as caught:
            await store.append("s", [over], expected_version=ANY)
        assert (caught.value.size, caught.value.limit) == (limit + 1, limit)
        with pytest.raises(EventTooLarge):
            await store.append("s", [Noted("x" * (64 * 1024 * 1024))], expected_version=ANY)
        with pytest.raises(TooManyEvents):
            await store.append("s", [Noted("a")] * 4, expected_version=ANY)
        await store.append("s", [Noted("a")] * 3, expected_version=ANY)
        assert await store.stream_version("s") == 4
    report.record("BAD-4", limit=limit, at_limit="stored", over_limit="EventTooLarge")


_DEEP = """
import json, sys, time, msgspec
from actors import CommandDecoder, InvalidCommand
from demo.bank import Account
out = {}
cases = {
    "json_deep": b"[" * 100_000 + b"]" * 100_000,
    "json_deep_small": b'{"type":"bank.deposit","account_id":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    "msgpack_array_2_32": b"\\xdd\\xff\\xff\\xff\\xff",
    "msgpack_map_2_32": b"\\xdf\\xff\\xff\\xff\\xff",
    "msgpack_deep": b"\\x91" * 100_000 + b"\\xc0",
}
for name, data in cases.items():
    fmt = "json" if name.startswith("json") else "msgpack"
    decoder = CommandDecoder(Account, format=fmt, max_bytes=1 << 20)
    start = time.perf_counter()
    try:
        decoder.decode(data)
        result = "decoded"
    except InvalidCommand as exc:
        result = "InvalidCommand"
    out[name] = [result, round((time.perf_counter() - start) * 1e6)]
print(json.dumps(out))
"""


def test_bad4_deep_and_lying_payloads_are_refused_in_a_child(report: Report) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _DEEP], cwd=ROOT, capture_output=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    results = json.loads(child.stdout)
    report.record(
        "BAD-4",
        **{f"{k}_us": v[1] for k, v in results.items()},
        crashes=0,
        escaped=sum(v[0] != "InvalidCommand" for v in results.values()),
    )
    assert {v[0] for v in results.values()} == {"InvalidCommand"}, results


def test_bad4_size_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = CommandDecoder(Account, max_bytes=100)
    calls: list[bytes] = []

    class Spy:
        def decode(self, data: bytes) -> Any:
            calls.append(data)
            raise AssertionError("decoded")

    monkeypatch.setattr(decoder, "_decoder", Spy())
    with pytest.raises(InvalidCommand, match="101 bytes is over the limit of 100"):
        decoder.decode(b" " * 101)
    assert calls == []


# -- BAD-5: hostile stream ids -----------------------------------------------------------------

HOSTILE_IDS: list[Any] = [
    "'; DROP TABLE events;--",
    "a\x00b",
    "../../etc/passwd",
    "x" * 10 * 1024,
    "emoji-\U0001f600",
    "rtl-\u202eevil",
    "lone-\udc80",
    b"bytes",
    "   ",
    "\t",
    "caf\u00e9",  # NFC
    "cafe\u0301",  # NFD
    "Case",
    "case",
    "",
    7,
    None,
]


def _schema(path: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return rows


def _must_refuse(stream_id: object) -> bool:
    """The ids a store must refuse: not a str, blank, over 256 bytes, or holding a NUL,
    a lone surrogate or a bidirectional override."""
    return (
        not isinstance(stream_id, str)
        or not stream_id.strip()
        or "\x00" in stream_id
        or "\udc80" in stream_id
        or "\u202e" in stream_id
        or len(stream_id.encode(errors="surrogatepass")) > 256
    )


async def _hostile_ids(path: Path) -> dict[str, Any]:
    """Append one event to each hostile id; read everything back."""
    async with open_store(path, registry=make_registry()) as store:
        await store.append("seed", [Noted("x")], expected_version=NO_STREAM)
    before = _schema(path)
    refused: list[object] = []
    escaped: list[str] = []
    stored: list[str] = []
    async with open_store(path, registry=make_registry()) as store:
        for stream_id in HOSTILE_IDS:
            try:
                await store.append(stream_id, [Noted(repr(stream_id))], expected_version=NO_STREAM)
            except InvalidStreamId:
                refused.append(stream_id)
                continue
            except Exception as exc:  # noqa: BLE001 - counted: only InvalidStreamId may escape
                escaped.append(f"{stream_id!r:.30}: {type(exc).__name__}")
                continue
            stored.append(stream_id)
        by_stream = {e.stream_id: e for e in await store.read_all()}
    mangled = [
        s
        for s in stored
        if s not in by_stream
        or type(by_stream[s].stream_id) is not str
        or by_stream[s].stream_id != s
        or by_stream[s].event != Noted(repr(s))
    ]
    return {
        "ids": len(HOSTILE_IDS),
        "refused": len(refused),
        "round_trip": len(stored) - len(mangled),
        "escaped": escaped,
        "mangled": len(mangled),
        "stored_but_hostile": sum(_must_refuse(s) for s in stored),
        "refused_but_fine": sum(not _must_refuse(s) for s in refused),
        "distinct_forms_kept": {"caf\u00e9", "cafe\u0301", "Case", "case"} <= set(stored),
        "schema_changed": int(_schema(path) != before),
    }


def check_hostile_ids(figures: dict[str, Any]) -> list[str]:
    """Violations of BAD-5: an error other than `InvalidStreamId`, a hostile id stored, a
    fine id refused, a stored id that reads back different, NFC/NFD or case variants
    merged, the schema touched."""
    found = [f"escaped: {e}" for e in figures["escaped"]]
    found += [
        f"{name} {figures[name]}"
        for name in ("stored_but_hostile", "refused_but_fine", "mangled", "schema_changed")
        if figures[name]
    ]
    if not figures["distinct_forms_kept"]:
        found.append("NFC/NFD or case variants were not kept as distinct streams")
    return found


async def test_bad5_hostile_stream_ids_are_refused_or_round_trip(
    tmp_path: Path, report: Report
) -> None:
    figures = await _hostile_ids(tmp_path / "events.db")
    report.record(
        "BAD-5",
        **{k: v for k, v in figures.items() if k not in ("escaped", "distinct_forms_kept")},
        escaped_errors=len(figures["escaped"]),
    )
    assert check_hostile_ids(figures) == []


async def test_bad5_the_checker_catches_a_store_without_stream_id_validation(
    tmp_path: Path, report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broken variant: stream ids reach the SQL unchecked.
    import store._sqlite as sqlite_module

    monkeypatch.setattr(
        sqlite_module.SQLiteEventStore, "_check_stream_id", lambda self, stream_id: None
    )
    violations = check_hostile_ids(await _hostile_ids(tmp_path / "events.db"))
    report.record("BAD-5", broken_variant="no stream id validation", caught=len(violations))
    assert any(v.startswith("stored_but_hostile") for v in violations)


# -- BAD-6: non-UTF-8 text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata", [{"k": "\udc80"}, {"\ud800": "v"}, {"k": b"\xff"}], ids=["value", "key", "bytes"]
)
async def test_bad6_non_utf8_metadata_is_refused_and_nothing_stored(
    tmp_path: Path, metadata: Any
) -> None:
    async with open_store(tmp_path / "e.db", registry=make_registry()) as store:
        with pytest.raises(InvalidAppend, match="metadata for stream 's'"):
            await store.append("s", [Noted("x")], expected_version=NO_STREAM, metadata=metadata)
        with pytest.raises(InvalidAppend, match="cannot be"):
            await store.append("s", [Noted("\udc80")], expected_version=NO_STREAM)
        assert await store.read_all() == []
        await store.append("s", [Noted("ok")], expected_version=NO_STREAM)


def test_bad6_non_utf8_command_bytes_are_invalid_commands() -> None:
    for body in (
        b'{"type":"bank.open_account","account_id":"\xff","owner":"a"}',
        b'{"type":"bank.open_account","account_id":"\\udc80","owner":"a"}',
    ):
        try:
            command = CommandDecoder(Account).decode(body)
        except InvalidCommand:
            continue
        # if decoded, the text must be encodable (nothing unreadable gets through)
        assert isinstance(command, OpenAccount)
        command.account_id.encode()


_ = (StoreCorrupted, StoreError)
