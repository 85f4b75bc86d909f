"""The PostgreSQL store's statements other than the batch's: reads, leases and the fenced
checkpoint, for one schema."""

from __future__ import annotations

from typing import Final

from store._postgres_schema import quote_ident

__all__: list[str] = []

_COLUMNS: Final = (
    "position, stream_id, version, event_type, schema_version, data, metadata, command_id,"
    " recorded_at, checksum"
)
_NOW: Final = "SELECT extract(epoch FROM clock_timestamp())::double precision AS ts"


class _Queries:
    """The read statements of one schema (its name quoted once, everything else bound)."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self.read_stream = (
            f"SELECT {_COLUMNS} FROM {s}.events WHERE stream_id = $1"  # noqa: S608
            " AND version >= $2 AND version <= $3 ORDER BY version LIMIT $4"
        )
        self.read_streams = (
            f"SELECT {', '.join('e.' + c for c in _COLUMNS.split(', '))}"  # noqa: S608
            " FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(stream_id, low, high)"
            f" JOIN {s}.events AS e ON e.stream_id = w.stream_id"
            " AND e.version >= w.low AND e.version <= w.high ORDER BY e.stream_id, e.version"
        )
        self.read_all = (
            f"SELECT {_COLUMNS} FROM {s}.events WHERE position >= $1 AND position <= $2"  # noqa: S608
            " AND ($3::text[] IS NULL OR event_type = ANY($3))"
            " AND ($4::text IS NULL OR starts_with(stream_id, $4))"
            " ORDER BY position LIMIT $5"
        )
        self.first_version_after = (
            f"SELECT min(version) FROM {s}.events WHERE stream_id = $1 AND recorded_at > $2"  # noqa: S608
        )
        self.stream_version = (
            f"SELECT version FROM {s}.events WHERE stream_id = $1"  # noqa: S608
            " ORDER BY version DESC LIMIT 1"
        )
        self.last_position = f"SELECT last_position FROM {s}.position_counter"  # noqa: S608
        self.command = (
            "SELECT stream_id, first_version, last_version, first_position, last_position"  # noqa: S608
            f" FROM {s}.commands WHERE command_id = $1"
        )
        self.snapshot = (
            "SELECT version, state_type, schema_version, data, checksum, recorded_at"  # noqa: S608
            f" FROM {s}.snapshots WHERE stream_id = $1"
        )
        self.checkpoint = f"SELECT position FROM {s}.checkpoints WHERE name = $1"  # noqa: S608
        # Leases, on the server's clock. Acquire: a new row at epoch 1; an existing one
        # only if its owner asks again (unexpired: same epoch) or it expired (the next
        # epoch); the upsert locks the row, so racing owners are serialised.
        self.acquire_lease = (
            f"INSERT INTO {s}.leases AS l (name, owner, epoch, expires_at, updated_at)"  # noqa: S608
            f" SELECT $1, $2, 1, c.ts + $3, c.ts FROM ({_NOW}) c"
            " ON CONFLICT (name) DO UPDATE SET"
            " epoch = CASE WHEN l.owner = excluded.owner AND l.expires_at > excluded.updated_at"
            " THEN l.epoch ELSE l.epoch + 1 END,"
            " owner = excluded.owner, expires_at = excluded.expires_at,"
            " updated_at = excluded.updated_at"
            " WHERE l.owner = excluded.owner OR l.expires_at <= excluded.updated_at"
            " RETURNING l.name, l.owner, l.epoch, l.expires_at"
        )
        self.renew_lease = (
            f"UPDATE {s}.leases AS l SET expires_at = c.ts + $4, updated_at = c.ts"  # noqa: S608
            f" FROM ({_NOW}) c WHERE l.name = $1 AND l.owner = $2 AND l.epoch = $3"
            " RETURNING l.name, l.owner, l.epoch, l.expires_at"
        )
        self.release_lease = (
            f"UPDATE {s}.leases AS l SET expires_at = least(l.expires_at, c.ts),"  # noqa: S608
            f" updated_at = c.ts FROM ({_NOW}) c"
            " WHERE l.name = $1 AND l.owner = $2 AND l.epoch = $3"
        )
        self.read_leases = (
            f"SELECT name, owner, epoch, expires_at FROM {s}.leases"  # noqa: S608
            ' WHERE starts_with(name, $1) ORDER BY name COLLATE "C"'
        )
        # A fenced checkpoint: the lease row locked (FOR SHARE, to the commit) and
        # compared, the upsert only if it matched, in one statement; answers whether it
        # wrote and the lease's owner and epoch as found.
        self.fenced_checkpoint = (
            f"WITH l AS (SELECT owner, epoch FROM {s}.leases WHERE name = $4 FOR SHARE),"  # noqa: S608
            f" w AS (INSERT INTO {s}.checkpoints (name, position, updated_at)"
            " SELECT $1, $2, $3 FROM l WHERE l.owner = $5 AND l.epoch = $6"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
            " updated_at = excluded.updated_at RETURNING 1)"
            " SELECT EXISTS (SELECT 1 FROM w), (SELECT owner FROM l), (SELECT epoch FROM l)"
        )
