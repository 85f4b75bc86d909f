"""The SQLite write transaction of one batch (`_BatchWriter`), wherever it runs.

Expected versions are checked inside the transaction, under SQLite's write lock, against
versions this connection knows are current: a cache refreshed from the events other
connections (other processes) committed whenever `PRAGMA data_version` says they did
(positions follow commit order: they are those past its last position), read mostly
before the transaction begins and the rest under the lock (`_BatchWriter._catch_up`).
The appends those events passed are decided again, mostly before the lock too
(`_BatchWriter._decide_ahead`). A conflicting append is rejected alone;
`UNIQUE(stream_id, version)` stays the final guard, and should it ever fire the batch is
redone with one savepoint per append. Positions are assigned
inside the transaction, so they follow commit order with no gaps. Here: the transaction
(waiting for the write lock, commit, rollback), deciding each append, and the keyed
writes; writing the accepted appends' rows is `store._sqlite_rows.RowInserter`'s.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from store import faults
from store._ahead import missed, plain
from store._batch import _BatchResult, _FencedBatchAppend, _Outcome, _Write, _WriteResult
from store._errors import (
    ChainBroken,
    ConcurrencyError,
    IdempotencyConflict,
    LeaseLost,
    StoreError,
    StoreUnavailable,
)
from store._options import StoreOptions
from store._records import ANY, STREAM_EXISTS, AppendResult, RecordedEvent
from store._sqlite_errors import _SQLITE_BUSY, _SQLITE_LOCKED, _code, _translate
from store._sqlite_rows import RowInserter

_SELECT_COMMANDS: Final = (
    "SELECT command_id, stream_id, first_version, last_version, first_position,"
    " last_position, digest FROM commands WHERE command_id IN (SELECT value FROM json_each(?))"
)
_SELECT_VERSIONS: Final = (
    "SELECT stream_id, max(version) FROM events"
    " WHERE stream_id IN (SELECT value FROM json_each(?)) GROUP BY stream_id"
)
_SELECT_VERSION: Final = "SELECT max(version) FROM events WHERE stream_id = ?"
_READ_MISSED: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version"
)
"""The events of one stream an append's expected version missed, when not among those
kept: what a redecision folds before deciding again (`Redecide`)."""
_SELECT_MOVED: Final = (
    "SELECT stream_id, max(version) FROM events WHERE position > ? GROUP BY stream_id"
)
_READ_FOREIGN: Final = (
    "SELECT position, stream_id, version, event_type, schema_version, data, metadata,"
    " command_id, recorded_at, checksum FROM events"
    " WHERE position > ? AND position <= ? ORDER BY position"
)
_HAND_ON_LIMIT: Final = 2_000
"""The most events of other connections a batch reads to hand on (`on_foreign`): past
them, only their versions are read, and the bus's follower reads the events in pages
on the reader's thread rather than the event loop decoding them all at once."""
_KEPT_PER_STREAM: Final = 8
_KEPT_STREAMS: Final = 50_000
"""Other connections' events kept for redecisions (`_BatchWriter._keep_foreign`): the
last 8 of a stream, of at most 50,000 streams."""
_REFRESH_LIMIT: Final = 20_000
"""The most events of other connections the version cache is refreshed from; past
them it is cleared (and read again per stream) instead."""
_SELECT_LAST_POSITION: Final = "SELECT max(position) FROM events"
_SELECT_LEASE_HOLDER: Final = "SELECT owner, epoch FROM leases WHERE name = ?"
_IN_LIST_CHUNK: Final = 2_000
_VERSION_CACHE_LIMIT: Final = 200_000
_json = msgspec.json.Encoder()

Redecide = Callable[[Any, list[RecordedEvent], int], bool]
"""`_BatchWriter.redecide`: (the append, the events it missed, the stream's version)
(`AppendPreparer.redecided`)."""
Decode = Callable[[list[Any]], list[RecordedEvent]]
"""`_BatchWriter.decode`: rows as `SQLiteEventStore` reads them, as the events this
process decodes (`SQLiteEventStore._decode_foreign`); raises when one does not decode."""


class _BatchWriter:
    """The write transaction of a batch, and what the connection it runs on knows.

    Runs where the write connection lives: on aiosqlite's worker thread (the default
    writer) or in the writer process (`writer="process"`). Its state is that
    connection's: the streams' current versions (a cache refreshed from the events of
    other connections when `PRAGMA data_version` changes) and the last position.
    """

    def __init__(
        self, path: str, options: StoreOptions, data_version: int, last_position: int
    ) -> None:
        self.path = path
        self.options = options
        self._data_version = data_version
        self._versions: dict[str, int] = {}
        self._last_position = last_position
        self._fast_busy = False  # the connection's busy timeout set to 0 (see `_begin`)
        self._rows = RowInserter()  # inserts the accepted appends' rows
        # Decodes rows of other connections' events: those `_catch_up` reads, once,
        # for both `on_foreign` and `redecide`, and those a redecision reads.
        self.decode: Decode | None = None
        # Called, on the writer's side, before or inside the transaction, with
        # (first, last, events): the commits of other connections since this one last
        # looked (positions first to last, the events `decode` gave). Not called when
        # they did not decode. None: only their versions are read (and a redecision
        # reads what it missed).
        self.on_foreign: Callable[[int, int, list[RecordedEvent]], None] | None = None
        # Called, inside the transaction, on an append whose expected version another
        # append passed, when it carries a `redecide` (only `_Append`s do): with the
        # events it missed (empty when the append it is chained to was decided again
        # in this batch) and the stream's version. True: it now holds the events
        # decided again on that version (see `Redecide`).
        self.redecide: Redecide | None = None
        # The last events of other connections `_catch_up` read (to hand on), by stream,
        # in version order: what an append to be decided again missed is most often
        # among them (`_keep_foreign`).
        self._foreign: dict[str, list[RecordedEvent]] = {}
        # How long the last `_begin` waited for another connection's write lock,
        # seconds, and how many appends that batch carried.
        self.lock_wait = 0.0
        self.last_appends = 0
        self._locked_at = 0.0  # `time.perf_counter()` when the last `_begin` took the lock

    def _write_batch(
        self, conn: sqlite3.Connection, appends: Sequence[_FencedBatchAppend], writes: list[_Write]
    ) -> _BatchResult:
        """One transaction for the whole batch, where the write connection lives (the
        connection's worker thread, or the writer process)."""
        self.last_appends = len(appends)
        if faults.enabled:
            faults.hit("before_begin")
        if self._catch_up(conn):  # most of what the others committed, outside the lock
            self._decide_ahead(conn, appends)
        self._begin(conn)
        try:
            if faults.enabled:
                faults.hit("after_begin")
            recorded_at = time.time()
            outcomes = self._apply_appends(conn, appends, recorded_at, careful=False)
            write_error, write_results = self._apply_writes(conn, writes)
            if faults.enabled:
                faults.hit("after_insert_before_commit")
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            # Only reachable if our view of versions was wrong; redo with savepoints.
            self._rollback(conn)
            self._begin(conn)
            try:
                recorded_at = time.time()
                outcomes = self._apply_appends(conn, appends, recorded_at, careful=True)
                write_error, write_results = self._apply_writes(conn, writes)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise _translate(exc, "append") from exc
            except BaseException:
                self._rollback(conn)
                raise
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _translate(exc, "append") from exc
        except BaseException:
            self._rollback(conn)
            raise
        return _BatchResult(
            outcomes,
            recorded_at,
            time.perf_counter() - self._locked_at,  # the time it held the write lock
            write_error,
            self._last_position,
            write_results,
        )

    def _begin(self, conn: sqlite3.Connection) -> None:
        """`BEGIN IMMEDIATE`, waiting for another connection's write lock in steps of
        0.1 ms (1 ms after the first 50 ms), up to `busy_retries + 1` x `busy_timeout`.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20... ms between tries: with
        several processes writing one file, each hand-over of the lock would leave it idle
        for milliseconds while every commit takes about one. The connection's busy timeout
        is therefore 0 here, and the wait is this loop's.
        """
        if not self._fast_busy:
            conn.execute("PRAGMA busy_timeout = 0")
            self._fast_busy = True
        started = time.monotonic()
        limit = self.options.busy_timeout * (self.options.busy_retries + 1)
        refused = False
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._locked_at = time.perf_counter()
                self.lock_wait = time.monotonic() - started if refused else 0.0
                break
            except sqlite3.OperationalError as exc:
                if _code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    raise
                refused = True
                waited = time.monotonic() - started
                if waited >= limit:
                    raise StoreUnavailable(
                        f"the database {self.path!r} stayed locked by another connection for"
                        f" {self.options.busy_retries + 1} x busy_timeout"
                        f" ({self.options.busy_timeout}s); nothing was written"
                    ) from exc
                time.sleep(0.0001 if waited < 0.05 else 0.001)
        self._catch_up(conn)

    def _catch_up(self, conn: sqlite3.Connection) -> bool:
        """Bring what this connection knows up to the commits of other connections:
        the streams' versions, the last position and, while someone takes them, their
        events (handed on, and kept for the appends decided again).

        Called twice a batch: first before `BEGIN IMMEDIATE`, outside any transaction,
        where it reads what the others committed while this process was deciding
        without holding the write lock they wait for; then under the lock, where it
        reads what they committed in between, most often nothing. Both are sound:
        committed events never change and positions follow commit order, so the events
        past the last position read are exactly those not seen yet; and `data_version`
        is read before them, so a commit landing meanwhile changes it again and the
        next call reads that one. True when others had committed since the last call.
        """
        data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if data_version == self._data_version:
            return False
        # Another connection committed since we last looked. Positions follow commit
        # order and events are never rewritten: the streams it moved are those of
        # the events past our last position, the others' versions still hold.
        self._data_version = data_version
        row = conn.execute(_SELECT_LAST_POSITION).fetchone()
        last = int(row[0] or 0)
        versions = self._versions
        known = self._last_position
        decode, on_foreign = self.decode, self.on_foreign
        if 0 < last - known <= _HAND_ON_LIMIT and decode and on_foreign:
            # The events themselves, decoded once: this process's bus hands them on
            # at once, and the appends decided again here fold them.
            rows = conn.execute(_READ_FOREIGN, (known, last)).fetchall()
            for row in rows:  # in position order: a stream's last row is its version
                if row[1] in versions:
                    versions[row[1]] = row[2]
            # Not decoded: neither handed on nor kept (the follower's read of them
            # reports it; an append that missed one is refused as a conflict).
            events = self._decoded(decode, rows)
            if events is not None:
                on_foreign(known + 1, last, events)
                if self.redecide is not None:
                    self._keep_foreign(events)
        elif versions and 0 < last - known <= _REFRESH_LIMIT:
            for stream_id, version in conn.execute(_SELECT_MOVED, (known,)):
                if stream_id in versions:
                    versions[stream_id] = int(version)
        elif last != known:
            versions.clear()
        self._last_position = last
        return True

    def _decide_ahead(
        self, conn: sqlite3.Connection, appends: Sequence[_FencedBatchAppend]
    ) -> None:
        """Before the write lock, when others committed since the last batch: decide
        again the appends they passed, as far as `_catch_up` saw, so that the lock is
        not held for it (the others are decided again under it, as any).

        Only the plain ones, those `_apply_appends` would decide again by their version
        alone: neither chained nor stale, without a command id or a fence, on a stream
        whose version is known. Each then expects the version it was decided on; under
        the lock `_apply_appends` checks it as any other and, should another process
        have appended in between, decides it again on what that added (a `Redecision`
        goes on from the state it reached). One not decided again here is left as it
        was, for the transaction to decide.
        """
        redecide = self.redecide
        if redecide is None or not self._foreign:  # no other connection's events kept
            return
        versions = self._versions
        for item in appends:
            if not plain(item):
                continue
            current = versions.get(item.stream_id)
            if current is not None and current > item.expected >= 0:
                self._redecide(conn, redecide, item, current)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        self._versions.clear()
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute(_SELECT_LAST_POSITION).fetchone()
            self._last_position = int(row[0] or 0)
            self._data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])

    def _apply_appends(
        self,
        conn: sqlite3.Connection,
        appends: Sequence[_FencedBatchAppend],
        recorded_at: float,
        *,
        careful: bool,
    ) -> list[_Outcome]:
        """Decide each append in order (the append it is chained to, a duplicate or
        conflicting command id, a lost fence, the expected version) and insert the accepted ones' rows and commands.
        Careful: each append in a savepoint of its own, on versions read afresh (the
        redo after `UNIQUE(stream_id, version)` fired); otherwise all rows at once."""
        if not appends:
            return []
        known = self._known_commands(conn, appends)
        versions = self._current_versions(conn, appends, fresh=careful)
        holders: dict[str, tuple[str, int] | None] = {}  # lease name: (owner, epoch)
        position = self._last_position
        outcomes: list[_Outcome] = []
        accepted: list[tuple[_FencedBatchAppend, AppendResult]] = []  # to insert
        append_outcome = outcomes.append
        accept = accepted.append
        redecide = self.redecide
        for item in appends:
            stream_id = item.stream_id
            chained = item.chained
            if chained >= 0:
                before = outcomes[chained]
                if not isinstance(before, AppendResult) or before.duplicate:
                    append_outcome(ChainBroken(stream_id, item.expected))
                    continue
                if getattr(appends[chained], "rebased", False):
                    # Decided on the state the one before it was decided to leave, which
                    # never committed: decided again on the one it left, or broken.
                    current = versions.get(stream_id, 0)
                    if redecide is None or not redecide(item, [], current):
                        append_outcome(ChainBroken(stream_id, item.expected))
                        continue
            elif getattr(item, "stale", False):
                # Chained to one that committed, decided again, in an earlier batch: it
                # expects the version that one ended at. Decided again on what that one
                # left and the events appended since, or broken.
                current = versions.get(stream_id, 0)
                if (
                    redecide is None
                    or current < item.expected
                    or not self._redecide(conn, redecide, item, current)
                ):
                    append_outcome(ChainBroken(stream_id, item.expected))
                    continue
            command_id = item.command_id
            if command_id is not None:
                seen = known.get(command_id)
                if seen is not None:
                    append_outcome(_resent(item, command_id, seen))
                    continue
            fence = item.fence
            if fence is not None:
                lost = self._check_fence(conn, fence, holders)
                if lost is not None:
                    append_outcome(lost)
                    continue
            current = versions.get(stream_id, 0)
            expected = item.expected
            # expected >= NO_STREAM must equal current; STREAM_EXISTS needs current > 0.
            if (
                expected != current
                and expected != ANY
                and (expected != STREAM_EXISTS or current == 0)
            ) and not (
                redecide is not None
                and current > expected >= 0
                and command_id is None
                and getattr(item, "redecide", None) is not None
                and self._redecide(conn, redecide, item, current)
            ):
                append_outcome(ConcurrencyError(stream_id, expected, current))
                continue
            if careful:
                actual = self._rows.insert_append(conn, item, current, position, recorded_at)
                if actual is not None:
                    versions[stream_id] = actual
                    append_outcome(ConcurrencyError(stream_id, expected, actual))
                    continue
            count = len(item.rows)
            version = versions[stream_id] = current + count
            result = AppendResult(stream_id, current + 1, version, position + 1, position + count)
            position += count
            append_outcome(result)
            accept((item, result))
            if command_id is not None:
                known[command_id] = (stream_id, result, item.digest)
        self._rows.insert_accepted(conn, accepted, recorded_at, events=not careful)
        self._last_position = position
        self._remember(versions)
        return outcomes

    def _redecide(
        self,
        conn: sqlite3.Connection,
        redecide: Redecide,
        item: _FencedBatchAppend,
        current: int,
    ) -> bool:
        """Offer `item`, which expected a version `current` has passed, the events it
        missed to decide again on; True when it did (it now expects `current`)."""
        expected = item.expected
        stream_id = item.stream_id
        events = missed(self._foreign.get(stream_id, []), expected, current)
        if events is None:
            # Not all among the events kept: read them (fewer rows than versions then
            # means some are this batch's, not inserted yet).
            rows = conn.execute(_READ_MISSED, (stream_id, expected, current)).fetchall()
            decoded = None if self.decode is None else self._decoded(self.decode, rows)
            if decoded is None or len(decoded) != current - expected:
                return False
            events = decoded
        return redecide(item, events, current)

    @staticmethod
    def _decoded(decode: Decode, rows: list[Any]) -> list[RecordedEvent] | None:
        """`decode(rows)`, or None when one of them does not decode (whoever reads
        them for a caller reports it)."""
        try:
            return decode(rows)
        except Exception:  # noqa: BLE001 - reported by the reads that need them
            return None

    def _keep_foreign(self, events: list[RecordedEvent]) -> None:
        """Keep `events` (other connections', in position order) as the last
        `_KEPT_PER_STREAM` of each stream, for `_redecide`; at most `_KEPT_STREAMS`
        streams (past them, the kept events start over)."""
        kept = self._foreign
        if len(kept) > _KEPT_STREAMS:
            kept.clear()
        for event in events:
            stream = kept.get(event.stream_id)
            if stream is None:
                kept[event.stream_id] = [event]
            else:
                stream.append(event)
                if len(stream) > _KEPT_PER_STREAM:
                    del stream[0]

    def _remember(self, versions: dict[str, int]) -> None:
        """Keep the batch's stream `versions` in the cache (they are the cache itself
        unless the batch read them afresh)."""
        cache = self._versions
        if versions is not cache:
            if len(cache) > _VERSION_CACHE_LIMIT:
                cache.clear()
            cache.update(versions)

    def _known_commands(
        self, conn: sqlite3.Connection, appends: Sequence[_FencedBatchAppend]
    ) -> dict[str, tuple[str, AppendResult, bytes | None]]:
        ids = [item.command_id for item in appends if item.command_id is not None]
        known: dict[str, tuple[str, AppendResult, bytes | None]] = {}
        for start in range(0, len(ids), _IN_LIST_CHUNK):
            chunk = _json.encode(ids[start : start + _IN_LIST_CHUNK])
            for cid, sid, fv, lv, fp, lp, digest in conn.execute(_SELECT_COMMANDS, (chunk,)):
                known[cid] = (sid, AppendResult(sid, fv, lv, fp, lp), digest)
        return known

    def _current_versions(
        self, conn: sqlite3.Connection, appends: Sequence[_FencedBatchAppend], *, fresh: bool
    ) -> dict[str, int]:
        cache = self._versions
        missing: list[str] = []
        if fresh:
            versions: dict[str, int] = {}
            for item in appends:
                stream_id = item.stream_id
                if stream_id not in versions:
                    versions[stream_id] = 0
                    missing.append(stream_id)
        else:
            # Work in the cache itself: a failed transaction clears it (`_rollback`).
            if len(cache) > _VERSION_CACHE_LIMIT:
                cache.clear()
            versions = cache
            for item in appends:
                stream_id = item.stream_id
                if stream_id not in cache:
                    cache[stream_id] = 0
                    missing.append(stream_id)
        for start in range(0, len(missing), _IN_LIST_CHUNK):
            chunk = _json.encode(missing[start : start + _IN_LIST_CHUNK])
            for stream_id, version in conn.execute(_SELECT_VERSIONS, (chunk,)):
                versions[stream_id] = int(version)
        return versions

    def _check_fence(
        self,
        conn: sqlite3.Connection,
        fence: tuple[str, str, int],
        holders: dict[str, tuple[str, int] | None],
    ) -> LeaseLost | None:
        """None if lease `fence[0]` has the fence's owner and epoch in this transaction,
        else the `LeaseLost` to answer. `holders` keeps the rows read in this batch
        (the batch's appends run before its keyed writes, so none changes them)."""
        name, owner, epoch = fence
        if name in holders:
            holder = holders[name]
        else:
            holder = holders[name] = self._lease_holder(conn, name)
        if holder is not None and holder[0] == owner and holder[1] == epoch:
            return None
        if holder is None:
            return LeaseLost(name, owner, epoch, None, None)
        return LeaseLost(name, owner, epoch, holder[0], holder[1])

    def _lease_holder(self, conn: sqlite3.Connection, name: str) -> tuple[str, int] | None:
        row = conn.execute(_SELECT_LEASE_HOLDER, (name,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def _apply_writes(
        self, conn: sqlite3.Connection, writes: list[_Write]
    ) -> tuple[StoreError | None, list[_WriteResult] | None]:
        """Run the keyed writes in one savepoint: (their error, None) if one failed
        (none of them written), else (None, per write its result) when one of them is
        fenced or returns a row, (None, None) otherwise."""
        if not writes:
            return None, None
        results: list[_WriteResult] | None = None
        conn.execute("SAVEPOINT writes")
        try:
            if any(write.fence is not None or write.returning for write in writes):
                results = []
                for write in writes:
                    fence = write.fence
                    if fence is not None:
                        holder = self._lease_holder(conn, fence[0])
                        if holder != (fence[1], fence[2]):
                            results.append((True, holder))
                            continue
                    rows = conn.execute(write.sql, write.params).fetchall()
                    results.append((False, rows[0] if write.returning and rows else None))
            else:
                for write in writes:
                    conn.execute(write.sql, write.params)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO writes")
            conn.execute("RELEASE writes")
            return _translate(exc, "write"), None
        conn.execute("RELEASE writes")
        return None, results


def _resent(
    item: _FencedBatchAppend, command_id: str, seen: tuple[str, AppendResult, bytes | None]
) -> AppendResult | IdempotencyConflict:
    """The answer to `item`, whose command id was `seen` committed (before, or earlier
    in the batch): that result again if its stream and digest are the same, else the
    conflict."""
    seen_stream, seen_result, seen_digest = seen
    if seen_stream != item.stream_id or seen_digest != item.digest:
        return IdempotencyConflict(command_id, item.stream_id, seen_stream)
    return msgspec.structs.replace(seen_result, duplicate=True)
