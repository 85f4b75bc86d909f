"""The batch-append function of the PostgreSQL store, as the migration creates it: the
plpgsql that decides and writes a whole batch under the position counter's lock (see
`store._postgres_batch` for how it is called and `store._postgres_schema` for where).

`_append_batch_function` is one long text on purpose, not cut into pieces like the
Python around it: it is the source of one server-side function, and one call of that
function is one statement, so one transaction. Its fast path, its careful path (one
append after another on the stored state), the fences, and the snapshot and checkpoint
writes must all run inside that statement, under the counter's row lock and in one
round trip; splitting it into several functions would only move the same text into
more `CREATE FUNCTION`s (each one more object for the migrations to keep in step),
and into several statements would hold the lock across round trips to the client.
A schema migrated once keeps the function it was created with, so changing this text
takes a new migration too (`store._postgres_schema`)."""

from __future__ import annotations

__all__: list[str] = []


def _append_batch_function(s: str) -> str:
    """The batch function: one row, `start_position` (the last position before the
    batch) and, only when the careful path decided the batch, one array per outcome
    field (kinds: 0 ok, 1 duplicate, 2 concurrency conflict, 3 idempotency conflict,
    5 lease lost: `actuals` holds the lease's epoch now and `recorded_streams` its owner,
    NULL when there is no such lease; 6 chain broken: the append it is chained to was
    not accepted as a fresh append);
    `kinds` NULL means every append was accepted as the client proposed. `write_error`:
    the snapshot/checkpoint writes failed (the appends still commit, as in SQLite).

    `s` is a quoted identifier (`quote_ident`), the only text spliced in."""
    return f"""
CREATE FUNCTION {s}.esactors_append_batch(
    p_row_streams     text[],    -- per row (event; an append's rows one after the other):
    p_row_versions    bigint[],  --   its stream, the version the client proposes for it,
    p_event_types     text[],
    p_schema_versions bigint[],
    p_data            bytea,     --   the rows' data, one after the other,
    p_data_offsets    integer[], --   where each starts and the last ends (r + 1: 0, ...)
    p_checksums       bigint[],
    p_row_metadata    bytea[],   --   its append's metadata (NULL array: none in the batch)
    p_row_commands    text[],    --   its append's command id (NULL array: none in the batch)
    p_expected        bigint[],  -- per append: >= 0, or -1 ANY, -2 STREAM_EXISTS
    p_counts          integer[], -- per append: its number of rows (NULL array: one each)
    p_digests         bytea[],   -- per append: NULL without a command id (NULL array: none)
    p_check_streams   text[],    -- (stream, version) pairs that must exist for the
    p_check_versions  bigint[],  --   proposed versions to hold (NULL arrays: none)
    p_careful         boolean,   -- true: skip the fast path (a proposal cannot hold)
    p_known_position  bigint,    -- the last position the client's cache has seen
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
    p_cp_times        double precision[] DEFAULT NULL, -- per checkpoint: updated_at
    p_fence_names     text[] DEFAULT NULL,   -- per append: its fence's lease name, owner
    p_fence_owners    text[] DEFAULT NULL,   --   and epoch (NULL: not fenced); NULL
    p_fence_epochs    bigint[] DEFAULT NULL, --   arrays: no fenced append in the batch
    p_chained         integer[] DEFAULT NULL -- per append: the append (1-based) it is
                                             --   chained to, 0: none (NULL: none is)
)
RETURNS TABLE (
    start_position   bigint,
    kinds            smallint[],
    first_versions   bigint[],
    last_versions    bigint[],
    first_positions  bigint[],
    last_positions   bigint[],
    actuals          bigint[],
    recorded_streams text[],
    write_error      text
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n          integer := coalesce(cardinality(p_expected), 0);
    r          integer := coalesce(cardinality(p_row_streams), 0);
    v_position bigint := 0;
    v_start    bigint := 0;
    v_fast     boolean := false;
    v_counts   integer[]; -- per append (the careful path): its number of rows
    v_first    integer[]; -- its first row
    v_sids     text[];    -- its stream
    v_cids     text[];    -- its command id
    v_slots    integer[]; -- the first append of its stream in the batch
    v_groups   integer[]; -- the first append of its command id in the batch, 0: none
    v_stored   smallint[]; -- its command id is stored: 0 no, 1 same, 2 other
    v_sfv      bigint[];   -- the stored command's result, when v_stored > 0
    v_slv      bigint[];
    v_sfp      bigint[];
    v_slp      bigint[];
    v_versions bigint[];  -- per slot: its stream's version, chained in the batch
    v_owner    integer[]; -- per group: the append that committed its command id here
    v_lost     boolean[]; -- per append: its fence's lease has another owner or epoch
    v_holders  text[];    --   the lease's owner and epoch now (NULL: no such lease)
    v_holder_epochs bigint[];
    v_any_lost boolean := false;
    o_kind     smallint[]; -- per append, the outcome
    o_fv       bigint[];
    o_lv       bigint[];
    o_fp       bigint[];
    o_lp       bigint[];
    o_actual   bigint[];
    o_ref      integer[]; -- idempotency conflict with an append of this batch: its index
    o_recorded text[];
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
    IF coalesce(cardinality(p_row_versions), 0) <> r
        OR coalesce(cardinality(p_event_types), 0) <> r
        OR coalesce(cardinality(p_schema_versions), 0) <> r
        OR coalesce(cardinality(p_data_offsets), 0) <> r + 1
        OR coalesce(cardinality(p_checksums), 0) <> r
        OR cardinality(p_row_metadata) <> r
        OR cardinality(p_row_commands) <> r
        OR cardinality(p_counts) <> n
        OR cardinality(p_digests) <> n
        OR (p_counts IS NULL AND r <> n)
        OR coalesce(cardinality(p_check_streams), 0)
           <> coalesce(cardinality(p_check_versions), 0)
    THEN
        RAISE EXCEPTION 'esactors_append_batch: arrays of unequal lengths';
    END IF;

    IF n > 0 AND p_fence_names IS NOT NULL THEN
        IF cardinality(p_fence_names) <> n OR cardinality(p_fence_owners) <> n
            OR cardinality(p_fence_epochs) <> n
        THEN
            RAISE EXCEPTION 'esactors_append_batch: fence arrays of unequal lengths';
        END IF;
        -- The fences' leases, locked (FOR SHARE, in name order) to the end of the
        -- transaction: nobody takes one over before this batch commits.
        PERFORM 1 FROM {s}.leases l
          WHERE l.name IN (SELECT f0 FROM unnest(p_fence_names) AS f0 WHERE f0 IS NOT NULL)
          ORDER BY l.name FOR SHARE;
        SELECT array_agg(f.nm IS NOT NULL AND (l.owner IS DISTINCT FROM f.ow
                                               OR l.epoch IS DISTINCT FROM f.ep)
                         ORDER BY f.ord),
               array_agg(l.owner ORDER BY f.ord), array_agg(l.epoch ORDER BY f.ord)
          INTO v_lost, v_holders, v_holder_epochs
          FROM unnest(p_fence_names, p_fence_owners, p_fence_epochs)
               WITH ORDINALITY AS f(nm, ow, ep, ord)
          LEFT JOIN {s}.leases l ON l.name = f.nm;
        v_any_lost := true = ANY(v_lost);
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

        -- The fast path: the client proposed every row's version (from the expected
        -- versions, chained in the batch). They hold if each stream's version is the
        -- proposed base: the base exists (checked here, where the client could not
        -- vouch for it) and nothing above it does (else the unique index refuses a
        -- row), and no command id is stored (else the primary key refuses one).
        -- A counter below what the client saw: not the history its cache knows (the
        -- schema was made anew, or restored): the careful path, and the client drops it.
        IF NOT p_careful AND NOT v_any_lost AND v_position >= p_known_position THEN
            v_fast := p_check_streams IS NULL OR coalesce(
                (SELECT bool_and(EXISTS (SELECT 1 FROM {s}.events e
                                          WHERE e.stream_id = c.sid AND e.version = c.ver))
                   FROM unnest(p_check_streams, p_check_versions) AS c(sid, ver)), true);
        END IF;
        IF v_fast THEN
            BEGIN  -- a subtransaction: a refused row undoes the fast path, and only it
                INSERT INTO {s}.events (position, stream_id, version, event_type,
                                        schema_version, data, metadata, command_id,
                                        recorded_at, checksum)
                SELECT v_position + x.rn, x.sid, x.ver, x.et, x.sv,
                       substring(p_data FROM x.d0 + 1 FOR x.d1 - x.d0), x.meta, x.cid,
                       p_recorded_at, x.crc
                  FROM unnest(p_row_streams, p_row_versions, p_event_types,
                              p_schema_versions, p_data_offsets[1:r],
                              p_data_offsets[2:r + 1], p_row_metadata, p_row_commands,
                              p_checksums)
                       WITH ORDINALITY AS x(sid, ver, et, sv, d0, d1, meta, cid, crc, rn);
                IF p_row_commands IS NOT NULL AND p_counts IS NULL THEN
                    INSERT INTO {s}.commands (command_id, stream_id, first_version,
                                              last_version, first_position, last_position,
                                              digest, recorded_at)
                    SELECT x.cid, x.sid, x.ver, x.ver, v_position + x.rn, v_position + x.rn,
                           x.dig, p_recorded_at
                      FROM unnest(p_row_commands, p_row_streams, p_row_versions, p_digests)
                           WITH ORDINALITY AS x(cid, sid, ver, dig, rn)
                     WHERE x.cid IS NOT NULL;
                ELSIF p_row_commands IS NOT NULL THEN
                    INSERT INTO {s}.commands (command_id, stream_id, first_version,
                                              last_version, first_position, last_position,
                                              digest, recorded_at)
                    SELECT x.cid, x.sid, x.ver, x.ver + a.cnt - 1, v_position + a.f,
                           v_position + a.f + a.cnt - 1, a.dig, p_recorded_at
                      FROM (SELECT u.cnt, u.dig, sum(u.cnt) OVER (ORDER BY u.ord) - u.cnt + 1 AS f
                              FROM unnest(p_counts, p_digests) WITH ORDINALITY AS u(cnt, dig, ord)) a
                      JOIN unnest(p_row_commands, p_row_streams, p_row_versions)
                           WITH ORDINALITY AS x(cid, sid, ver, rn) ON x.rn = a.f
                     WHERE x.cid IS NOT NULL;
                END IF;
            EXCEPTION WHEN unique_violation THEN
                v_fast := false;
            END;
        END IF;

        IF v_fast THEN
            v_position := v_position + r;
        ELSE
            -- The careful path: decide each append in order on the stored state.
            v_counts := coalesce(p_counts, array_fill(1, ARRAY[n]));
            IF EXISTS (SELECT 1 FROM unnest(v_counts) AS c0 WHERE c0 IS NULL OR c0 < 1) THEN
                RAISE EXCEPTION 'esactors_append_batch: an append without rows';
            END IF;
            SELECT array_agg(b.f ORDER BY b.ord), array_agg(b.sid ORDER BY b.ord),
                   array_agg(b.cid ORDER BY b.ord), array_agg(b.slot ORDER BY b.ord),
                   array_agg(b.grp ORDER BY b.ord),
                   array_agg((CASE WHEN c.command_id IS NULL THEN 0
                                   WHEN c.stream_id = b.sid AND c.digest = b.dig THEN 1
                                   ELSE 2 END)::smallint ORDER BY b.ord),
                   array_agg(coalesce(c.first_version, 0) ORDER BY b.ord),
                   array_agg(coalesce(c.last_version, 0) ORDER BY b.ord),
                   array_agg(coalesce(c.first_position, 0) ORDER BY b.ord),
                   array_agg(coalesce(c.last_position, 0) ORDER BY b.ord),
                   sum(b.cnt)
              INTO v_first, v_sids, v_cids, v_slots, v_groups, v_stored, v_sfv, v_slv,
                   v_sfp, v_slp, cur
              FROM (SELECT a.ord::integer AS ord, a.f::integer AS f, a.cnt, a.dig,
                           x.sid, x.cid,
                           min(a.ord) OVER (PARTITION BY x.sid)::integer AS slot,
                           (CASE WHEN x.cid IS NULL THEN 0
                                 ELSE min(a.ord) OVER (PARTITION BY x.cid) END)::integer AS grp
                      FROM (SELECT u.ord, u.cnt, u.dig,
                                   sum(u.cnt) OVER (ORDER BY u.ord) - u.cnt + 1 AS f
                              FROM unnest(v_counts, p_digests)
                                   WITH ORDINALITY AS u(cnt, dig, ord)) a
                      JOIN unnest(p_row_streams, p_row_commands)
                           WITH ORDINALITY AS x(sid, cid, rn) ON x.rn = a.f) b
              LEFT JOIN {s}.commands c ON c.command_id = b.cid;
            IF cur IS DISTINCT FROM r OR cardinality(v_first) IS DISTINCT FROM n THEN
                RAISE EXCEPTION 'esactors_append_batch: the counts do not add up to the rows';
            END IF;

            -- The streams' versions: the last of each through the (stream_id, version)
            -- index, at its first append's slot.
            SELECT array_agg(CASE WHEN u.slot = u.ord THEN
                                 coalesce((SELECT ev.version FROM {s}.events ev
                                            WHERE ev.stream_id = u.sid
                                            ORDER BY ev.version DESC LIMIT 1), 0)
                             ELSE 0 END ORDER BY u.ord)
              INTO v_versions
              FROM unnest(v_slots, v_sids) WITH ORDINALITY AS u(slot, sid, ord);

            v_owner := array_fill(0, ARRAY[n]);
            o_kind := array_fill(0::smallint, ARRAY[n]);
            o_fv := array_fill(0::bigint, ARRAY[n]);
            o_lv := array_fill(0::bigint, ARRAY[n]);
            o_fp := array_fill(0::bigint, ARRAY[n]);
            o_lp := array_fill(0::bigint, ARRAY[n]);
            o_actual := array_fill(0::bigint, ARRAY[n]);
            o_ref := array_fill(0, ARRAY[n]);
            FOR i IN 1..n LOOP
                IF p_chained IS NOT NULL AND p_chained[i] > 0
                   AND o_kind[p_chained[i]] <> 0 THEN
                    o_kind[i] := 6;  -- the one it is chained to was not accepted fresh
                    CONTINUE;
                END IF;
                g := v_groups[i];
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
                        IF v_slots[o] = v_slots[i] AND p_digests[o] = p_digests[i] THEN
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
                IF v_any_lost AND v_lost[i] THEN  -- its fence failed: refused alone
                    o_kind[i] := 5;
                    o_actual[i] := coalesce(v_holder_epochs[i], 0);
                    CONTINUE;
                END IF;
                k := v_slots[i];
                cur := v_versions[k];
                e := p_expected[i];
                IF e <> cur AND e <> -1 AND (e <> -2 OR cur = 0) THEN
                    o_kind[i] := 2;
                    o_actual[i] := cur;
                    CONTINUE;
                END IF;
                cnt := v_counts[i];
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

            IF v_position > v_start THEN
                INSERT INTO {s}.events (position, stream_id, version, event_type,
                                        schema_version, data, metadata, command_id,
                                        recorded_at, checksum)
                SELECT o_fp[a.ap] + a.k, x.sid, o_fv[a.ap] + a.k, x.et, x.sv,
                       substring(p_data FROM x.d0 + 1 FOR x.d1 - x.d0), x.meta, x.cid,
                       p_recorded_at, x.crc
                  FROM (SELECT u.ap, g0.k, u.f + g0.k AS rn
                          FROM unnest(v_first, v_counts, o_kind)
                               WITH ORDINALITY AS u(f, cnt, kind, ap),
                               generate_series(0, u.cnt - 1) AS g0(k)
                         WHERE u.kind = 0) a
                  JOIN unnest(p_row_streams, p_event_types, p_schema_versions,
                              p_data_offsets[1:r], p_data_offsets[2:r + 1], p_row_metadata,
                              p_row_commands, p_checksums)
                       WITH ORDINALITY AS x(sid, et, sv, d0, d1, meta, cid, crc, rn)
                       ON x.rn = a.rn;
                INSERT INTO {s}.commands (command_id, stream_id, first_version,
                                          last_version, first_position, last_position,
                                          digest, recorded_at)
                SELECT u.cid, u.sid, u.fv, u.lv, u.fp, u.lp, u.dig, p_recorded_at
                  FROM unnest(v_cids, v_sids, p_digests, o_kind, o_fv, o_lv, o_fp, o_lp)
                       AS u(cid, sid, dig, kind, fv, lv, fp, lp)
                 WHERE u.kind = 0 AND u.cid IS NOT NULL;
            END IF;
            SELECT array_agg(CASE WHEN u.kind = 5 THEN v_holders[u.ord]
                                  WHEN u.kind <> 3 THEN NULL
                                  WHEN u.ref > 0 THEN v_sids[u.ref]
                                  ELSE (SELECT c.stream_id FROM {s}.commands c
                                         WHERE c.command_id = u.cid)
                             END ORDER BY u.ord)
              INTO o_recorded
              FROM unnest(o_kind, o_ref, v_cids) WITH ORDINALITY AS u(kind, ref, cid, ord);
        END IF;

        IF v_position > v_start THEN
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

    RETURN QUERY SELECT v_start, o_kind, o_fv, o_lv, o_fp, o_lp, o_actual, o_recorded,
                        v_write_error;
END
$fn$
"""  # noqa: S608
