"""Security checks (SEC-1, SEC-2, SEC-6): static scans of the source and the limits of
every options class. Each scan is a plain function returning its violations, and each
has a self-test on a small bad source proving it finds what it looks for."""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
import structlog
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    SECRET,
    ActorError,
    Aggregate,
    Command,
    CommandDecoder,
    Event,
    InvalidCommand,
    Rejected,
    SystemOptions,
    open_system,
)
from actors._process_manager import ProcessManagerOptions
from bus._bus import BusOptions
from readmodels._projection import ProjectionOptions
from store import NO_STREAM, EventRegistry, InvalidStreamId, StoreOptions, open_store
from store._codec import UpcasterFailed
from store._sqlite_rows import (
    _INSERT_COMMANDS,
    _INSERT_EVENTS,
    _INSERT_PLAIN_EVENTS,
    _ROWS_PER_STATEMENT,
)
from tests.reliability._report import ROOT, Report, size

PACKAGES = ("store", "bus", "actors", "readmodels", "demo")
EVERYWHERE = (*PACKAGES, "examples", "bench")
# Names that carry SQL handed over from a literal elsewhere, each with its reason:
# `statement` iterates the module constant _MIGRATIONS (store/_schema.py); `write.sql`
# is the literal a store method passed to _enqueue_write (store/_sqlite.py).
# Names that carry statements built elsewhere: a migration's `statement`s and the
# PostgreSQL store's `record` are built by functions of the one text they splice in, a
# schema name checked and quoted as an identifier (`store._postgres_schema.quote_ident`).
PASSED_THROUGH = frozenset({"statement", "write.sql", "record"})
_SQL_METHODS = frozenset({"execute", "executemany", "executescript"})


def _sources(roots: tuple[str, ...]) -> list[Path]:
    return sorted(p for root in roots for p in (ROOT / root).rglob("*.py"))


def _module_constants(tree: ast.Module) -> set[str]:
    """Names bound at module level to literals only (strings, ints, tables of them)."""
    names: set[str] = set()
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if (
            value is None
            or not all(
                isinstance(n, ast.Constant) and isinstance(n.value, str | int)
                for n in ast.walk(value)
                if isinstance(n, ast.Constant)
            )
            or any(isinstance(n, ast.JoinedStr | ast.BinOp | ast.Call) for n in ast.walk(value))
        ):
            continue
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            assert isinstance(node, ast.AnnAssign)
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def sql_violations(source: str, name: str = "<source>") -> list[str]:
    """SEC-1: calls of execute/executemany/executescript whose SQL is not a string
    literal or a module-level string constant (so never an f-string, %, .format or +).
    A plain parameter name passed through (as in a helper taking `sql`) is allowed only
    when it is a parameter of the enclosing function, whose callers are then scanned."""
    tree = ast.parse(source)
    constants = _module_constants(tree)
    found: list[str] = []

    def visit(node: ast.AST, params: frozenset[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            params = params | {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SQL_METHODS
            and node.args
        ):
            sql = node.args[0]
            if isinstance(sql, ast.Subscript) and isinstance(sql.value, ast.Name):
                sql = sql.value  # a lookup in a module-constant table of statements
            ok = (
                (isinstance(sql, ast.Constant) and isinstance(sql.value, str))
                or ast.unparse(sql) in PASSED_THROUGH
                or (isinstance(sql, ast.Name) and (sql.id in constants or sql.id in params))
                or (isinstance(sql, ast.Attribute) and sql.attr.isupper())
            )
            if not ok:
                found.append(f"{name}:{node.lineno}: {ast.unparse(sql)[:60]}")
        for child in ast.iter_child_nodes(node):
            visit(child, params)

    visit(tree, frozenset())
    return found


_BANNED_MODULES = frozenset({"pickle", "marshal", "shelve", "cPickle", "dill"})
_BANNED_CALLS = frozenset({"eval", "exec"})


def dangerous_calls(source: str, name: str = "<source>") -> list[str]:
    """SEC-2: imports of pickle/marshal/shelve, eval/exec calls, yaml.load, shell=True."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            found += [
                f"{name}:{node.lineno}: import {m}"
                for m in mods
                if m.split(".")[0] in _BANNED_MODULES
            ]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _BANNED_CALLS:
                found.append(f"{name}:{node.lineno}: {func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "load"
                and ast.unparse(func.value) == "yaml"
            ):
                found.append(f"{name}:{node.lineno}: yaml.load()")
            for kw in node.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{name}:{node.lineno}: shell={ast.unparse(kw.value)}")
    return found


def untyped_decoders(source: str, name: str = "<source>") -> list[str]:
    """SEC-2: msgspec decoders built without a type or with `Any` (untrusted bytes must
    decode into a declared shape). Calls of msgspec.json.decode/msgpack.decode without
    `type=` count too."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        text = ast.unparse(node.func)
        if text.endswith(("json.Decoder", "msgpack.Decoder")):
            typ = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg == "type"), None)
            )
            if typ is None or ast.unparse(typ) in ("Any", "typing.Any", "object"):
                found.append(
                    f"{name}:{node.lineno}: {text}({'' if typ is None else ast.unparse(typ)})"
                )
        elif text.endswith(("json.decode", "msgpack.decode")) and text.startswith("msgspec"):
            typ = next((k.value for k in node.keywords if k.arg == "type"), None)
            if typ is None or ast.unparse(typ) in ("Any", "typing.Any", "object"):
                found.append(f"{name}:{node.lineno}: {text} without a type")
    return found


def _scan(check: Any, roots: tuple[str, ...]) -> tuple[int, list[str]]:
    files = _sources(roots)
    found: list[str] = []
    for path in files:
        found += check(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return len(files), found


def test_sec1_sql_is_only_literals_or_constants(report: Report) -> None:
    files, found = _scan(sql_violations, PACKAGES)
    report.record("SEC-1", files=files, violations=len(found))
    assert files > 20
    assert found == []


# One row of placeholders, then the same row repeated: nothing else may be repeated.
_MULTI_ROW = re.compile(r"INSERT INTO \w+ \([\w, ]+\) VALUES (\((\?, )*\?\))(, \1)*")


def test_sec1_multi_row_statements_repeat_only_placeholders() -> None:
    """The batch inserts are the one place SQL text is assembled (at import): the scan
    above accepts them as a table handed to a helper, so their text is checked here."""
    tables = (_INSERT_EVENTS, _INSERT_PLAIN_EVENTS, _INSERT_COMMANDS)
    for table in tables:
        assert sorted(table) == sorted(_ROWS_PER_STATEMENT)
        for rows, sql in table.items():
            match = _MULTI_ROW.fullmatch(sql)
            assert match is not None, sql[:80]
            assert sql.count(match.group(1)) == rows
    assert not _MULTI_ROW.fullmatch("INSERT INTO t (a) VALUES (?), ('x')")


def test_sec1_scan_finds_built_sql() -> None:
    bad = (
        "TABLE = 'events'\n"
        "def f(conn, name):\n"
        "    conn.execute(f'SELECT * FROM {name}')\n"
        "    conn.execute('SELECT %s' % name)\n"
        "    conn.executemany('SELECT {}'.format(name), [])\n"
        "    conn.executescript('DROP ' + name)\n"
        "    conn.execute(TABLE)\n"
        "    conn.execute('SELECT 1')\n"
    )
    assert len(sql_violations(bad)) == 4


def test_sec2_no_pickle_eval_exec_shell_or_untyped_decoders(report: Report) -> None:
    files, dangerous = _scan(dangerous_calls, EVERYWHERE)
    _, untyped = _scan(untyped_decoders, EVERYWHERE)
    report.record("SEC-2", files=files, dangerous=len(dangerous), untyped_decoders=len(untyped))
    assert dangerous == []
    assert untyped == []


def test_sec2_scans_find_the_bad_things() -> None:
    bad = (
        "import pickle\nfrom marshal import loads\nimport shelve\nimport yaml, subprocess\n"
        "eval('1')\nexec('x=1')\nyaml.load(s)\nsubprocess.run('ls', shell=True)\n"
    )
    assert len(dangerous_calls(bad)) == 7
    decoders = (
        "import msgspec\nfrom typing import Any\n"
        "a = msgspec.json.Decoder()\nb = msgspec.msgpack.Decoder(Any)\n"
        "c = msgspec.json.decode(raw)\nd = msgspec.json.Decoder(dict[str, int])\n"
    )
    assert len(untyped_decoders(decoders)) == 3


# -- SEC-6: every limit finite by default -------------------------------------------------

OPTIONS: tuple[type[Any], ...] = (
    StoreOptions,
    SystemOptions,
    BusOptions,
    ProjectionOptions,
    ProcessManagerOptions,
)
# Defaults that may be None, each with the reason (a reviewer checks this list).
UNBOUNDED_ALLOWED = {
    # the process manager's asks use the system's ask_timeout when None
    ("ProcessManagerOptions", "ask_timeout"),
    # None turns idle passivation off; the actor count is still capped by max_live_actors
    ("SystemOptions", "idle_timeout"),
}
_NOT_LIMITS = frozenset(
    {"synchronous", "writer", "follow", "lease", "loop_reads", "decide_in_store"}
)  # switches, not limits


def unbounded_defaults(classes: tuple[type[Any], ...]) -> list[str]:
    """SEC-6: option fields whose default is not a finite number > 0."""
    found: list[str] = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in _NOT_LIMITS or (cls.__name__, f.name) in UNBOUNDED_ALLOWED:
                continue
            value: Any = f.default
            ok = type(value) in (int, float) and 0 < value < math.inf
            if not ok:
                found.append(f"{cls.__name__}.{f.name} = {value!r}")
    return found


def test_sec6_every_size_queue_and_timeout_limit_is_finite(report: Report) -> None:
    fields = sum(len(dataclasses.fields(cls)) for cls in OPTIONS)
    found = unbounded_defaults(OPTIONS)
    report.record("SEC-6", classes=len(OPTIONS), fields=fields, unbounded=len(found))
    assert found == []


def test_sec6_check_finds_an_unbounded_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Loose:
        queue_size: int = 0
        timeout: float = math.inf
        max_items: int | None = None
        fine: int = 10

    assert len(unbounded_defaults((Loose,))) == 3


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_sec6_options_refuse_unbounded_values(cls: type[Any]) -> None:
    """Options classes with validation refuse 0 for a size limit."""
    name = next(
        f.name
        for f in dataclasses.fields(cls)
        if type(f.default) is int and f.name not in _NOT_LIMITS
    )
    with pytest.raises((ValueError, TypeError)):
        cls(**{name: 0})


# -- SEC-3: fuzz of the decode paths (no extra fuzzing dependency) ---------------------------

_FUZZ = settings(
    max_examples=size(300, 20_000),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class _Point(msgspec.Struct, frozen=True, tag="fuzz.point"):
    x: int
    label: str = ""


def _fuzz_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(_Point, schema_version=3)
    registry.upcaster("fuzz.point", 1, lambda d: {"x": d["x"], "label": str(d.get("l", ""))})
    registry.upcaster("fuzz.point", 2, lambda d: {**d, "x": int(d["x"])})
    return registry


def fuzz_decode_escapes(decode: Any, inputs: list[tuple[int, bytes]]) -> list[str]:
    """Anything but the framework's typed decode errors escaping the registry decode."""
    typed = (
        LookupError,
        UpcasterFailed,
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        TypeError,
    )
    found = []
    for version, data in inputs:
        try:
            decode("fuzz.point", version, data)
        except typed:
            continue
        except Exception as exc:  # noqa: BLE001 - what the checker counts
            found.append(f"v{version} {data[:20]!r}: {type(exc).__name__}")
    return found


@_FUZZ
@given(
    st.integers(0, 4),
    st.binary(max_size=80)
    | st.builds(
        msgspec.msgpack.encode,
        st.dictionaries(
            st.sampled_from(["x", "l", "label", "y"]),
            st.integers().filter(lambda n: -(2**63) <= n < 2**64)
            | st.text(max_size=5)
            | st.none()
            | st.floats(),
            max_size=4,
        ),
    ),
)
def test_sec3_event_decode_of_arbitrary_bytes_raises_only_typed_errors(
    version: int, data: bytes
) -> None:
    assert fuzz_decode_escapes(_fuzz_registry().decode, [(version, data)]) == []


def test_sec3_checker_sees_an_untyped_escape() -> None:
    """Broken variant: a decode path that lets a raw KeyError-free crash through."""

    def broken(tag: str, version: int, data: bytes) -> Any:
        raise ZeroDivisionError

    assert len(fuzz_decode_escapes(broken, [(1, b"")])) == 1


@_FUZZ
@given(st.text(max_size=300) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
async def test_sec3_stream_id_validation_raises_only_invalid_stream_id(stream_id: str) -> None:
    async with open_store(":memory:", registry=_fuzz_registry()) as store:
        try:
            await store.append(stream_id, [_Point(1)], expected_version=NO_STREAM)
        except InvalidStreamId:
            assert await store.read_all() == []
            return
        [event] = await store.read_all()
        assert event.stream_id == stream_id


# -- SEC-4: secret fields never reach logs, stderr or error messages -------------------------

CANARY = "CANARY-7f3a"


class Charge(Command, tag="sec.charge"):
    card: Annotated[str, SECRET]
    amount: int


class Charged(Event, tag="sec.charged"):
    card: Annotated[str, SECRET]
    amount: int


class Refused(Rejected):
    pass


class Till(Aggregate[int, Charge, Charged]):
    initial = 0
    category = "till"

    def decide(self, state: int, command: Charge) -> list[Charged]:
        if command.amount < 0:
            raise Refused(f"refused {command!r}")
        if command.amount == 13:
            raise RuntimeError(f"poison {command!r}")
        return [Charged(command.card, command.amount)]

    def evolve(self, state: int, event: Charged) -> int:
        return state + event.amount


def canary_leaks(texts: list[str]) -> int:
    """SEC-4 checker: occurrences of the canary in captured text."""
    return sum(text.count(CANARY) for text in texts)


async def _run_with_canary(tmp_path: Path) -> list[str]:
    texts: list[str] = []
    decoder = CommandDecoder(Till)
    with structlog.testing.capture_logs() as logs:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
        try:
            async with open_system(
                tmp_path / "till.db", max_attempts=1, max_restarts=100
            ) as system:
                till = system.aggregates(Till)
                for amount in (5, -1, 13, 7):
                    try:
                        result = await till.ask("t", Charge(CANARY, amount))
                        texts.append(repr(result))
                    except (Rejected, ActorError) as exc:
                        texts += [str(exc), repr(exc), repr(exc.__cause__)]
                for body in (
                    b'{"type":"sec.charge","card":"' + CANARY.encode() + b'","amount":1.5}',
                    b'{"type":"sec.charge","card":"' + CANARY.encode() + b'","amount":1,"x":0}',
                ):
                    try:
                        decoder.decode(body)
                    except InvalidCommand as exc:
                        texts.append(str(exc))
                texts += [repr(e) for e in await till.history("t")]
        finally:
            structlog.reset_defaults()
    texts += [repr(entry) for entry in logs]
    return texts


async def test_sec4_a_secret_field_never_shows_in_logs_errors_or_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], report: Report
) -> None:
    texts = await _run_with_canary(tmp_path)
    out, err = capfd.readouterr()
    leaks = canary_leaks([*texts, out, err])
    report.record("SEC-4", texts=len(texts), leaks=leaks)
    assert len(texts) > 8
    assert leaks == 0
    # stored as usual: the value is only hidden, not lost
    async with open_store(tmp_path / "till.db", registry=EventRegistry([Charged])) as store:
        assert {e.event.card for e in await store.read_all()} == {CANARY}


def test_sec4_checker_sees_a_leak_without_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken variant: the default repr of msgspec structs shows the secret."""
    monkeypatch.setattr(Charge, "__repr__", msgspec.Struct.__repr__)
    assert canary_leaks([repr(Charge(CANARY, 1))]) == 1
