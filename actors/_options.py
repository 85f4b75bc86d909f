"""The limits and tuning of an actor system (`SystemOptions`), checked on creation, and
the keywords that give them (`SystemSettings`, `AggregateSettings`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, TypedDict

from actors._errors import InvalidOption
from store import StoreSettings

__all__ = [
    "AGGREGATE_FIELDS",
    "OPTION_RANGES",
    "STORE_KEYS",
    "SYSTEM_FIELDS",
    "AggregateSettings",
    "OpenSystemSettings",
    "SystemOptions",
    "SystemSettings",
    "in_range",
    "merge_options",
]


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """Limits and tuning of an actor system; every limit is finite.

    Each option has a range, checked here (`InvalidOption` names the option and its
    range); every value in it works. Counts: `mailbox_capacity`, `max_batch`,
    `max_events_per_append`, `recent_command_ids` and `load_page_size` up to 1,000,000;
    `max_queued_commands` and `max_live_actors` up to 100,000,000; `idle_actor_tasks`
    from 0 to 1,000,000; `max_attempts` and
    `max_restarts` up to 1,000; all from 1, except `max_restarts` and
    `recent_command_ids` (from 0). Seconds: `ask_timeout` from 0.001 and
    `idle_timeout` from 0, both up to a year; `restart_backoff`, `quarantine_for`,
    `max_backoff` and `grace` from 0 to 3,600. `open_system` also keeps
    `load_page_size` and `max_events_per_append` within the store's limits.

    Attributes:
        mailbox_capacity: commands waiting per actor before `tell` raises `MailboxFull`
            and `ask` waits for room.
        max_queued_commands: commands waiting across all mailboxes of the system; past
            it, a command that would wait in a mailbox is refused at once with
            `Overloaded` (an `ask` to an idle actor runs on the caller's task and is
            not queued).
        max_batch: the most commands an actor takes from its mailbox at once, and the
            most that ride at once on its appends in flight (`statistics().rides`).
        max_events_per_append: the most events one append of a batch carries.
        ask_timeout: the default timeout of `ask`, seconds.
        max_live_actors: live actors across the system; past it, the least recently
            used one is passivated.
        idle_actor_tasks: live actors across the system whose task waits for their
            next command when they run out of work; past it, an idle actor's task ends
            and the actor stays live without one (its state and mailbox only): its next
            command runs on the caller's task, or starts a task. A waiting task is
            woken faster than one is started, and an actor without one holds far
            fewer objects for the garbage collector to walk (docs/architecture.md).
        idle_timeout: seconds without a command after which an actor is passivated
            (None: only the live-actor cap passivates).
        max_attempts: tries of a command whose append conflicts with a concurrent append
            before the caller gets `TooManyAttempts`. Two processes' actors of a busy
            aggregate race at each try, so a command can lose several in a row.
        max_restarts: consecutive restarts of an actor before it is quarantined
            (`RestartLimitExceeded`).
        restart_backoff: the delay before the second restart in a row, seconds; it
            doubles per further consecutive restart, up to `max_backoff` (the first
            restart is immediate).
        quarantine_for: how long an aggregate whose load failed (or that hit
            `max_restarts`) is quarantined: it refuses commands with that error before
            the next command tries again, seconds; doubles per consecutive failure up
            to `max_backoff`.
        max_backoff: the longest restart delay or quarantine, seconds.
        recent_command_ids: command results an actor remembers (beyond them, a resent
            command id is looked up in the store).
        load_page_size: events read per page when loading or reading history.
        grace: seconds shutdown waits for mailboxes to drain before cancelling.
        gc_threshold: the garbage collector's first threshold while the system is open
            (`gc.set_threshold`'s first argument), raised to at least this for the
            whole process and put back when the last open system closes; None leaves
            the collector alone. From 700 (Python's default) to 10,000,000.
        follow: whether the system's bus follows the commits of other processes on
            the same store, so its projections and process managers see them and its
            live actors reload streams others wrote (a bool; see docs/deployment.md).
            Off, one process alone on its store saves the follower's idle cost;
            answers stay right either way (an unwritten answer is confirmed against
            the stream's version in the store).
        decide_in_store: whether a command whose append lost a race (another
            process appended to its stream after the actor decided) is decided again
            by the store's writer on the events it missed, rather than refused there
            and decided again after a read (a bool; SQLite's thread writer does this
            inside its write transaction; PostgreSQL's before it sends the batch, on
            what other processes' notifications announced, and after its batch
            refused the append, for the next batch; the writer process ignores it;
            see docs/architecture.md). `decide` and `evolve` then run on the
            store's writer thread (or the event loop) too, and must be pure, as
            always: no I/O, no shared mutable state.
    """

    mailbox_capacity: int = 1024
    max_queued_commands: int = 10_000
    max_batch: int = 512
    max_events_per_append: int = 5_000
    ask_timeout: float = 30.0
    max_live_actors: int = 100_000
    idle_actor_tasks: int = 1_000
    idle_timeout: float | None = 600.0
    max_attempts: int = 10
    max_restarts: int = 5
    restart_backoff: float = 0.05
    quarantine_for: float = 0.5
    max_backoff: float = 10.0
    recent_command_ids: int = 64
    load_page_size: int = 1_000
    grace: float = 10.0
    gc_threshold: int | None = 20_000
    follow: bool = True
    decide_in_store: bool = True

    def __post_init__(self) -> None:
        for name in ("follow", "decide_in_store"):
            if type(getattr(self, name)) is not bool:
                raise InvalidOption(name, getattr(self, name), "a bool")
        for name, (low, high) in OPTION_RANGES.items():
            value = getattr(self, name)
            if value is None and name in NONE_ALLOWED:
                continue
            whole = isinstance(low, int)
            kind = int if whole else int | float
            if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
                expected = in_range(low, high, none_allowed=name in NONE_ALLOWED)
                raise InvalidOption(name, value, expected)


def in_range(low: float, high: float, *, none_allowed: bool = False, why: str = "") -> str:
    """What an option with range `low`..`high` takes, as `InvalidOption` says it: "an
    int from 1 to 1000 (why) or None"."""
    kind = "an int" if isinstance(low, int) else "a number of seconds"
    bound = f" ({why})" if why else ""
    extra = " or None" if none_allowed else ""
    return f"{kind} from {low} to {high}{bound}{extra}"


_YEAR = 365 * 24 * 3600.0
OPTION_RANGES: dict[str, tuple[int, int] | tuple[float, float]] = {
    # Every value in these ranges works (tests/actors/test_options.py opens a system at
    # each end and runs commands through it); the upper ends keep memory and timers finite.
    "mailbox_capacity": (1, 1_000_000),
    "max_queued_commands": (1, 100_000_000),
    "max_batch": (1, 1_000_000),
    "max_events_per_append": (1, 1_000_000),
    "max_live_actors": (1, 100_000_000),
    "idle_actor_tasks": (0, 1_000_000),
    "max_attempts": (1, 1_000),
    "max_restarts": (0, 1_000),
    "recent_command_ids": (0, 1_000_000),
    "load_page_size": (1, 1_000_000),
    "ask_timeout": (0.001, _YEAR),
    "idle_timeout": (0.0, _YEAR),
    "restart_backoff": (0.0, 3600.0),
    "quarantine_for": (0.0, 3600.0),
    "max_backoff": (0.0, 3600.0),
    "grace": (0.0, 3600.0),
    "gc_threshold": (700, 10_000_000),
}
NONE_ALLOWED: Final = frozenset({"idle_timeout", "gc_threshold"})
"""The options that take None too (no idle timeout; the collector left alone)."""


SYSTEM_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SystemOptions))


class SystemSettings(TypedDict, total=False):
    """The `SystemOptions` fields as keywords, each optional: the type of `open_system`'s
    `**settings` (`open_system(path, ask_timeout=5.0)`). The keys are the fields, one
    for one; the values are checked by `SystemOptions`."""

    mailbox_capacity: int
    max_queued_commands: int
    max_batch: int
    max_events_per_append: int
    ask_timeout: float
    max_live_actors: int
    idle_actor_tasks: int
    idle_timeout: float | None
    max_attempts: int
    max_restarts: int
    restart_backoff: float
    quarantine_for: float
    max_backoff: float
    recent_command_ids: int
    load_page_size: int
    grace: float
    gc_threshold: int | None
    follow: bool
    decide_in_store: bool


class AggregateSettings(TypedDict, total=False):
    """The `SystemOptions` fields one aggregate type may set apart from the system's
    (`system.aggregates(Account, mailbox_capacity=64)`): those of its mailboxes, its
    batches, its retries and restarts, and whether the store decides its commands again
    (`decide_in_store`). The others (`grace`, `follow`, the system-wide
    caps, `idle_timeout`, `gc_threshold`) are the whole system's and go to `open_system`."""

    mailbox_capacity: int
    max_batch: int
    max_events_per_append: int
    ask_timeout: float
    max_attempts: int
    max_restarts: int
    restart_backoff: float
    quarantine_for: float
    max_backoff: float
    recent_command_ids: int
    load_page_size: int
    decide_in_store: bool


AGGREGATE_FIELDS: Final = AggregateSettings.__optional_keys__


# TypedDict named again as a base: on Python < 3.12 the API reference (pdoc) cannot
# otherwise tell where the inherited keys come from.
class OpenSystemSettings(SystemSettings, StoreSettings, TypedDict, total=False):
    """The keywords of `open_system`: the `SystemOptions` fields (`SystemSettings`), and
    the store's options, which go to `open_store` when `open_system` opens the store
    from a path or URL (the `StoreOptions` fields, `StoreSettings`, and PostgreSQL's
    `schema`). `max_events_per_append` is one key, `SystemOptions`' (its batches'
    appends): the store keeps its own default, which `open_system` checks it against."""

    schema: str | None


STORE_KEYS: Final = OpenSystemSettings.__optional_keys__ - SYSTEM_FIELDS
"""The keywords of `open_system` that go to the store."""


RENAMED: Final = {"park_for": "quarantine_for"}
"""Options renamed before the first release: an old name is refused, naming the new."""


def merge_options(
    base: SystemOptions,
    settings: Mapping[str, object],
    allowed: Collection[str],
    *,
    where: str,
    elsewhere: str = "",
) -> SystemOptions:
    """`base` with `settings` (keywords of `allowed`) put in, checked by `SystemOptions`.

    Raises:
        InvalidOption: a keyword not in `allowed` (naming it and the ones there are;
            `elsewhere` says where the system's others go), or a value out of range.
    """
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        name = unknown[0]
        known = ", ".join(sorted(allowed))
        renamed = f"it is {RENAMED[name]} now; " if name in RENAMED else ""
        raise InvalidOption(
            name,
            settings[name],
            f"{renamed}the options are {known}{elsewhere}",
            where,
            unknown=True,
        )
    return dataclasses.replace(base, **settings) if settings else base  # type: ignore[arg-type]
