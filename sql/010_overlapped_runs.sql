-- Runs of one sync overlap: while one entity's apply runs on one connection, etl reads and
-- decodes the next entity's input on another, and that run's ledger row starts meanwhile.
-- start_run_v1 marks every 'running' row abandoned, the applying one included; start_run_v2
-- leaves alone the one run the caller names as still applying (NULL: none). The caller holds
-- the etl advisory lock, so any other 'running' row belongs to a process that died.
CREATE FUNCTION etl.start_run_v2(p_day text, p_entity text, p_synced_at timestamptz,
                                 p_forced boolean, p_applying bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id bigint;
BEGIN
    UPDATE etl.sync_runs
       SET status = 'abandoned', finished_at = clock_timestamp(),
           message = 'the process running it stopped before it finished'
     WHERE status = 'running' AND run_id IS DISTINCT FROM p_applying;
    INSERT INTO etl.sync_runs (sync_day, entity, synced_at, forced)
    VALUES (p_day, p_entity, p_synced_at, p_forced)
    RETURNING run_id INTO v_run_id;
    RETURN v_run_id;
END
$$;
