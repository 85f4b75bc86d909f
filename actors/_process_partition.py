"""One partition of a running process manager (`_Partition`): its subscription, its
in-flight events (those with one sequence key, by default of one stream, in order), and its checkpoint, a low watermark
saved fenced by the partition's lease; and what it needs of its handle
(`_PartitionHost`).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import anyio.abc

from actors._errors import ShuttingDown
from actors._process_types import (
    ProcessHost,
    ProcessManager,
    ProcessManagerOptions,
    partition_of,
)
from actors._telemetry import handling
from store import Lease, LeaseLost, RecordedEvent, faults, telemetry

__all__: list[str] = []


class _LeaseLost(Exception):
    """Internal: a partition's lease went to another process: stop it."""


class _PartitionHost(Protocol):
    """What a partition needs of its handle (`ProcessManagerHandle`, through its layers)."""

    manager: ProcessManager
    name: str
    options: ProcessManagerOptions
    _system: ProcessHost
    _names: list[str]
    _log: Any
    _handled: int
    _lost: int

    def _progress(self) -> None:
        """Wake the waiters whose position was reached."""
        ...

    async def _carry_through(
        self, recorded: RecordedEvent, fence: Lease | None, replay: bool
    ) -> None:
        """Send the commands `recorded` calls for, compensating refused ones."""
        ...


class _Partition:
    """One partition of a running manager: its subscription, its in-flight events and
    its checkpoint, fenced by its lease (None without `lease`)."""

    def __init__(
        self,
        handle: _PartitionHost,
        index: int,
        lease: Lease | None,
        checkpoint: int,
        replay_until: int,
    ) -> None:
        self.handle = handle
        self.index = index
        self.lease = lease
        # Events up to here may have been handled before (by a process that died, or
        # this one before a restart) past the checkpoint: see `_carry_through`.
        self.replay_until = replay_until
        self.saved = checkpoint
        self.delivered = checkpoint  # the subscription's position after the last event
        self.in_flight: dict[int, anyio.Event] = {}
        self.tails: dict[str, anyio.Event] = {}
        self.changed = anyio.Event()
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.lost = False

    @property
    def position(self) -> int:
        if self.in_flight:
            return min(self.in_flight) - 1
        return self.delivered

    def lose(self) -> None:
        """Another process took the lease: stop at once, write nothing more."""
        if not self.lost:
            self.lost = True
            self.handle._lost += 1
            self.handle._log.warning("process.lease_lost", partition=self.index)
        self.scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        handle = self.handle
        system = handle._system
        manager = handle.manager
        tags = [system.store.registry.tag_of(tp) for tp in manager.event_types]
        partitions = handle.options.partitions
        index = self.index
        try:
            with self.scope:
                async with (
                    system.bus.subscribe(
                        from_position=self.saved + 1,
                        event_types=tags,
                        stream_prefix=manager.stream_prefix,
                        queue_size=handle.options.queue_size,
                        name=handle._names[index],
                    ) as subscription,
                    anyio.create_task_group() as tg,
                ):
                    task_status.started()
                    tg.start_soon(self._save_checkpoints)
                    limiter = anyio.CapacityLimiter(handle.options.concurrency)
                    while True:
                        batch = await subscription.next_batch()
                        for recorded in batch.events:
                            if (
                                partitions > 1
                                and partition_of(recorded.stream_id, partitions) != index
                            ):
                                continue
                            await limiter.acquire_on_behalf_of(recorded.position)
                            done = anyio.Event()
                            try:
                                key = manager.sequence_key(recorded)
                            except Exception:  # noqa: BLE001 - a bug there: the stream orders
                                key = recorded.stream_id
                            previous = self.tails.get(key)
                            self.tails[key] = done
                            self.in_flight[recorded.position] = done
                            tg.start_soon(self._handle, recorded, key, previous, done, limiter)
                        self.delivered = batch.position
                        self.changed.set()
                        handle._progress()
        except ShuttingDown:
            pass
        finally:
            if not self.lost:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._save_now()
            self.done.set()
            handle._progress()

    async def _handle(
        self,
        recorded: RecordedEvent,
        key: str,
        previous: anyio.Event | None,
        done: anyio.Event,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        try:
            if previous is not None:
                await previous.wait()
            work = self.handle._carry_through(
                recorded, self.lease, recorded.position <= self.replay_until
            )
            if telemetry.tracer is not None:  # a span, in the trace the event carries
                work = handling(self.handle.name, recorded, work)
            await work
            if faults.enabled:
                await faults.hit_async("after_projection_apply_before_checkpoint")
        except ShuttingDown:
            # Not handled: the checkpoint stays before this event; the next run redoes it.
            self.scope.cancel()
            return
        except _LeaseLost:
            # Another process owns the partition now; it handles this event again.
            self.lose()
            return
        finally:
            limiter.release_on_behalf_of(recorded.position)
            done.set()
            if self.tails.get(key) is done:
                del self.tails[key]
        del self.in_flight[recorded.position]
        self.handle._handled += 1
        self.handle._progress()
        self.changed.set()

    async def _save_checkpoints(self) -> None:
        while True:
            await self.changed.wait()
            self.changed = anyio.Event()
            await self._save_now()

    async def _save_now(self) -> None:
        position = self.position
        if position > self.saved:
            try:
                await self.handle._system.store.save_checkpoint(
                    self.handle._names[self.index], position, fence=self.lease
                )
            except LeaseLost:
                self.lose()
                return
            self.saved = position
