-- Fixed queries the Python side runs, by name. Values are always bound ($1, $2, ...).
-- Numbered files beside this one are migrations; this file is read, never applied.

-- name: server_version
SELECT current_setting('server_version');

-- name: try_lock
SELECT pg_try_advisory_lock(hashtext('etl.sync'));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('etl.sync'));

-- name: first_synced_at
SELECT synced_at FROM etl.sync_runs
 WHERE entity = $1 AND sync_day = $2 AND status = 'succeeded'
 ORDER BY run_id LIMIT 1;

-- name: applied_days
SELECT DISTINCT sync_day FROM etl.sync_runs WHERE entity = $1 AND status = 'succeeded';

-- name: start_run
SELECT etl.start_run_v1($1, $2, $3, $4);

-- name: end_run
SELECT etl.end_run_v1($1, $2, $3);

-- name: set_run_files
UPDATE etl.sync_runs SET input_files = $2::jsonb WHERE run_id = $1;

-- name: clear_staging
SELECT etl.clear_staging_v1($1);

-- name: apply
CALL etl.apply_sync_v1($1, $2);

-- name: run_counts
SELECT rows_staged, rows_inserted, rows_updated, rows_unchanged, rows_removed, rows_quarantined,
       details::text
  FROM etl.sync_runs WHERE run_id = $1;

-- name: known_agent_ids
SELECT agent_id FROM etl.agents;

-- name: known_role_ids
SELECT role_id FROM etl.roles;

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext('etl.migrate'));

-- name: bootstrap_migrations
CREATE SCHEMA IF NOT EXISTS etl;
CREATE TABLE IF NOT EXISTS etl.schema_migrations (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT filename, sha256 FROM etl.schema_migrations;

-- name: record_migration
INSERT INTO etl.schema_migrations (filename, sha256) VALUES ($1, $2);
