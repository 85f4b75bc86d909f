"""The PostgreSQL schema and its migrations: the SQLite tables, plus the position counter
and the batch-append function, in one schema of the database.

The tables have the SQLite store's names and columns (`events`, `commands`, `snapshots`,
`checkpoints`; times are POSIX seconds as double precision), plus:

- `position_counter`: one row holding the last position handed out. Every batch append
  locks it (`SELECT ... FOR UPDATE`), inserts its events at `last+1..last+n` and bumps it
  in the same transaction, so commits that add events are serialised by its row lock:
  positions are gap-free (a rollback rolls the counter back with the rows) and a reader
  that sees position N sees every position below N (the next writer only gets the lock
  once the previous commit is visible).
- `schema_version`: one row per migration applied (version, applied_at).
- `esactors_append_batch(...)`: the plpgsql function that runs a whole batch in one
  statement (see `store._postgres_batch`).

The schema's name is the only text that enters SQL: it is checked (`check_schema_name`)
and quoted as an identifier (`quote_ident`). Everything else is a bound parameter.

`migrate(conn, schema)` brings the schema to `SCHEMA_VERSION`. Safe when several
processes open the same empty database at once: the work runs in one transaction that
first takes `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)` and reads the version again
under it, so one process migrates and the others find the work done.
"""

from __future__ import annotations

from typing import Final

import asyncpg

__all__ = [
    "MIGRATION_LOCK_KEY",
    "SCHEMA_VERSION",
    "check_schema_name",
    "current_schema",
    "migrate",
    "quote_ident",
    "schema_version",
]

MIGRATION_LOCK_KEY: Final = 0x65_73_61_63_74_6F_72_73  # "esactors" in ASCII
"""The advisory lock key migrations take (per database: one migration at a time)."""

_MAX_IDENTIFIER_BYTES: Final = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names


def check_schema_name(schema: object) -> str:
    """`schema` if it can name a schema as is; `ValueError` otherwise (not a str, empty,
    over 63 UTF-8 bytes, a NUL or a lone surrogate, or `pg_`-prefixed: reserved)."""
    if type(schema) is not str:
        raise ValueError(f"a schema name must be a str, not {type(schema).__name__}")
    try:
        size = len(schema.encode())
    except UnicodeEncodeError:
        raise ValueError(f"schema name {schema!r} is not valid Unicode") from None
    if not schema or size > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"schema name {schema!r} must be 1 to 63 UTF-8 bytes, not {size}")
    if "\x00" in schema:
        raise ValueError(f"schema name {schema!r} contains a NUL character")
    if schema.lower().startswith("pg_"):
        raise ValueError(f"schema name {schema!r}: names starting pg_ are reserved")
    return schema


def quote_ident(name: str) -> str:
    """`name` (checked by `check_schema_name`) as a quoted SQL identifier."""
    return '"' + check_schema_name(name).replace('"', '""') + '"'


async def current_schema(conn: asyncpg.Connection) -> str:
    """The connection's current schema (the first existing one on its search_path)."""
    name = await conn.fetchval("SELECT current_schema()")
    if name is None:
        raise ValueError(
            "the connection has no current schema (its search_path names none that exists);"
            " pass a schema name"
        )
    return str(name)


def _v1(s: str) -> tuple[str, ...]:
    """Version 1, in schema `s` (already quoted)."""
    return (
        f"""
        CREATE TABLE {s}.events (
            position       bigint           PRIMARY KEY,
            stream_id      text             NOT NULL,
            version        bigint           NOT NULL,
            event_type     text             NOT NULL,
            schema_version bigint           NOT NULL,
            data           bytea            NOT NULL,
            metadata       bytea,
            command_id     text,
            recorded_at    double precision NOT NULL,
            checksum       bigint           NOT NULL,
            UNIQUE (stream_id, version)
        )
        """,
        f"""
        CREATE TABLE {s}.commands (
            command_id     text             PRIMARY KEY,
            stream_id      text             NOT NULL,
            first_version  bigint           NOT NULL,
            last_version   bigint           NOT NULL,
            first_position bigint           NOT NULL,
            last_position  bigint           NOT NULL,
            digest         bytea            NOT NULL,
            recorded_at    double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.snapshots (
            stream_id      text             PRIMARY KEY,
            version        bigint           NOT NULL,
            state_type     text             NOT NULL,
            schema_version bigint           NOT NULL,
            data           bytea            NOT NULL,
            checksum       bigint           NOT NULL,
            recorded_at    double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.checkpoints (
            name           text             PRIMARY KEY,
            position       bigint           NOT NULL,
            updated_at     double precision NOT NULL
        )
        """,
        f"""
        CREATE TABLE {s}.position_counter (
            only_row       boolean          PRIMARY KEY DEFAULT true CHECK (only_row),
            last_position  bigint           NOT NULL CHECK (last_position >= 0)
        )
        """,
        f"INSERT INTO {s}.position_counter (only_row, last_position) VALUES (true, 0)",  # noqa: S608
        _append_batch_function(s),
    )


def _append_batch_function(s: str) -> str:
    """The batch function. Outcome kinds: 0 ok, 1 duplicate, 2 concurrency conflict,
    3 idempotency conflict (one row per append, in order), then, only if the batch's
    snapshot/checkpoint writes failed, one row of kind 4 with the error in
    `recorded_stream` (the appends still commit, as in the SQLite writer).

    `s` is a quoted identifier (`quote_ident`), the only text spliced in."""
    return f"""
CREATE FUNCTION {s}.esactors_append_batch(
    p_streams         text[],    -- the batch's distinct stream ids; a slot is an index here
    p_slots           integer[], -- per append: its stream's slot
    p_expected        bigint[],  -- per append: >= 0, or -1 ANY, -2 STREAM_EXISTS
    p_command_ids     text[],    -- per append, NULL: none
    p_digests         bytea[],   -- per append, NULL when no command id
    p_groups          integer[], -- per append: its command id's index in the batch, 0: none
    p_sigs            integer[], -- per append: index of (command id, stream, digest), 0: none
    p_counts          integer[], -- per append: its number of rows
    p_metadata        bytea[],   -- per append, NULL: none
    p_event_types     text[],    -- per row (event), the appends' rows one after the other
    p_schema_versions bigint[],  -- per row
    p_data            bytea[],   -- per row
    p_checksums       bigint[],  -- per row
    p_row_streams     text[],    -- per row: its append's stream id
    p_row_appends     integer[], -- per row: its append's index (1..)
    p_row_offsets     integer[], -- per row: its place in its append (0..)
    p_row_metadata    bytea[],   -- per row: its append's metadata
    p_row_commands    text[],    -- per row: its append's command id
    p_recorded_at     double precision,
    p_snapshots       text[] DEFAULT NULL,   -- per snapshot: stream_id
    p_snap_versions   bigint[] DEFAULT NULL, -- per snapshot: version
    p_snap_types      text[] DEFAULT NULL,   -- per snapshot: state_type
    p_snap_schemas    bigint[] DEFAULT NULL, -- per snapshot: schema_version
    p_snap_data       bytea[] DEFAULT NULL,  -- per snapshot: data
    p_snap_checksums  bigint[] DEFAULT NULL, -- per snapshot: checksum
    p_snap_times      double precision[] DEFAULT NULL, -- per snapshot: recorded_at
    p_checkpoints     text[] DEFAULT NULL,   -- per checkpoint: name
    p_cp_positions    bigint[] DEFAULT NULL, -- per checkpoint: position
    p_cp_times        double precision[] DEFAULT NULL  -- per checkpoint: updated_at
)
RETURNS TABLE (
    kind            smallint,
    first_version   bigint,
    last_version    bigint,
    first_position  bigint,
    last_position   bigint,
    actual          bigint,
    recorded_stream text
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n          integer := coalesce(cardinality(p_slots), 0);
    v_position bigint;
    v_start    bigint;
    v_rows     bigint;
    v_all_ok   boolean;
    v_simple   boolean;
    v_has_cids boolean;
    v_stored   smallint[]; -- per append: its command id is stored: 0 no, 1 same, 2 other
    v_sfv      bigint[];   -- the stored command's result, when v_stored > 0
    v_slv      bigint[];
    v_sfp      bigint[];
    v_slp      bigint[];
    v_versions bigint[];   -- per stream slot: its current version, chained in the batch
    v_owner    integer[];  -- per command id group: the append that committed it here
    -- Per append, the outcome:
    o_kind     smallint[];
    o_fv       bigint[];
    o_lv       bigint[];
    o_fp       bigint[];
    o_lp       bigint[];
    o_actual   bigint[];
    o_ref      integer[];  -- idempotency conflict with an append of this batch: its index
    i          integer;
    k          integer;
    g          integer;
    o          integer;
    cur        bigint;
    e          bigint;
    cnt        integer;
    v_write_error text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'esactors_append_batch needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    IF cardinality(p_expected) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_command_ids) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_digests) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_groups) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_sigs) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_counts) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_metadata) IS DISTINCT FROM cardinality(p_slots)
        OR cardinality(p_schema_versions) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_data) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_checksums) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_row_streams) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_row_appends) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_row_offsets) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_row_metadata) IS DISTINCT FROM cardinality(p_event_types)
        OR cardinality(p_row_commands) IS DISTINCT FROM cardinality(p_event_types)
    THEN
        RAISE EXCEPTION 'esactors_append_batch: arrays of unequal lengths';
    END IF;

    IF n > 0 THEN
        -- The commit order: held to the end of the transaction. Under READ COMMITTED
        -- every statement below takes a fresh snapshot, so it sees every commit that
        -- finished while this one waited here.
        SELECT c.last_position INTO v_position
            FROM {s}.position_counter c WHERE c.only_row FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'esactors: the position_counter row is missing';
        END IF;
        v_start := v_position;

        -- The streams' versions: the last of each through the (stream_id, version) index.
        SELECT array_agg(coalesce(v.version, 0) ORDER BY d.slot)
          INTO v_versions
          FROM unnest(p_streams) WITH ORDINALITY AS d(sid, slot)
          LEFT JOIN LATERAL (SELECT e.version FROM {s}.events e WHERE e.stream_id = d.sid
                              ORDER BY e.version DESC LIMIT 1) v ON true;
        IF cardinality(v_versions) IS DISTINCT FROM cardinality(p_streams)
            OR EXISTS (SELECT 1 FROM unnest(p_slots) x
                        WHERE x IS NULL OR x < 1 OR x > cardinality(p_streams))
        THEN
            RAISE EXCEPTION 'esactors_append_batch: a stream slot out of range';
        END IF;

        -- As if every append were accepted: each append's stream version and first
        -- position. If every check passes so, every append is accepted (by induction).
        SELECT bool_and(a.exp = a.cur OR a.exp = -1 OR (a.exp = -2 AND a.cur > 0)),
               array_agg(a.cur + 1 ORDER BY a.ord),
               array_agg(a.cur + a.cnt ORDER BY a.ord),
               array_agg(v_position + a.before + 1 ORDER BY a.ord),
               array_agg(v_position + a.before + a.cnt ORDER BY a.ord),
               sum(a.cnt),
               count(*) FILTER (WHERE a.grp > 0) = coalesce(max(a.grp), 0)
          INTO v_all_ok, o_fv, o_lv, o_fp, o_lp, v_rows, v_simple
          FROM (SELECT u.ord, u.exp, u.cnt, u.grp,
                       v_versions[u.slot] + sum(u.cnt) OVER (PARTITION BY u.slot ORDER BY u.ord)
                           - u.cnt AS cur,
                       sum(u.cnt) OVER (ORDER BY u.ord) - u.cnt AS before
                  FROM unnest(p_slots, p_expected, p_counts, p_groups)
                       WITH ORDINALITY AS u(slot, exp, cnt, grp, ord)) a;
        IF v_rows IS DISTINCT FROM coalesce(cardinality(p_event_types), 0) THEN
            RAISE EXCEPTION 'esactors_append_batch: the counts do not add up to the rows';
        END IF;

        v_has_cids := EXISTS (SELECT 1 FROM unnest(p_groups) AS g0 WHERE g0 > 0);
        IF v_has_cids THEN
            -- Command ids already stored: per append, same (stream, digest) or not.
            SELECT array_agg((CASE WHEN c.command_id IS NULL THEN 0
                                   WHEN c.stream_id = s.sid AND c.digest = u.dig THEN 1
                                   ELSE 2 END)::smallint ORDER BY u.ord),
                   array_agg(coalesce(c.first_version, 0) ORDER BY u.ord),
                   array_agg(coalesce(c.last_version, 0) ORDER BY u.ord),
                   array_agg(coalesce(c.first_position, 0) ORDER BY u.ord),
                   array_agg(coalesce(c.last_position, 0) ORDER BY u.ord),
                   bool_and(c.command_id IS NULL) AND v_simple
              INTO v_stored, v_sfv, v_slv, v_sfp, v_slp, v_simple
              FROM unnest(p_slots, p_command_ids, p_digests)
                   WITH ORDINALITY AS u(slot, cid, dig, ord)
              JOIN unnest(p_streams) WITH ORDINALITY AS s(sid, slot) ON s.slot = u.slot
              LEFT JOIN {s}.commands c ON c.command_id = u.cid;
        END IF;

        IF v_all_ok AND v_simple THEN
            -- The common case: every append accepted, set-based above.
            o_kind := array_fill(0::smallint, ARRAY[n]);
            o_actual := array_fill(0::bigint, ARRAY[n]);
            o_ref := array_fill(0, ARRAY[n]);
            v_position := v_position + v_rows;
        ELSE
            -- Refusals, duplicates or command ids: decide each append in order.
            v_owner := array_fill(0, ARRAY[n]);
            o_kind := array_fill(0::smallint, ARRAY[n]);
            o_fv := array_fill(0::bigint, ARRAY[n]);
            o_lv := array_fill(0::bigint, ARRAY[n]);
            o_fp := array_fill(0::bigint, ARRAY[n]);
            o_lp := array_fill(0::bigint, ARRAY[n]);
            o_actual := array_fill(0::bigint, ARRAY[n]);
            o_ref := array_fill(0, ARRAY[n]);
            FOR i IN 1..n LOOP
                g := p_groups[i];
                IF g > 0 THEN
                    IF v_stored[i] = 1 THEN  -- committed before: the first result again
                        o_kind[i] := 1;
                        o_fv[i] := v_sfv[i]; o_lv[i] := v_slv[i];
                        o_fp[i] := v_sfp[i]; o_lp[i] := v_slp[i];
                        CONTINUE;
                    ELSIF v_stored[i] = 2 THEN
                        o_kind[i] := 3;  -- recorded stream: read from commands at the end
                        CONTINUE;
                    END IF;
                    o := v_owner[g];
                    IF o > 0 THEN  -- committed earlier in this batch
                        IF p_sigs[o] = p_sigs[i] THEN
                            o_kind[i] := 1;
                            o_fv[i] := o_fv[o]; o_lv[i] := o_lv[o];
                            o_fp[i] := o_fp[o]; o_lp[i] := o_lp[o];
                        ELSE
                            o_kind[i] := 3;
                            o_ref[i] := o;
                        END IF;
                        CONTINUE;
                    END IF;
                END IF;
                k := p_slots[i];
                cur := v_versions[k];
                e := p_expected[i];
                IF e <> cur AND e <> -1 AND (e <> -2 OR cur = 0) THEN
                    o_kind[i] := 2;
                    o_actual[i] := cur;
                    CONTINUE;
                END IF;
                cnt := p_counts[i];
                o_fv[i] := cur + 1;
                o_lv[i] := cur + cnt;
                o_fp[i] := v_position + 1;
                o_lp[i] := v_position + cnt;
                v_versions[k] := cur + cnt;
                v_position := v_position + cnt;
                IF g > 0 THEN
                    v_owner[g] := i;
                END IF;
            END LOOP;
        END IF;

        IF v_position > v_start THEN
            -- Rows in batch order are in position order: no join, no sort. The client
            -- sends each row with its append's index, stream, metadata and command id.
            INSERT INTO {s}.events (position, stream_id, version, event_type, schema_version,
                                    data, metadata, command_id, recorded_at, checksum)
            SELECT o_fp[r.a] + r.k, r.sid, o_fv[r.a] + r.k, r.et, r.sv, r.data, r.meta, r.cid,
                   p_recorded_at, r.crc
              FROM unnest(p_row_appends, p_row_offsets, p_row_streams, p_event_types,
                          p_schema_versions, p_data, p_row_metadata, p_row_commands,
                          p_checksums) AS r(a, k, sid, et, sv, data, meta, cid, crc)
             WHERE o_kind[r.a] = 0;

            IF v_has_cids THEN
            INSERT INTO {s}.commands (command_id, stream_id, first_version, last_version,
                                      first_position, last_position, digest, recorded_at)
            SELECT u.cid, s.sid, u.fv, u.lv, u.fp, u.lp, u.dig, p_recorded_at
              FROM unnest(p_command_ids, p_slots, p_digests, o_kind, o_fv, o_lv, o_fp,
                          o_lp) AS u(cid, slot, dig, kind, fv, lv, fp, lp)
              JOIN unnest(p_streams) WITH ORDINALITY AS s(sid, slot) ON s.slot = u.slot
             WHERE u.kind = 0 AND u.cid IS NOT NULL
             ORDER BY u.cid;
            END IF;

            UPDATE {s}.position_counter SET last_position = v_position WHERE only_row;
        END IF;
    END IF;

    IF coalesce(cardinality(p_snapshots), 0) + coalesce(cardinality(p_checkpoints), 0) > 0
    THEN
        BEGIN  -- a subtransaction: a failed write leaves the appends in place
            -- Applied in key order (no deadlock between two batches); per key, what
            -- applying them one by one would leave: the newest version (the last
            -- queued of equals) for a snapshot, the last queued for a checkpoint.
            INSERT INTO {s}.snapshots AS t (stream_id, version, state_type, schema_version,
                                            data, checksum, recorded_at)
            SELECT DISTINCT ON (u.sid) u.sid, u.ver, u.st, u.sv, u.data, u.crc, u.at
              FROM unnest(p_snapshots, p_snap_versions, p_snap_types, p_snap_schemas,
                          p_snap_data, p_snap_checksums, p_snap_times)
                   WITH ORDINALITY AS u(sid, ver, st, sv, data, crc, at, ord)
             ORDER BY u.sid, u.ver DESC, u.ord DESC
            ON CONFLICT (stream_id) DO UPDATE SET
                version = excluded.version, state_type = excluded.state_type,
                schema_version = excluded.schema_version, data = excluded.data,
                checksum = excluded.checksum, recorded_at = excluded.recorded_at
              WHERE excluded.version >= t.version;

            INSERT INTO {s}.checkpoints AS t (name, position, updated_at)
            SELECT DISTINCT ON (u.name) u.name, u.pos, u.at
              FROM unnest(p_checkpoints, p_cp_positions, p_cp_times)
                   WITH ORDINALITY AS u(name, pos, at, ord)
             ORDER BY u.name, u.ord DESC
            ON CONFLICT (name) DO UPDATE SET
                position = excluded.position, updated_at = excluded.updated_at;
        EXCEPTION WHEN OTHERS THEN
            v_write_error := SQLSTATE || ': ' || SQLERRM;
        END;
    END IF;

    IF n > 0 THEN
        RETURN QUERY
        SELECT u.kind, u.fv, u.lv, u.fp, u.lp, u.actual,
               CASE WHEN u.kind <> 3 THEN NULL
                    WHEN u.ref > 0 THEN p_streams[p_slots[u.ref]]
                    ELSE (SELECT c.stream_id FROM {s}.commands c
                           WHERE c.command_id = p_command_ids[u.ord])
               END
          FROM unnest(o_kind, o_fv, o_lv, o_fp, o_lp, o_actual, o_ref)
               WITH ORDINALITY AS u(kind, fv, lv, fp, lp, actual, ref, ord)
         ORDER BY u.ord;
    END IF;
    IF v_write_error IS NOT NULL THEN
        RETURN QUERY SELECT 4::smallint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                            0::bigint, v_write_error;
    END IF;
END
$fn$
"""  # noqa: S608


def _migrations(schema: str) -> tuple[tuple[str, ...], ...]:
    s = quote_ident(schema)
    return (_v1(s),)


SCHEMA_VERSION: Final = 1
"""The version `migrate` brings a schema to: the number of migrations."""
assert len(_migrations("public")) == SCHEMA_VERSION


async def schema_version(conn: asyncpg.Connection, schema: str) -> int:
    """The version recorded in `schema` (0: not migrated, or no such schema)."""
    s = quote_ident(schema)
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.schema_version")
    if not exists:
        return 0
    found = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")  # noqa: S608
    return int(found)


async def migrate(conn: asyncpg.Connection, schema: str | None = None) -> int:
    """Bring `schema` (default: the connection's current schema; created if missing) to
    `SCHEMA_VERSION`; returns the version found before. Raises `RuntimeError` for a
    schema written by a newer esactors.

    A schema already current costs one query and takes no lock. Otherwise the work runs
    in one transaction holding `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`, which re-reads
    the version under the lock: concurrent migrators wait, then find it done. Must not be
    called inside a transaction the caller opened (it commits its own).
    """
    if schema is None:
        schema = await current_schema(conn)
    s = quote_ident(schema)
    found = await schema_version(conn, schema)
    if found == SCHEMA_VERSION:
        return found
    if found > SCHEMA_VERSION:
        raise _newer(schema, found)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        for statement in _bootstrap(s):
            await conn.execute(statement)
        found = await schema_version(conn, schema)
        if found > SCHEMA_VERSION:
            raise _newer(schema, found)
        record = _record_version(s)
        for number, statements in enumerate(_migrations(schema)[found:], start=found + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(record, number)
    return found


def _bootstrap(s: str) -> tuple[str, ...]:
    """The schema and its version table, in schema `s` (already quoted)."""
    return (
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        (
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            " version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        ),
    )


def _record_version(s: str) -> str:
    """The statement recording a migration applied, in schema `s` (already quoted)."""
    return (
        f"INSERT INTO {s}.schema_version (version, applied_at)"  # noqa: S608
        " VALUES ($1, extract(epoch FROM clock_timestamp()))"
    )


def _newer(schema: str, found: int) -> RuntimeError:
    return RuntimeError(
        f"the schema {schema!r} has esactors schema version {found}, newer than this"
        f" esactors understands ({SCHEMA_VERSION}); upgrade esactors to open it"
    )
