-- The run ledger's rows, per account: opened before any work starts, closed by the apply
-- (succeeded) or by these functions (failed, refused); a run's files and history go with it or
-- keep it.

-- Opens a ledger row for a run of the account. The caller holds the account's advisory lock, so
-- any other row of the account still 'running' belongs to a process that died and is marked
-- 'abandoned' first; p_applying names this process's run still applying on another connection
-- (NULL: none), which is left alone.
CREATE FUNCTION etl.start_run_v3(p_account_id bigint, p_day text, p_entity text,
                                 p_synced_at timestamptz, p_forced boolean, p_applying bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id bigint;
BEGIN
    UPDATE etl.sync_runs
       SET status = 'abandoned', finished_at = clock_timestamp(),
           message = 'the process running it stopped before it finished'
     WHERE account_id = p_account_id AND status = 'running'
       AND run_id IS DISTINCT FROM p_applying;
    INSERT INTO etl.sync_runs (account_id, sync_day, entity, synced_at, forced)
    VALUES (p_account_id, p_day, p_entity, p_synced_at, p_forced)
    RETURNING run_id INTO v_run_id;
    RETURN v_run_id;
END
$$;

-- Records a run that could not start (the account's lock was held past --lock-timeout). It
-- leaves 'running' rows alone: they belong to the run holding the lock.
CREATE FUNCTION etl.record_unstarted_run_v2(p_account_id bigint, p_day text, p_entity text,
                                            p_synced_at timestamptz, p_forced boolean,
                                            p_message text)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO etl.sync_runs (account_id, sync_day, entity, status, finished_at, synced_at,
                               forced, message)
    VALUES (p_account_id, p_day, p_entity, 'failed', clock_timestamp(), p_synced_at, p_forced,
            p_message)
    RETURNING run_id;
$$;

-- Closes a run that did not apply: 'failed' or 'refused', with the reason.
CREATE FUNCTION etl.end_run_v2(p_account_id bigint, p_run_id bigint, p_status text,
                               p_message text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE etl.sync_runs
       SET status = p_status, finished_at = clock_timestamp(), message = p_message
     WHERE account_id = p_account_id AND run_id = p_run_id AND status = 'running';
$$;

-- A deleted run takes its input files with it (what a cascading foreign key would do, once per
-- statement instead of once per file).
CREATE FUNCTION etl.delete_run_files_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM etl.sync_run_files f
     USING deleted_runs d
     WHERE f.account_id = d.account_id AND f.run_id = d.run_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_delete_files
    AFTER DELETE ON etl.sync_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.delete_run_files_v1();

-- A run that agent_role_history names cannot be deleted (what a foreign key would refuse, once
-- per statement instead of once per history row).
CREATE FUNCTION etl.keep_history_runs_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
BEGIN
    SELECT h.run_id INTO v_run
      FROM etl.agent_role_history h
      JOIN deleted_runs d ON d.account_id = h.account_id AND d.run_id = h.run_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % cannot be deleted: agent_role_history names it', v_run
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_keep_history
    AFTER DELETE ON etl.sync_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.keep_history_runs_v1();
