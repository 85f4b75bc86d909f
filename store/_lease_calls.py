"""The store's lease calls, checked the same on every backend: arguments here, the
statement a backend's (the hooks at the end).

A lease is a named resource held by one owner at a time, until it expires, with an
epoch that grows each time it changes hands; appends and checkpoints fenced with it
commit only while its row still has that owner and epoch (see `EventStore`).
"""

from __future__ import annotations

import abc

from store._errors import InvalidLease
from store._options import StoreOptions
from store._prepare import _check_lease, _check_lease_key, _check_ttl, _encodable
from store._records import Lease

__all__: list[str] = []


class _LeaseCalls(abc.ABC):
    """`acquire_lease`, `renew_lease`, `release_lease` and `read_leases` as every backend
    offers them: each checks its arguments and the backend runs the statement."""

    options: StoreOptions

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> Lease | None:
        """Take lease `name` for `owner` until now + `ttl` seconds (the store's clock).

        It is taken when it is free (never taken), expired, released, or already held
        by `owner` unexpired: then it is extended to now + `ttl` at the same epoch.
        Taking it from another owner, or again after it expired or was released, gives
        it the next epoch (1 for a new lease). Atomic across every process sharing the
        store: of owners racing for a free lease exactly one gets it.

        Returns:
            The lease as held now, or None when another owner holds it unexpired.

        Raises:
            InvalidLease: `name` or `owner` is not a non-empty printable str within
                `max_stream_id_bytes`, or `ttl` not a finite number from 0.01 to 86400
                seconds; nothing was written.
        """
        limit = self.options.max_stream_id_bytes
        _check_lease_key("acquire_lease", "name", name, limit)
        _check_lease_key("acquire_lease", "owner", owner, limit)
        seconds = _check_ttl("acquire_lease", ttl)
        return await self._acquire_lease(name, owner, seconds)

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend `lease` to now + `ttl` seconds if the store's row still has its owner
        and epoch, even past its expiry when nobody took it since (or after its owner
        released it); the epoch stays.

        Returns:
            The lease as held now, or None when it was lost (another owner, or another
            epoch): stop acting for it.

        Raises:
            InvalidLease: `lease` is not a `Lease`, or `ttl` not a finite number from
                0.01 to 86400 seconds; nothing was written.
        """
        checked = _check_lease("renew_lease", "lease", lease, self.options.max_stream_id_bytes)
        seconds = _check_ttl("renew_lease", ttl)
        return await self._renew_lease(checked, seconds)

    async def release_lease(self, lease: Lease) -> None:
        """Give `lease` up at once (it expires now, so any owner may take it) if the
        store's row still has its owner and epoch; otherwise do nothing.

        Raises:
            InvalidLease: `lease` is not a `Lease`; nothing was written.
        """
        checked = _check_lease("release_lease", "lease", lease, self.options.max_stream_id_bytes)
        await self._release_lease(checked)

    async def read_leases(self, prefix: str = "") -> list[Lease]:
        """Every lease whose name starts with `prefix` (all of them by default), ordered
        by name (code point order), expired and released ones included (their
        `expires_at` is past): what a process needs to share partitions fairly.

        Raises:
            InvalidLease: `prefix` is not a str of valid Unicode.
        """
        if type(prefix) is not str or not _encodable(prefix) or "\x00" in prefix:
            raise InvalidLease(
                "read_leases", "prefix", prefix, "a str of valid Unicode without NUL"
            )
        return await self._read_leases(prefix)

    # -- what a backend answers (arguments checked) -------------------------------------

    @abc.abstractmethod
    async def _acquire_lease(self, name: str, owner: str, ttl: float) -> Lease | None:
        """`acquire_lease`, arguments checked: one atomic upsert on the store's clock."""

    @abc.abstractmethod
    async def _renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """`renew_lease`, arguments checked."""

    @abc.abstractmethod
    async def _release_lease(self, lease: Lease) -> None:
        """`release_lease`, arguments checked."""

    @abc.abstractmethod
    async def _read_leases(self, prefix: str) -> list[Lease]:
        """The leases whose names start with `prefix`, by name (code point order)."""
