"""The store's options: `StoreOptions`, its literals and the range of each option, and
`StoreSettings`, the same fields as the openers' keywords."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, TypedDict

from store._errors import InvalidStoreOption

__all__ = ["StoreOptions", "StoreSettings", "Synchronous", "Writer", "resolve_options"]

Synchronous = Literal["FULL", "NORMAL"]
Writer = Literal["thread", "process"]

# The int options' upper bound: far past any real use, and `max_read_limit + 1` is
# still a SQLite integer (which also fits the writer process's setup frame).
_MAX_INT_OPTION: Final = 2**62
# SQLite's busy timeout is an int32 of milliseconds: a longer one wraps around and
# turns the busy handler off (a lock then fails at once), a shorter one rounds to none.
_MIN_BUSY_TIMEOUT: Final = 0.001
_MAX_BUSY_TIMEOUT: Final = 2_147_483


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tuning and limits of a SQLite event store; every limit is finite.

    Each int option takes 1 to 2**62, `busy_timeout` 0.001 to 2,147,483 seconds; any
    other value is refused with `InvalidStoreOption` (naming the option and its range)
    before anything is opened.

    Attributes:
        synchronous: "FULL" (default): an acknowledged append survives power loss.
            "NORMAL": survives a crash of the process, may lose the last commits on
            power loss, and commits faster.
        busy_timeout: seconds a write waits for another process's lock before the
            writer retries the batch (`busy_retries` times) and then fails it with
            `StoreUnavailable`.
        busy_retries: see `busy_timeout`.
        max_event_bytes: the largest encoded event accepted (default 1 MiB).
        max_events_per_append: the most events one append may carry.
        max_stream_id_bytes: the longest stream id, in UTF-8 bytes.
        max_pending_appends: appends queued for the writer before `append` waits.
        max_batch_events: the most events the writer puts in one transaction.
        max_read_limit: the largest page a read may ask for.
        writer: where the write transactions run. "thread" (default): on the write
            connection's worker thread, one batch at a time. "process": in a writer
            process of their own (files only, not ":memory:"), with up to two batches
            in flight, so the event loop answers one batch while the next commits; it
            takes 0.1-0.2 s to start and trades the GIL's serialisation for one
            more process (see docs/architecture.md, "The writer process").
        watch_interval: how often, in seconds, `wait_for_commit` checks whether
            another process committed (SQLite: `PRAGMA data_version`, a read of shared
            memory; 0.001 to 60, default 0.02). PostgreSQL is told by `NOTIFY` and
            does not poll at this interval.
        loop_reads: True (default): the group reads actors' loads make (`read_streams`)
            and the bus follower's reads of other processes' commits (`read_log`),
            pages of at most 1,000 events, run on the event loop's own thread, through
            a read-only connection of their own that never waits for a lock (a read
            that meets one goes to the reader thread). That saves the thread hop, the
            GIL handed back and forth per row, and the wait for the loop to take the
            answer, but blocks the loop while SQLite reads (tens of µs for a stream
            of a few events with the file in the operating system's cache:
            docs/benchmarks.md, "Cold actors"). False: every read takes the reader
            thread; choose it when the file sits on storage slow enough that a read
            from it would stall the loop (a network file system). SQLite files only;
            PostgreSQL reads are asynchronous anyway.
    """

    synchronous: Synchronous = "FULL"
    busy_timeout: float = 5.0
    busy_retries: int = 3
    max_event_bytes: int = 1024 * 1024
    max_events_per_append: int = 10_000
    max_stream_id_bytes: int = 256
    max_pending_appends: int = 100_000
    max_batch_events: int = 20_000
    max_read_limit: int = 100_000
    writer: Writer = "thread"
    watch_interval: float = 0.02
    loop_reads: bool = True

    def __post_init__(self) -> None:
        if self.synchronous not in ("FULL", "NORMAL"):
            raise InvalidStoreOption("synchronous", self.synchronous, "'FULL' or 'NORMAL'")
        if self.writer not in ("thread", "process"):
            raise InvalidStoreOption("writer", self.writer, "'thread' or 'process'")
        for name in (
            "max_event_bytes",
            "max_events_per_append",
            "max_stream_id_bytes",
            "max_pending_appends",
            "max_batch_events",
            "max_read_limit",
            "busy_retries",
        ):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= _MAX_INT_OPTION:
                raise InvalidStoreOption(name, value, f"an int from 1 to 2**62 ({_MAX_INT_OPTION})")
        timeout = self.busy_timeout
        if type(timeout) not in (int, float) or not (
            _MIN_BUSY_TIMEOUT <= timeout <= _MAX_BUSY_TIMEOUT
        ):
            raise InvalidStoreOption(
                "busy_timeout",
                timeout,
                f"a number of seconds from {_MIN_BUSY_TIMEOUT} to {_MAX_BUSY_TIMEOUT:,}"
                " (SQLite counts it in int32 milliseconds)",
            )
        if type(self.loop_reads) is not bool:
            raise InvalidStoreOption("loop_reads", self.loop_reads, "True or False")
        interval = self.watch_interval
        if type(interval) not in (int, float) or not 0.001 <= interval <= 60:
            raise InvalidStoreOption(
                "watch_interval", interval, "a number of seconds from 0.001 to 60"
            )


class StoreSettings(TypedDict, total=False):
    """The fields of `StoreOptions` as keywords, each optional: what the store's openers
    take as `**settings` (`open_store(path, synchronous="NORMAL")`), typed for the type
    checker. Type your own wrapper's keywords with it to pass them on checked:
    `def open_mine(path: str, **settings: Unpack[StoreSettings])`.

    A name that is not a field is refused at run time too (`InvalidStoreOption`, naming
    it and listing the fields); each value is checked as `StoreOptions` checks it.
    """

    synchronous: Synchronous
    busy_timeout: float
    busy_retries: int
    max_event_bytes: int
    max_events_per_append: int
    max_stream_id_bytes: int
    max_pending_appends: int
    max_batch_events: int
    max_read_limit: int
    writer: Writer
    watch_interval: float
    loop_reads: bool


_FIELDS: Final = tuple(field.name for field in dataclasses.fields(StoreOptions))


def resolve_options(options: StoreOptions | None, settings: StoreSettings) -> StoreOptions:
    """What an opener runs with: `options` (None: the defaults) with each field named in
    `settings` replaced by its value, checked.

    Raises:
        InvalidStoreOption: a name in `settings` that is not a `StoreOptions` field (the
            error lists them), a value out of its range, or `options` not a
            `StoreOptions`.
    """
    for name, value in settings.items():
        if name not in _FIELDS:
            raise InvalidStoreOption(name, value, ", ".join(_FIELDS), unknown=True)
    if options is None:
        return StoreOptions(**settings)
    given: object = options  # checked: an untyped caller may pass anything
    if not isinstance(given, StoreOptions):
        raise InvalidStoreOption("options", given, "a StoreOptions, or None")
    return dataclasses.replace(options, **settings) if settings else options
