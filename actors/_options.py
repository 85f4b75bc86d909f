"""The limits and tuning of an actor system (`SystemOptions`), checked on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from actors._errors import InvalidOption

__all__ = ["OPTION_RANGES", "SYSTEM_FIELDS", "SystemOptions"]


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """Limits and tuning of an actor system; every limit is finite.

    Each option has a range, checked here (`InvalidOption` names the option and its
    range); every value in it works. Counts: `mailbox_capacity`, `max_batch`,
    `max_events_per_append`, `recent_command_ids` and `load_page_size` up to 1,000,000;
    `max_queued_commands` and `max_live_actors` up to 100,000,000; `max_attempts` and
    `max_restarts` up to 1,000; all from 1, except `max_restarts` and
    `recent_command_ids` (from 0). Seconds: `ask_timeout` from 0.001 and
    `idle_timeout` from 0, both up to a year; `restart_backoff`, `park_for`,
    `max_backoff` and `grace` from 0 to 3,600. `open_system` also keeps
    `load_page_size` and `max_events_per_append` within the store's limits.

    Attributes:
        mailbox_capacity: commands waiting per actor before `tell` raises `MailboxFull`
            and `ask` waits for room.
        max_queued_commands: commands waiting across all mailboxes of the system; past
            it, a command that would wait in a mailbox is refused at once with
            `Overloaded` (an `ask` to an idle actor runs on the caller's task and is
            not queued).
        max_batch: the most commands an actor takes from its mailbox at once.
        max_events_per_append: the most events one append of a batch carries.
        ask_timeout: the default timeout of `ask`, seconds.
        max_live_actors: live actors across the system; past it, the least recently
            used one is passivated.
        idle_timeout: seconds without a command after which an actor is passivated
            (None: only the live-actor cap passivates).
        max_attempts: tries of a command whose append conflicts with another writer
            before the caller gets `TooManyAttempts`.
        max_restarts: consecutive restarts of an actor before it is parked
            (`RestartLimitExceeded`).
        restart_backoff: the delay before the second restart in a row, seconds; it
            doubles per further consecutive restart, up to `max_backoff` (the first
            restart is immediate).
        park_for: how long an aggregate whose load failed (or that hit
            `max_restarts`) refuses commands with that error before the next command
            tries again, seconds; doubles per consecutive failure up to `max_backoff`.
        max_backoff: the longest restart delay or parking time, seconds.
        recent_command_ids: command results an actor remembers (beyond them, a resent
            command id is looked up in the store).
        load_page_size: events read per page when loading or reading history.
        grace: seconds shutdown waits for mailboxes to drain before cancelling.
        follow: whether the system's bus follows the commits of other processes on
            the same store, so its projections and process managers see them and its
            live actors reload streams others wrote (a bool; see docs/deployment.md).
            Off, one process alone on its store saves the follower's idle cost;
            answers stay right either way (an unwritten answer is confirmed against
            the stream's version in the store).
    """

    mailbox_capacity: int = 1024
    max_queued_commands: int = 10_000
    max_batch: int = 512
    max_events_per_append: int = 5_000
    ask_timeout: float = 30.0
    max_live_actors: int = 100_000
    idle_timeout: float | None = 600.0
    max_attempts: int = 3
    max_restarts: int = 5
    restart_backoff: float = 0.05
    park_for: float = 0.5
    max_backoff: float = 10.0
    recent_command_ids: int = 64
    load_page_size: int = 1_000
    grace: float = 10.0
    follow: bool = True

    def __post_init__(self) -> None:
        if type(self.follow) is not bool:
            raise InvalidOption("follow", self.follow, 0, 1, expected="a bool")
        for name, (low, high) in OPTION_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "idle_timeout":
                continue
            whole = isinstance(low, int)
            kind = int if whole else int | float
            if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidOption(name, value, low, high, none_allowed=name == "idle_timeout")


_YEAR = 365 * 24 * 3600.0
OPTION_RANGES: dict[str, tuple[int, int] | tuple[float, float]] = {
    # Every value in these ranges works (tests/actors/test_options.py opens a system at
    # each end and runs commands through it); the upper ends keep memory and timers finite.
    "mailbox_capacity": (1, 1_000_000),
    "max_queued_commands": (1, 100_000_000),
    "max_batch": (1, 1_000_000),
    "max_events_per_append": (1, 1_000_000),
    "max_live_actors": (1, 100_000_000),
    "max_attempts": (1, 1_000),
    "max_restarts": (0, 1_000),
    "recent_command_ids": (0, 1_000_000),
    "load_page_size": (1, 1_000_000),
    "ask_timeout": (0.001, _YEAR),
    "idle_timeout": (0.0, _YEAR),
    "restart_backoff": (0.0, 3600.0),
    "park_for": (0.0, 3600.0),
    "max_backoff": (0.0, 3600.0),
    "grace": (0.0, 3600.0),
}


SYSTEM_FIELDS = frozenset(f.name for f in dataclasses.fields(SystemOptions))
