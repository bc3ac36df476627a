-- A run stopped by the user (Ctrl-C) ends 'interrupted': like 'failed', nothing of it was
-- applied, but nothing went wrong with the input or the database either.
ALTER TABLE etl.sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE etl.sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'refused', 'abandoned', 'interrupted'));
