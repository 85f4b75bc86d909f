"""Keeping a process manager's partitions: starting one, holding and renewing the
leases of those this process runs, the member lease that counts it among the live
processes, taking over partitions whose holder stopped renewing, a fair share of them,
and giving them up.
"""

from __future__ import annotations

import contextlib
import time

import anyio

from actors._errors import ShuttingDown
from actors._process_partition import _Partition
from actors._process_steps import _Carrying
from actors._process_types import _MAX_MEMBERS
from store import Lease, StoreClosed, StoreError

__all__: list[str] = []


class _Leasing(_Carrying):
    """The partitions' leases and the fair share (see the module docs)."""

    async def _start_partition(self, index: int, lease: Lease | None) -> None:
        assert self._tg is not None
        store = self._system.store
        name = self._names[index]
        checkpoint = await store.load_checkpoint(name)
        if checkpoint == 0 and len(self._names) > 1:
            checkpoint = self._base_checkpoint  # first run with partitions
        partition = _Partition(self, index, lease, checkpoint, await store.last_position())
        self._partitions[index] = partition
        try:
            await self._tg.start(partition.run)
        except BaseException:
            del self._partitions[index]
            raise

    async def _keep_leases(self) -> None:
        """Renew the held leases every third of the ttl; every fifth, drop the stopped
        partitions, read the others' checkpoints and take a fair share."""
        ttl = self.options.lease_ttl
        tick = ttl / 5
        renew_every = ttl / 3
        renewed = anyio.current_time()
        while True:
            await anyio.sleep(tick)
            if anyio.current_time() - renewed >= renew_every:
                renewed = anyio.current_time()
                await self._renew()
            await self._balance()

    async def _join(self) -> None:
        """With partitions, hold a member lease (`process:<name>@<slot>`, the first free
        slot) so the others count this process when they share the partitions out."""
        store = self._system.store
        ttl = self.options.lease_ttl
        if self._member is not None:
            self._member = await store.renew_lease(self._member, ttl)
        if self._member is None:
            for slot in range(_MAX_MEMBERS):
                name = f"process:{self.name}@{slot}"
                self._member = await store.acquire_lease(name, self._owner, ttl)
                if self._member is not None:
                    break

    async def _renew(self) -> None:
        store = self._system.store
        if self.options.partitions > 1:
            try:
                await self._join()
            except StoreError as exc:
                self._log.warning("process.renew_failed", error=repr(exc))
        for index, partition in list(self._partitions.items()):
            if partition.lease is None or partition.done.is_set():
                continue
            try:
                renewed = await store.renew_lease(partition.lease, self.options.lease_ttl)
            except StoreError as exc:
                self._log.warning("process.renew_failed", partition=index, error=repr(exc))
                continue  # tried again at the next renewal, well before it expires
            if renewed is None:
                partition.lose()

    async def _balance(self) -> None:
        """Drop finished partitions, refresh the others' positions, and acquire free
        partitions up to a fair share of the live holders (or release extras)."""
        for index, partition in list(self._partitions.items()):
            if partition.done.is_set():
                del self._partitions[index]
                self._known[index] = partition.saved
        store = self._system.store
        count = self.options.partitions
        base = f"process:{self.name}"
        try:
            if count > 1 and self._member is None:
                await self._join()
            leases = {
                lease.name: lease
                for lease in await store.read_leases(base)
                if lease.name == base or lease.name[len(base)] in "#@"
            }
            now = time.time()
            holders = {  # the other live processes running this manager
                lease.owner
                for name, lease in leases.items()
                if lease.expires_at > now and lease.owner != self._owner and "@" in name
            }
            share = -(-count // (len(holders) + 1))
            for index in range(count):
                if index not in self._partitions:
                    self._known[index] = max(
                        self._known[index], await store.load_checkpoint(self._names[index])
                    )
            mine = len(self._partitions)
            for index in range(count):
                if mine >= share:
                    break
                if index in self._partitions:
                    continue
                current = leases.get(self._names[index])
                if (
                    current is not None
                    and current.expires_at > now
                    and current.owner != self._owner
                ):
                    continue
                lease = await store.acquire_lease(
                    self._names[index], self._owner, self.options.lease_ttl
                )
                if lease is None:
                    continue
                self._takeovers += 1
                self._log.info("process.lease_taken", partition=index, epoch=lease.epoch)
                await self._start_partition(index, lease)
                mine += 1
            if mine > share and holders:
                # More than a fair share while others wait: hand the last ones over.
                for index in sorted(self._partitions, reverse=True)[: mine - share]:
                    await self._release(index)
        except StoreClosed:
            raise ShuttingDown(f"the store closed under process manager {self.name!r}") from None
        except StoreError as exc:
            self._log.warning("process.balance_failed", error=repr(exc))
        self._progress()

    async def _release(self, index: int) -> None:
        partition = self._partitions.pop(index)
        partition.scope.cancel()
        await partition.done.wait()
        self._known[index] = partition.saved
        if partition.lease is not None and not partition.lost:
            with contextlib.suppress(StoreError):
                await self._system.store.release_lease(partition.lease)

    async def _release_all(self) -> None:
        for index in list(self._partitions):
            await self._release(index)
        if self._member is not None:
            with contextlib.suppress(StoreError):
                await self._system.store.release_lease(self._member)
            self._member = None
