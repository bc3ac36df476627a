-- Quarantined records: the day's error rows of a run's entity, from stg_errors.

-- The JSON text as jsonb, or NULL where jsonb cannot hold it. Called only for error rows, which
-- are few: each call is a subtransaction.
CREATE FUNCTION etl.try_jsonb_v1(p_text text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p_text::jsonb;
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN  -- nested past the stack's depth
    RETURN NULL;
END
$$;

-- Replaces the day's error rows of the run's account and entity with the staged ones; returns
-- their count.
CREATE FUNCTION etl.record_errors_v1(r etl.sync_runs)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_table text := CASE r.entity
                        WHEN 'agents' THEN 'agent_pipeline_errors'
                        WHEN 'roles'  THEN 'role_pipeline_errors'
                        WHEN 'groups' THEN 'group_pipeline_errors'
                    END;
    v_rows bigint;
BEGIN
    EXECUTE format('DELETE FROM etl.%I WHERE account_id = $1 AND sync_day = $2', v_table)
    USING r.account_id, r.sync_day;
    EXECUTE format(
        'INSERT INTO etl.%I (account_id, run_id, sync_day, record_kind, error_type,
                             error_message, field, record_id, source_file, record_index,
                             raw_record, raw_text, ingested_at)
         SELECT $1, $2, $3, record_kind, error_type, error_message, field, record_id,
                source_file, record_index, etl.try_jsonb_v1(raw_text), raw_text,
                clock_timestamp()
           FROM etl.stg_errors
          WHERE account_id = $1 AND entity = $4
          ORDER BY source_file, record_index, field', v_table)
    USING r.account_id, r.run_id, r.sync_day, r.entity;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END
$$;
