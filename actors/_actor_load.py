"""Building an actor's state from its stream: the load (snapshot, then pages of
events), the catch-up after a conflict or an unknown outcome, and the events of its
stream another process wrote, handed over by the bus's follower."""

from __future__ import annotations

from typing import Any

from actors._actor_state import _MAX_FOREIGN, ActorState, _Quarantined
from actors._errors import RecoveryError, ShuttingDown
from store import EventDecodeError, RecordedEvent, StoreClosed, StoreError
from store._logging import get_logger

__all__: list[str] = []

_LOG = get_logger("actors")


class _Loading(ActorState):
    """Loading and catching up (see the module docs)."""

    __slots__ = ()

    async def _load(self, *, catch_up: bool = False) -> None:
        """Rebuild state from the latest snapshot plus the events after it, page by page.

        With `catch_up`, fold only the events after the actor's own version onto its
        state instead: after a conflict or an append of unknown outcome, the state is
        still the fold of the stream up to `self.version` (it moves only with committed
        events), and the stream can only have grown. A reload then costs the events
        written since, not the whole stream.
        """
        host = self.host
        aggregate = self.aggregate
        store = self.store
        stream_id = self.stream_id
        evolve = aggregate.evolve
        state: Any = aggregate.initial
        version = 0
        position = 0
        start = 1
        if catch_up:
            state, version, position = self.state, self.version, self.position
            start = version + 1
        try:
            if host.snapshot_every is not None and not catch_up:
                snapshot = await store.load_snapshot(
                    stream_id, type(state), schema_version=aggregate.state_version
                )
                if snapshot is not None:
                    state, version, start = snapshot.state, snapshot.version, snapshot.version
            page_size = host.options.load_page_size
            loader = host.loader
            first = loader.limit == page_size
            while True:
                if first:  # with the other loads waiting now (see GroupLoader)
                    first = False
                    page = await loader.first_page(stream_id, start)
                else:
                    page = await store.read_stream(stream_id, from_version=start, limit=page_size)
                for recorded in page:
                    position = recorded.position
                    if recorded.version <= version:
                        continue  # the snapshot's own event: read for its position only
                    try:
                        state = evolve(state, recorded.event)
                    except Exception as exc:
                        raise RecoveryError(
                            stream_id, recorded.version, recorded.event_type, repr(exc)
                        ) from exc
                    version = recorded.version
                if len(page) < page_size:
                    break
                start = page[-1].version + 1
        except RecoveryError as exc:
            self._fail_load(exc)
        except EventDecodeError as exc:
            error = RecoveryError(exc.stream_id, exc.version, exc.event_type, str(exc))
            error.__cause__ = exc
            self._fail_load(error)
        except StoreClosed as exc:
            raise _Quarantined(
                ShuttingDown(f"the store closed while loading {stream_id!r}")
            ) from exc
        except StoreError as exc:
            error = RecoveryError(stream_id, version, "", f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._fail_load(error)
        self.state, self.version, self.position = state, version, position
        self.unsure = False
        foreign = self.foreign
        if foreign:
            self.foreign = [e for e in foreign if e.version > version]
        _LOG.debug("actor.loaded", aggregate=self.host.name, stream_id=stream_id, version=version)

    async def _catch_up(self) -> None:
        """Bring the state up to the stream's version as last seen (`behind`): from the
        events the follower handed over when they reach it, else from the store (always
        when an outcome was unknown)."""
        if not self.unsure and self._absorb():
            return
        await self._load(catch_up=True)

    def offer(self, recorded: RecordedEvent) -> None:
        """An event of this stream the bus's follower read (another process wrote it,
        or this actor's own append, read before its answer came): kept to fold before
        the next decision, in version order. It may come before the answer to this
        actor's own append it follows (another process appended right after it, and
        that commit was handed on first): kept past the gap, which that answer fills.
        At most `_MAX_FOREIGN` are kept; past them, a read of the store catches up."""
        if recorded.version <= self.version:
            return
        self.behind = max(self.behind, recorded.version)
        foreign = self.foreign
        if foreign is None:
            foreign = self.foreign = []
        if foreign and recorded.version <= foreign[-1].version:
            return  # handed on twice (the writer and the follower)
        if len(foreign) < _MAX_FOREIGN:
            foreign.append(recorded)
        else:
            foreign.clear()  # the store tells

    def _absorb(self) -> bool:
        """Fold the kept events that follow `version` onto the state, up to the first
        gap; whether it then reaches `behind`. An event `evolve` refuses is left to a
        load, which reports it."""
        foreign = self.foreign
        if foreign:
            state, version, position = self.state, self.version, self.position
            evolve = self.aggregate.evolve
            used = 0
            for recorded in foreign:
                if recorded.version > version + 1:
                    break  # a gap: an answer still to come, or the store tells
                used += 1
                if recorded.version <= version:
                    continue
                try:
                    state = evolve(state, recorded.event)
                except Exception:  # noqa: BLE001 - the load reads it again and reports it
                    foreign.clear()
                    return False
                version, position = recorded.version, recorded.position
            del foreign[:used]
            self.state, self.version, self.position = state, version, position
        return self.version >= self.behind

    def _fail_load(self, error: RecoveryError) -> None:
        self.host.restarted()
        self._log.error(
            "actor.recovery_failed",
            version=error.version,
            event_type=error.event_type,
            exc_info=error,
        )
        self.host.quarantine(self.aggregate_id, error)
        raise _Quarantined(error)
