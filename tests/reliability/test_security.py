"""Security checks (SEC-1, SEC-2, SEC-4, SEC-5, SEC-6): SQL built from parameters only, no
unsafe deserialisation or code evaluation, no payload in the logs, private database
files, and a finite default for every limit. Each scan proves it can fail on a small
synthetic source that breaks its rule."""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import re
import stat
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from actors import (
    Aggregate,
    Command,
    CommandFailed,
    Event,
    ProcessManagerOptions,
    Rejected,
    SystemOptions,
    open_system,
)
from bus import BusOptions
from readmodels import Projection, ProjectionOptions
from store import IdempotencyConflict, RecordedEvent, StoreOptions, open_store
from tests.reliability._report import ROOT, Report

SCANNED = ("store", "bus", "actors", "readmodels", "demo", "examples", "bench")


def sources() -> list[Path]:
    return sorted(p for package in SCANNED for p in (ROOT / package).rglob("*.py"))


# -- SEC-1: SQL is parameterised ----------------------------------------------------------

_SQL_WORD = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|REPLACE|VACUUM|ATTACH)\s"
)
_EXECUTE = {"execute", "executemany", "executescript"}


def _literal_text(node: ast.AST) -> str:
    return " ".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


def _module_constants(tree: ast.Module) -> dict[str, ast.AST]:
    constants: dict[str, ast.AST] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value
        elif (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.value is not None
        ):
            constants[statement.target.id] = statement.value
    return constants


def _is_literal(node: ast.AST) -> bool:
    """A str literal, or a tuple/dict of them (a constant table of statements)."""
    match node:
        case ast.Constant(value=str()):
            return True
        case ast.Tuple(elts=items) | ast.List(elts=items):
            return all(_is_literal(item) for item in items)
        case ast.Dict(values=values):
            return all(v is not None and _is_literal(v) for v in values)
    return False


def sql_findings(source: str, name: str) -> list[str]:
    """String-built SQL in `source`: an f-string, `%`, `+` or `.format` whose literal
    parts hold an SQL keyword, and an execute call whose statement is neither a literal,
    a module constant holding literals, nor a plain name passed through (a parameter)."""
    tree = ast.parse(source, name)
    constants = _module_constants(tree)
    found = []
    for node in ast.walk(tree):
        built = (
            isinstance(node, ast.JoinedStr)
            or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod))
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("format", "join")
            )
        )
        if built and _SQL_WORD.search(_literal_text(node)):
            found.append(f"{name}:{getattr(node, 'lineno', 0)}: SQL built from strings")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _EXECUTE
            and node.args
        ):
            statement = node.args[0]
            match statement:
                case ast.Constant(value=str()):
                    continue
                case ast.Name(id=ident) if ident in constants:
                    if not _is_literal(constants[ident]):
                        found.append(f"{name}:{node.lineno}: {ident} is not a literal")
                case ast.Subscript(value=ast.Name(id=ident)) if ident in constants:
                    if not _is_literal(constants[ident]):
                        found.append(f"{name}:{node.lineno}: {ident} is not a literal table")
                case ast.Name() | ast.Attribute():
                    continue  # a parameter or field passed through: its origin is scanned
                case _:
                    found.append(f"{name}:{node.lineno}: {ast.unparse(statement)} as SQL")
    return found


def test_sec1_sql_is_built_with_parameters_only(report: Report) -> None:
    findings = [f for path in sources() for f in sql_findings(path.read_text(), str(path))]
    report.record("SEC-1", files=len(sources()), findings=len(findings))
    assert findings == []


@pytest.mark.parametrize(
    "bad",
    [
        'conn.execute(f"SELECT * FROM events WHERE stream_id = {sid}")',
        'conn.execute("SELECT * FROM events WHERE stream_id = %s" % sid)',
        'conn.execute("DELETE FROM events WHERE stream_id = \'" + sid + "\'")',
        'conn.execute("DROP TABLE {}".format(name))',
        'SQL = "SELECT " + column\nconn.execute(SQL)',
        "conn.execute(make_sql(sid))",
    ],
)
def test_sec1_the_scan_finds_string_built_sql(bad: str) -> None:
    assert sql_findings(bad, "bad.py") != []


# -- SEC-2: no unsafe deserialisation, no evaluation ---------------------------------------

_BANNED_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "yaml"}
_BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
# Untyped decoding (`Any`) is refused; a raw dict of stored fields is how upcasters see
# an old event shape (the store's own file, a checksum already verified).
_ALLOWED_UNTYPED = {("store/_codec.py", "dict[str, Any]")}


def unsafe_findings(source: str, name: str) -> list[str]:
    """Imports of pickle-like modules, eval/exec, shell=True, and msgspec decoders with
    no type or an `Any` type."""
    tree = ast.parse(source, name)
    found = []
    for node in ast.walk(tree):
        match node:
            case ast.Import(names=names):
                found += [
                    f"{name}:{node.lineno}: import {a.name}"
                    for a in names
                    if a.name.split(".")[0] in _BANNED_MODULES
                ]
            case ast.ImportFrom(module=str(module)) if module.split(".")[0] in _BANNED_MODULES:
                found.append(f"{name}:{node.lineno}: from {module} import")
            case ast.Call(func=ast.Name(id=func)) if func in _BANNED_CALLS:
                found.append(f"{name}:{node.lineno}: {func}()")
            case ast.Call(func=ast.Attribute(attr="system", value=ast.Name(id="os"))):
                found.append(f"{name}:{node.lineno}: os.system()")
            case ast.Call(keywords=keywords) if any(
                k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                for k in keywords
            ):
                found.append(f"{name}:{node.lineno}: shell=")
            case ast.Call(func=ast.Attribute(attr="Decoder" | "decode" as attr, value=module)) if (
                ast.unparse(module) in ("msgspec.json", "msgspec.msgpack")
            ):
                typed = node.args[0] if attr == "Decoder" and node.args else None
                typed = typed or next((k.value for k in node.keywords if k.arg == "type"), None)
                text = ast.unparse(typed) if typed is not None else "Any"
                if "Any" in text and (name.replace(os.sep, "/"), text) not in _ALLOWED_UNTYPED:
                    found.append(f"{name}:{node.lineno}: untyped msgspec decode ({text})")
    return found


def test_sec2_nothing_is_unpickled_or_evaluated(report: Report) -> None:
    findings = [
        f
        for path in sources()
        for f in unsafe_findings(path.read_text(), str(path.relative_to(ROOT)))
    ]
    report.record("SEC-2", files=len(sources()), findings=len(findings))
    assert findings == []


@pytest.mark.parametrize(
    "bad",
    [
        "import pickle",
        "from marshal import loads",
        "import yaml.loader",
        "eval(text)",
        "exec(code)",
        "subprocess.run(cmd, shell=True)",
        "os.system(cmd)",
        "msgspec.json.decode(body)",
        "msgspec.msgpack.Decoder(Any)",
        "msgspec.json.decode(body, type=dict[str, Any])",
    ],
)
def test_sec2_the_scan_finds_unsafe_code(bad: str) -> None:
    assert unsafe_findings(bad, "bad.py") != []


# -- SEC-4: payloads never reach the logs --------------------------------------------------

CANARY = "CANARY-7f3a"


class Note(Command, tag="sec.note"):
    text: str
    mode: str = "ok"


class Noted(Event, tag="sec.noted"):
    text: str


class Refused(Rejected):
    """A refusal whose message names no payload."""


class Notebook(Aggregate[int, Note, Noted]):
    category = "notebook"
    initial = 0

    def decide(self, state: int, cmd: Note) -> list[Noted]:
        if cmd.mode == "refuse":
            raise Refused("refused by the notebook")
        if cmd.mode == "crash":
            raise RuntimeError("the notebook crashed")
        return [Noted(text=cmd.text)]

    def evolve(self, state: int, event: Noted) -> int:
        return state + 1


class Poisoned(Projection[list[str]]):
    name = "sec.poisoned"
    event_types = (Noted,)

    def initial_view(self) -> list[str]:
        return []

    def apply(self, view: list[str], recorded: RecordedEvent) -> list[str]:
        raise ValueError("this projection fails on every event")


async def test_sec4_no_payload_reaches_the_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], report: Report
) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(0), cache_logger_on_first_use=False
    )
    try:
        with capture_logs() as logs:
            async with open_system(tmp_path / "sec.db") as system:
                notes = system.aggregates(Notebook)
                poisoned = await system.project(Poisoned())
                result = await notes.ask("n1", Note(text=CANARY), command_id="c1")
                with pytest.raises(Refused):
                    await notes.ask("n1", Note(text=CANARY, mode="refuse"))
                with pytest.raises(CommandFailed):
                    await notes.ask("n1", Note(text=CANARY, mode="crash"))
                with pytest.raises(IdempotencyConflict):
                    await notes.ask("n1", Note(text=CANARY + "!"), command_id="c1")
                await poisoned.wait_for(result.position, timeout=30)
                assert len(poisoned.dead_letters()) == 1
    finally:
        structlog.reset_defaults()
    captured = capsys.readouterr()
    text = repr(logs) + captured.out + captured.err
    report.record("SEC-4", log_records=len(logs), canary_occurrences=text.count(CANARY))
    assert logs  # the failures above were logged: the check looked at real records
    assert CANARY not in text


# -- SEC-5: private files --------------------------------------------------------------------


def private_modes(directory: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in directory.iterdir()
        if p.name.startswith("p.db")
    }


async def test_sec5_database_files_are_private_under_a_permissive_umask(
    tmp_path: Path, report: Report
) -> None:
    old = os.umask(0o022)
    try:
        async with open_store(tmp_path / "p.db") as store:
            await store.stream_version("s")
            modes = private_modes(tmp_path)
    finally:
        os.umask(old)
    report.record("SEC-5", files=len(modes), private=sum(m == 0o600 for m in modes.values()))
    assert set(modes) == {"p.db", "p.db-wal", "p.db-shm"}
    assert set(modes.values()) == {0o600}


# -- SEC-6: every limit is finite by default -------------------------------------------------

_NOT_LIMITS = {
    # Choices and switches, not sizes or durations.
    "synchronous",
    "idle_timeout",  # None means "only the live-actor cap passivates" (itself finite)
}


# None here means "inherit a finite limit from elsewhere", named in the docstring.
_INHERITED = {"ProcessManagerOptions.ask_timeout"}  # the system's ask_timeout


def unbounded_defaults(options: object) -> list[str]:
    """Fields of a default options object that are numeric limits and not finite > 0
    (None counts as unbounded)."""
    bad = []
    for field in dataclasses.fields(options):  # type: ignore[arg-type]
        if field.name in _NOT_LIMITS:
            continue
        value = getattr(options, field.name)
        if value is None and f"{type(options).__name__}.{field.name}" in _INHERITED:
            continue
        if isinstance(value, bool | str):
            continue
        if (
            value is None
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (value <= 0 and not field.name.endswith(("delay", "backoff", "retries")))
        ):
            bad.append(f"{type(options).__name__}.{field.name}={value!r}")
    return bad


def test_sec6_every_default_limit_is_finite(report: Report) -> None:
    defaults = [
        StoreOptions(),
        SystemOptions(),
        BusOptions(),
        ProjectionOptions(),
        ProcessManagerOptions(),
    ]
    bad = [b for options in defaults for b in unbounded_defaults(options)]
    checked = sum(len(dataclasses.fields(o)) for o in defaults)  # type: ignore[arg-type,misc]
    report.record("SEC-6", fields=checked, unbounded=len(bad))
    assert bad == []


def test_sec6_the_check_finds_an_unbounded_default() -> None:
    @dataclasses.dataclass
    class Loose:
        queue_size: int | None = None
        timeout: float = math.inf
        capacity: int = 16

    assert unbounded_defaults(Loose()) == ["Loose.queue_size=None", "Loose.timeout=inf"]
