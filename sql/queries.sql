-- Fixed queries the Python side runs, by name. Values are always bound ($1, $2, ...).
-- This file is read, never applied; migrations/ and routines/ are applied (etl/migrate.py).

-- name: server_version
SELECT current_setting('server_version');

-- name: try_lock
-- An account's sync lock: runs of one account never interleave, runs of two accounts do. Keyed
-- by the account's key (64-bit hash), so it needs no row of the database: a run waiting for it
-- has changed nothing yet.
SELECT pg_try_advisory_lock(hashtextextended('etl.sync:' || $1, 0));

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended('etl.sync:' || $1, 0));

-- name: try_locks
-- The sync locks of several accounts ($1: their keys) tried at once: which were taken.
SELECT k, pg_try_advisory_lock(hashtextextended('etl.sync:' || k, 0)) FROM unnest($1::text[]) AS k;

-- name: unlock_all
SELECT pg_advisory_unlock(hashtextextended('etl.sync:' || k, 0)) FROM unnest($1::text[]) AS k;

-- name: account_lock_held
-- Whether a session holds the account's sync lock (a run of it is under way).
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
                WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                  AND (classid::bigint << 32 | objid::bigint)
                      = hashtextextended('etl.sync:' || $1, 0));

-- name: share_schema
-- Held by every run, shared: a migration (which takes it exclusively) waits for runs to end,
-- and runs wait for a migration to commit.
SELECT pg_try_advisory_lock_shared(hashtext('etl.schema'));

-- name: unshare_schema
SELECT pg_advisory_unlock_shared(hashtext('etl.schema'));

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext('etl.schema'));

-- name: lock_timeout
SELECT current_setting('lock_timeout');

-- name: set_lock_timeout
SELECT set_config('lock_timeout', $1, true);

-- name: ensure_account
SELECT etl.ensure_account_v1($1);

-- name: ensure_accounts
SELECT k, etl.ensure_account_v1(k) FROM unnest($1::text[]) AS k;

-- name: account_id
SELECT account_id FROM etl.accounts WHERE account_key = $1;

-- name: account_weights
-- How big each of these accounts is: the rows its last run of each entity staged (one probe
-- of the succeeded runs an entity, however long the account's history).
SELECT a.account_key, sum(r.rows_staged)
  FROM etl.accounts a
 CROSS JOIN unnest(ARRAY['agents', 'roles', 'groups']) AS e(entity)
 CROSS JOIN LATERAL (SELECT s.rows_staged
                       FROM etl.sync_runs s
                      WHERE s.account_id = a.account_id AND s.entity = e.entity
                        AND s.status = 'succeeded'
                      ORDER BY s.run_id DESC
                      LIMIT 1) r
 WHERE a.account_key = ANY ($1::text[])
 GROUP BY a.account_key;

-- name: day_outcomes
-- How each of these accounts' day went since a moment of the server's clock: the last run of
-- each entity of the day (accounts and entities without one are left out).
SELECT a.account_key, r.entity, r.status, r.message, coalesce(r.rows_staged, 0),
       extract(epoch FROM r.finished_at - r.started_at)::float8
  FROM etl.accounts a
 CROSS JOIN LATERAL (SELECT DISTINCT ON (s.entity) s.*
                       FROM etl.sync_runs s
                      WHERE s.account_id = a.account_id AND s.sync_day = $2
                        AND s.started_at >= $3
                      ORDER BY s.entity, s.run_id DESC) r
 WHERE a.account_key = ANY ($1::text[]);

-- name: server_now
SELECT now();

-- name: delete_account
SELECT etl.delete_account_v1($1)::text;

-- name: start_runs
-- A ledger row ('running') for the run of entity $3 of day $2 of each account of $1, with its
-- sync time ($4: given, or NULL) and forced flag ($5); $6 is the sync time of an entity's first
-- application, and $7 this process's run still applying on another connection (or NULL). Per
-- account: its run's id, its sync time (the given one, else that of the day's first succeeded
-- run of the entity, else $6), and the days the entity has been applied for.
SELECT m.account_id,
       etl.start_run_v3(m.account_id, $2, $3, s.synced_at, m.forced, $7) AS run_id,
       s.synced_at,
       ARRAY(SELECT DISTINCT r.sync_day FROM etl.sync_runs r
              WHERE r.account_id = m.account_id AND r.entity = $3 AND r.status = 'succeeded')
  FROM unnest($1::bigint[], $4::timestamptz[], $5::boolean[]) AS m(account_id, synced_at, forced)
 CROSS JOIN LATERAL (
       SELECT coalesce(m.synced_at,
                       (SELECT r.synced_at FROM etl.sync_runs r
                         WHERE r.account_id = m.account_id AND r.entity = $3
                           AND r.sync_day = $2 AND r.status = 'succeeded'
                         ORDER BY r.run_id LIMIT 1),
                       $6::timestamptz) AS synced_at) s;

-- name: record_unstarted_run
SELECT etl.record_unstarted_run_v2($1, $2, $3, $4, $5, $6);

-- name: end_run
SELECT etl.end_run_v2($1, $2, $3, $4);

-- name: run_file_hashes
-- The SHA-256 each run recorded for each file asked about ($1, $2, $3, $4: account, run, the
-- file's place in the run's reading, file), found by the ledger's key.
SELECT f.run_id, f.file, f.sha256
  FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[])
       AS w(account_id, run_id, file_index, file)
  JOIN etl.sync_run_files f
    ON f.account_id = w.account_id AND f.run_id = w.run_id AND f.file_index = w.file_index
 WHERE f.file = w.file;

-- name: clear_staging
-- The staging rows of entity $2 of each account of $1 deleted.
SELECT etl.clear_staging_v2(a, $2) FROM unnest($1::bigint[]) AS a;

-- name: apply
CALL etl.apply_sync_v3($1, $2, $3);

-- name: record_seconds
-- Each applied run's seconds per stage ($1, $2, $3: account, run, seconds as JSON) added to its
-- ledger row (details.seconds); the row's counts returned.
UPDATE etl.sync_runs r
   SET details = coalesce(r.details, '{}') || jsonb_build_object('seconds', s.seconds::jsonb)
  FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS s(account_id, run_id, seconds)
 WHERE r.account_id = s.account_id AND r.run_id = s.run_id
RETURNING r.run_id, r.rows_staged, r.rows_inserted, r.rows_updated, r.rows_unchanged,
          r.rows_removed, r.rows_quarantined, r.details::text;

-- The ids the accounts of $1 store, that a plan checks the day's records against.

-- name: known_agent_ids
SELECT account_id, agent_id FROM etl.agents WHERE account_id = ANY ($1::bigint[]);

-- name: known_role_ids
SELECT account_id, role_id FROM etl.roles WHERE account_id = ANY ($1::bigint[]);

-- name: stored_groups
SELECT account_id, group_id, parent_group_id, present FROM etl.groups
 WHERE account_id = ANY ($1::bigint[]);

-- name: schema_bookkept
SELECT to_regclass('etl.schema_routines') IS NOT NULL;

-- name: recorded_files
SELECT 'migrations/' || filename, sha256 FROM etl.schema_migrations
UNION ALL
SELECT 'routines/' || filename, sha256 FROM etl.schema_routines;

-- name: bootstrap_migrations
-- Creates the schema only where it is missing: a role that owns a schema etl made for it by the
-- DBA needs no CREATE privilege on the database (CREATE SCHEMA IF NOT EXISTS would check it).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'etl') THEN
        CREATE SCHEMA etl;
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS etl.schema_migrations (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS etl.schema_routines (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT filename, sha256 FROM etl.schema_migrations;

-- name: record_migration
INSERT INTO etl.schema_migrations (filename, sha256) VALUES ($1, $2);

-- name: adopt_legacy_migrations
WITH legacy AS (DELETE FROM etl.schema_migrations WHERE filename = ANY ($1::text[]))
INSERT INTO etl.schema_migrations (filename, sha256) VALUES ($2, $3);

-- name: applied_routines
SELECT filename, sha256 FROM etl.schema_routines;

-- name: forget_routines
DELETE FROM etl.schema_routines;

-- name: record_routine
INSERT INTO etl.schema_routines (filename, sha256) VALUES ($1, $2);

-- name: drop_routines
-- Every view of schema etl, every trigger that runs a routine of schema etl, then every routine
-- of schema etl. Without CASCADE: an object of the user's that uses one stops the migration
-- instead of being dropped.
DO $$
DECLARE
    v_view    regclass;
    v_trigger record;
    v_routine regprocedure;
BEGIN
    FOR v_view IN
        SELECT c.oid::regclass FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'etl'::regnamespace AND c.relkind = 'v'
    LOOP
        EXECUTE format('DROP VIEW %s', v_view);
    END LOOP;
    FOR v_trigger IN
        SELECT t.tgname, t.tgrelid::regclass AS tbl
          FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND p.pronamespace = 'etl'::regnamespace
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.tbl);
    END LOOP;
    FOR v_routine IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'etl'::regnamespace
    LOOP
        EXECUTE format('DROP ROUTINE %s', v_routine);
    END LOOP;
END
$$;

-- Dumps of one account's final state, for the replay's golden file: every column that a replay
-- of the same input reproduces exactly (wall-clock and identity columns left out). Runs are
-- numbered within the account (etl.run_number), so that one account's dump does not depend on
-- the runs of others.

-- name: dump_agents
SELECT agent_id, name, email, deactivated, contact_active, present, active, created_at,
       updated_at, synced_at
  FROM etl.agents WHERE account_id = $1 ORDER BY agent_id;

-- name: dump_roles
SELECT role_id, name, description, is_default, agent_type, present, created_at, updated_at,
       synced_at
  FROM etl.roles WHERE account_id = $1 ORDER BY role_id;

-- name: dump_agent_role_mapping
SELECT agent_id, role_id, status, assigned_at, removed_at
  FROM etl.agent_role_mapping WHERE account_id = $1 ORDER BY agent_id, role_id;

-- name: dump_agent_role_history
SELECT agent_id, role_id, from_status, to_status, changed_at, sync_day,
       (SELECT count(*) FROM etl.sync_runs r
         WHERE r.account_id = h.account_id AND r.run_id <= h.run_id)
  FROM etl.agent_role_history h WHERE account_id = $1 ORDER BY history_id;

-- name: dump_groups
SELECT group_id, name, description, parent_group_id, present, inactive, created_at, updated_at,
       synced_at
  FROM etl.groups WHERE account_id = $1 ORDER BY group_id;

-- name: dump_group_membership
SELECT group_id, agent_id, synced_at FROM etl.group_membership WHERE account_id = $1 ORDER BY group_id, agent_id;

-- name: dump_agent_pipeline_errors
SELECT (SELECT count(*) FROM etl.sync_runs r
         WHERE r.account_id = e.account_id AND r.run_id <= e.run_id),
       sync_day, record_kind, error_type, field, record_id, source_file, record_index,
       error_message, raw_record::text, raw_text
  FROM etl.agent_pipeline_errors e WHERE account_id = $1
 ORDER BY sync_day, source_file, record_index, field;

-- name: dump_role_pipeline_errors
SELECT (SELECT count(*) FROM etl.sync_runs r
         WHERE r.account_id = e.account_id AND r.run_id <= e.run_id),
       sync_day, record_kind, error_type, field, record_id, source_file, record_index,
       error_message, raw_record::text, raw_text
  FROM etl.role_pipeline_errors e WHERE account_id = $1
 ORDER BY sync_day, source_file, record_index, field;

-- name: dump_group_pipeline_errors
SELECT (SELECT count(*) FROM etl.sync_runs r
         WHERE r.account_id = e.account_id AND r.run_id <= e.run_id),
       sync_day, record_kind, error_type, field, record_id, source_file, record_index,
       error_message, raw_record::text, raw_text
  FROM etl.group_pipeline_errors e WHERE account_id = $1
 ORDER BY sync_day, source_file, record_index, field;

-- name: dump_sync_runs
SELECT row_number() OVER (ORDER BY run_id), sync_day, entity, status, synced_at, forced,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('file', file, 'bytes', bytes,
                                                      'sha256', sha256) ORDER BY file_index),
                        '[]')
          FROM etl.sync_run_files f
         WHERE f.account_id = r.account_id AND f.run_id = r.run_id)::text, rows_staged,
       rows_inserted, rows_updated, rows_unchanged, rows_removed, rows_quarantined,
       (details - 'seconds')::text, message
  FROM etl.sync_runs r WHERE account_id = $1 ORDER BY run_id;

-- name: view_ready
-- The views (python -m etl status | tree | errors) only read.
SELECT to_regclass('etl.accounts') IS NOT NULL;

-- name: view_accounts
-- Each account with the days it applied and its newest run.
SELECT a.account_key, a.account_id,
       (SELECT array_agg(DISTINCT r.sync_day) FROM etl.sync_runs r
         WHERE r.account_id = a.account_id AND r.status = 'succeeded') AS days,
       last.sync_day, last.entity, last.run_id, last.status, last.finished_at
  FROM etl.accounts a
  LEFT JOIN LATERAL (SELECT r.sync_day, r.entity, r.run_id, r.status, r.finished_at
                       FROM etl.sync_runs r WHERE r.account_id = a.account_id
                      ORDER BY r.run_id DESC LIMIT 1) last ON true
 ORDER BY a.account_key;

-- name: view_status
SELECT run_id, sync_day, entity, status, synced_at, rows_staged, rows_inserted, rows_updated,
       rows_unchanged, rows_removed, rows_quarantined, message, started_at, finished_at,
       count(*) OVER (PARTITION BY sync_day, entity) AS runs
  FROM etl.sync_runs
 WHERE account_id = $1 AND ($2::text IS NULL OR sync_day = $2)
 ORDER BY run_id;

-- name: view_groups
SELECT g.group_id, g.name, g.parent_group_id, g.present, g.inactive,
       count(a.agent_id) AS members, count(a.agent_id) FILTER (WHERE a.active) AS active_members
  FROM etl.groups g
  LEFT JOIN etl.group_membership m ON m.account_id = $1 AND m.group_id = g.group_id
  LEFT JOIN etl.agents a ON a.account_id = $1 AND a.agent_id = m.agent_id
 WHERE g.account_id = $1
 GROUP BY g.account_id, g.group_id
 ORDER BY g.group_id;

-- name: view_errors
-- Per entity, the errors of the day's last succeeded run: a count per (type, field) with array
-- positions folded ("agent_ids[3]" -> "agent_ids[]"), and the first few records of each.
WITH runs AS (
    SELECT DISTINCT ON (entity) entity, run_id FROM etl.sync_runs
     WHERE account_id = $1 AND sync_day = $2 AND status = 'succeeded'
     ORDER BY entity, run_id DESC
), errors AS (
    SELECT run_id, error_type, field, record_id, source_file, record_index, error_message
      FROM etl.agent_pipeline_errors WHERE account_id = $1 AND sync_day = $2
    UNION ALL
    SELECT run_id, error_type, field, record_id, source_file, record_index, error_message
      FROM etl.role_pipeline_errors WHERE account_id = $1 AND sync_day = $2
    UNION ALL
    SELECT run_id, error_type, field, record_id, source_file, record_index, error_message
      FROM etl.group_pipeline_errors WHERE account_id = $1 AND sync_day = $2
), grouped AS (
    SELECT r.entity, r.run_id, e.error_type,
           regexp_replace(coalesce(e.field, '-'), '\[\d+\]', '[]', 'g') AS field,
           e.record_id, e.source_file, e.record_index, e.error_message
      FROM runs r JOIN errors e USING (run_id)
), ranked AS (
    SELECT *, count(*) OVER (PARTITION BY entity, error_type, field) AS n,
           row_number() OVER (PARTITION BY entity, error_type, field
                              ORDER BY source_file, record_index, error_message) AS example
      FROM grouped
)
SELECT entity, run_id, error_type, field, n, record_id, source_file, error_message
  FROM ranked WHERE example <= $3
 ORDER BY entity, error_type, field, example;

-- A dry run's picture of the account's final tables before its steps (temporary tables, gone
-- at the rollback).

-- name: dry_run_before_agents
CREATE TEMP TABLE before_agents AS SELECT * FROM etl.agents WHERE account_id = $1;

-- name: dry_run_before_roles
CREATE TEMP TABLE before_roles AS SELECT * FROM etl.roles WHERE account_id = $1;

-- name: dry_run_before_pairs
CREATE TEMP TABLE before_pairs AS
SELECT agent_id, role_id, status FROM etl.agent_role_mapping WHERE account_id = $1;

-- name: dry_run_before_groups
CREATE TEMP TABLE before_groups AS SELECT * FROM etl.groups WHERE account_id = $1;

-- name: dry_run_before_members
CREATE TEMP TABLE before_members AS
SELECT group_id, agent_id FROM etl.group_membership WHERE account_id = $1;

-- name: dry_run_diff
-- What the dry run's steps changed in account $2, per table and kind of change: a count, and
-- the first $1 keys of each (with the names of the fields that changed, for "changed").
WITH agents AS (
    SELECT * FROM etl.agents WHERE account_id = $2
), roles AS (
    SELECT * FROM etl.roles WHERE account_id = $2
), pairs AS (
    SELECT * FROM etl.agent_role_mapping WHERE account_id = $2
), groups AS (
    SELECT * FROM etl.groups WHERE account_id = $2
), members AS (
    SELECT * FROM etl.group_membership WHERE account_id = $2
), changes (entity, what, k1, k2, fields) AS (
    SELECT 'agents', 'new', a.agent_id, NULL::bigint, NULL
      FROM agents a LEFT JOIN before_agents b USING (agent_id) WHERE b.agent_id IS NULL
    UNION ALL
    SELECT 'agents', 'changed', a.agent_id, NULL, array_to_string(ARRAY[
               CASE WHEN a.name IS DISTINCT FROM b.name THEN 'name' END,
               CASE WHEN a.email IS DISTINCT FROM b.email THEN 'email' END,
               CASE WHEN a.deactivated IS DISTINCT FROM b.deactivated THEN 'deactivated' END,
               CASE WHEN a.contact_active IS DISTINCT FROM b.contact_active
                    THEN 'contact_active' END,
               CASE WHEN a.created_at IS DISTINCT FROM b.created_at THEN 'created_at' END,
               CASE WHEN a.updated_at IS DISTINCT FROM b.updated_at THEN 'updated_at' END], ',')
      FROM agents a JOIN before_agents b USING (agent_id)
     WHERE (a.name, a.email, a.deactivated, a.contact_active, a.created_at, a.updated_at)
           IS DISTINCT FROM
           (b.name, b.email, b.deactivated, b.contact_active, b.created_at, b.updated_at)
    UNION ALL
    SELECT 'agents', CASE WHEN a.present THEN 'back' ELSE 'removed' END, a.agent_id, NULL, NULL
      FROM agents a JOIN before_agents b USING (agent_id) WHERE a.present <> b.present
    UNION ALL
    SELECT 'agents', CASE WHEN a.active THEN 'turned active' ELSE 'turned inactive' END,
           a.agent_id, NULL, NULL
      FROM agents a JOIN before_agents b USING (agent_id) WHERE a.active <> b.active
    UNION ALL
    SELECT 'roles', 'new', a.role_id, NULL, NULL
      FROM roles a LEFT JOIN before_roles b USING (role_id) WHERE b.role_id IS NULL
    UNION ALL
    SELECT 'roles', 'changed', a.role_id, NULL, array_to_string(ARRAY[
               CASE WHEN a.name IS DISTINCT FROM b.name THEN 'name' END,
               CASE WHEN a.description IS DISTINCT FROM b.description THEN 'description' END,
               CASE WHEN a.is_default IS DISTINCT FROM b.is_default THEN 'is_default' END,
               CASE WHEN a.agent_type IS DISTINCT FROM b.agent_type THEN 'agent_type' END,
               CASE WHEN a.created_at IS DISTINCT FROM b.created_at THEN 'created_at' END,
               CASE WHEN a.updated_at IS DISTINCT FROM b.updated_at THEN 'updated_at' END], ',')
      FROM roles a JOIN before_roles b USING (role_id)
     WHERE (a.name, a.description, a.is_default, a.agent_type, a.created_at, a.updated_at)
           IS DISTINCT FROM
           (b.name, b.description, b.is_default, b.agent_type, b.created_at, b.updated_at)
    UNION ALL
    SELECT 'roles', CASE WHEN a.present THEN 'back' ELSE 'removed' END, a.role_id, NULL, NULL
      FROM roles a JOIN before_roles b USING (role_id) WHERE a.present <> b.present
    UNION ALL
    SELECT 'roles', 'pairs assigned', a.agent_id, a.role_id, NULL
      FROM pairs a LEFT JOIN before_pairs b USING (agent_id, role_id)
     WHERE b.agent_id IS NULL AND a.status = 'assigned'
    UNION ALL
    SELECT 'roles', CASE WHEN a.status = 'assigned' THEN 'pairs re-assigned'
                         ELSE 'pairs removed' END, a.agent_id, a.role_id, NULL
      FROM pairs a JOIN before_pairs b USING (agent_id, role_id)
     WHERE a.status <> b.status
    UNION ALL
    SELECT 'groups', 'new', a.group_id, NULL, NULL
      FROM groups a LEFT JOIN before_groups b USING (group_id) WHERE b.group_id IS NULL
    UNION ALL
    SELECT 'groups', 'changed', a.group_id, NULL, array_to_string(ARRAY[
               CASE WHEN a.name IS DISTINCT FROM b.name THEN 'name' END,
               CASE WHEN a.description IS DISTINCT FROM b.description THEN 'description' END,
               CASE WHEN a.parent_group_id IS DISTINCT FROM b.parent_group_id
                    THEN 'parent_group_id' END,
               CASE WHEN a.created_at IS DISTINCT FROM b.created_at THEN 'created_at' END,
               CASE WHEN a.updated_at IS DISTINCT FROM b.updated_at THEN 'updated_at' END], ',')
      FROM groups a JOIN before_groups b USING (group_id)
     WHERE (a.name, a.description, a.parent_group_id, a.created_at, a.updated_at)
           IS DISTINCT FROM (b.name, b.description, b.parent_group_id, b.created_at, b.updated_at)
    UNION ALL
    SELECT 'groups', CASE WHEN a.present THEN 'back' ELSE 'removed' END, a.group_id, NULL, NULL
      FROM groups a JOIN before_groups b USING (group_id) WHERE a.present <> b.present
    UNION ALL
    SELECT 'groups', CASE WHEN a.inactive THEN 'turned inactive' ELSE 'turned active' END,
           a.group_id, NULL, NULL
      FROM groups a JOIN before_groups b USING (group_id) WHERE a.inactive <> b.inactive
    UNION ALL
    SELECT 'groups', 'members added', a.group_id, a.agent_id, NULL
      FROM members a LEFT JOIN before_members b USING (group_id, agent_id)
     WHERE b.group_id IS NULL
    UNION ALL
    SELECT 'groups', 'members removed', b.group_id, b.agent_id, NULL
      FROM before_members b LEFT JOIN members a USING (group_id, agent_id)
     WHERE a.group_id IS NULL
), ranked AS (
    SELECT *, count(*) OVER (PARTITION BY entity, what) AS n,
           row_number() OVER (PARTITION BY entity, what ORDER BY k1, k2) AS example
      FROM changes
)
SELECT entity, what, n, k1, k2, fields FROM ranked WHERE example <= $1
 ORDER BY entity, what, example;
