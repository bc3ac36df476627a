-- sync_run_files.run_id loses its foreign key: checking it row by row cost 11 us per file
-- (1.1 s per 100,000 files, 2 cores), and only etl writes these rows, for the run it has just
-- started. What the key also did, deleting a run's files with the run, a statement-level
-- trigger now does.

ALTER TABLE etl.sync_run_files DROP CONSTRAINT sync_run_files_run_id_fkey;

CREATE FUNCTION etl.delete_run_files_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM etl.sync_run_files f USING deleted_runs d WHERE f.run_id = d.run_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_delete_files
    AFTER DELETE ON etl.sync_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.delete_run_files_v1();
