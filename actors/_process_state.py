"""What a running process manager holds (`_ProcessState`: its partitions, the
checkpoints of those held elsewhere, its dead letters, waiters and counters), shared by
the modules that make up its handle: `_process_steps` (carrying an event's steps
through), `_process_leases` (the partitions' leases and the fair share) and
`_process_manager` (`ProcessManagerHandle`: what callers see, the run).
"""

from __future__ import annotations

import os
import socket
import uuid

import anyio
import anyio.abc

from actors._process_partition import _Partition
from actors._process_types import ParkedStep, ProcessHost, ProcessManager, ProcessManagerOptions
from store import Lease
from store._logging import get_logger

__all__: list[str] = []


class _ProcessState:
    """The fields of a running process manager, declared once; the position every
    event is handled up to, and waking those who wait for it."""

    def __init__(
        self,
        system: ProcessHost,
        manager: ProcessManager,
        options: ProcessManagerOptions,
        checkpoint: int,
    ) -> None:
        self.manager = manager
        self.name = manager.name
        self.options = options
        self._system = system
        count = options.partitions
        base = f"process:{manager.name}"
        self._names = [base] if count == 1 else [f"{base}#{i}/{count}" for i in range(count)]
        self._base_checkpoint = checkpoint
        self._known = [checkpoint] * count  # checkpoints of the partitions held elsewhere
        self._partitions: dict[int, _Partition] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._parked: list[ParkedStep] = []
        self._cancel = anyio.CancelScope()
        self._running = True
        self._done = anyio.Event()
        self._log = get_logger("actors.process", manager=manager.name)
        self._handled = self._sent = self._rejected = 0
        self._compensations = self._retries = self._parked_total = 0
        self._takeovers = self._lost = 0
        self._member: Lease | None = None  # with partitions: this process's presence

    @property
    def position(self) -> int:
        """Every event up to this position has been handled: by this process for the
        partitions it runs, by their holders (as far as their checkpoints say) for the
        others."""
        return min(
            (
                self._partitions[i].position if i in self._partitions else self._known[i]
                for i in range(self.options.partitions)
            ),
            default=0,
        )

    def _progress(self) -> None:
        if self._waiters:
            position = self.position
            for target, reached in self._waiters:
                if target <= position:
                    reached.set()
