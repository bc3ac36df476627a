-- Agents of the run's account: upsert by id; absent agents keep their row with present = false
-- and active = false. Agents whose every record was quarantined (stg_held_ids) keep their
-- previous state. The guard counts, of the agents present now, those that leave the list or
-- turn inactive.
CREATE FUNCTION etl.apply_agents_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_account  bigint      := r.account_id;
    v_now      timestamptz := clock_timestamp();
    v_staged   bigint;
    v_present  bigint;
    v_leaving  bigint;
    v_updated  bigint;
    v_inserted bigint;
    v_removed  bigint;
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_agents WHERE account_id = v_account;

    -- The guard: of the agents present now, how many leave the list or turn inactive.
    -- (Two outer joins: as NOT EXISTS inside the FILTER they were probed once per agent.)
    SELECT count(*), count(*) FILTER (
               WHERE h.record_id IS NULL
                 AND (s.agent_id IS NULL
                      OR (a.active AND (s.deactivated IS TRUE OR s.contact_active IS FALSE))))
      INTO v_present, v_leaving
      FROM etl.agents a
      LEFT JOIN etl.stg_agents s ON s.account_id = v_account AND s.agent_id = a.agent_id
      LEFT JOIN (SELECT DISTINCT record_id FROM etl.stg_held_ids
                  WHERE account_id = v_account AND entity = 'agents') h
        ON h.record_id = a.agent_id
     WHERE a.account_id = v_account AND a.present;
    IF v_leaving * 2 > v_present AND NOT p_allow_mass_removal THEN
        RAISE EXCEPTION 'mass removal refused: % of % present agents would leave the list or '
                        'turn inactive', v_leaving, v_present
              USING ERRCODE = 'ET001',
                    HINT = 'if the export really lost them, re-run with --allow-mass-removal';
    END IF;

    UPDATE etl.agents a
       SET name = s.name, email = s.email, deactivated = s.deactivated,
           contact_active = s.contact_active, present = true,
           active = (s.deactivated IS NOT TRUE AND s.contact_active IS NOT FALSE),
           created_at = s.created_at, updated_at = s.updated_at,
           synced_at = r.synced_at, ingested_at = v_now
      FROM etl.stg_agents s
     WHERE a.account_id = v_account AND s.account_id = v_account AND a.agent_id = s.agent_id
       AND (a.name, a.email, a.deactivated, a.contact_active, a.present, a.active,
            a.created_at, a.updated_at)
           IS DISTINCT FROM
           (s.name, s.email, s.deactivated, s.contact_active, true,
            (s.deactivated IS NOT TRUE AND s.contact_active IS NOT FALSE),
            s.created_at, s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.agents (account_id, agent_id, name, email, deactivated, contact_active,
                            present, active, created_at, updated_at, synced_at, ingested_at)
    SELECT v_account, s.agent_id, s.name, s.email, s.deactivated, s.contact_active, true,
           (s.deactivated IS NOT TRUE AND s.contact_active IS NOT FALSE),
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_agents s
     WHERE s.account_id = v_account
       AND NOT EXISTS (SELECT 1 FROM etl.agents a
                        WHERE a.account_id = v_account AND a.agent_id = s.agent_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.agents a
       SET present = false, active = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE a.account_id = v_account AND (a.present OR a.active)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_agents s
                        WHERE s.account_id = v_account AND s.agent_id = a.agent_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.account_id = v_account AND h.entity = 'agents'
                          AND h.record_id = a.agent_id);
    GET DIAGNOSTICS v_removed = ROW_COUNT;

    RETURN jsonb_build_object(
        'staged', v_staged, 'inserted', v_inserted, 'updated', v_updated,
        'unchanged', v_staged - v_inserted - v_updated, 'removed', v_removed,
        'details', jsonb_build_object('left_or_turned_inactive', v_leaving));
END
$$;
