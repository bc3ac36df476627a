-- Roles of the run's account: upsert by id (present = in the day's snapshot). Assignments: the
-- staged snapshot drives the transitions of SEMANTICS section 6, each appended to
-- agent_role_history. Pairs of an agent whose agent_details record was quarantined, or of a
-- quarantined role, are left as they were. The guard counts the assigned pairs that would turn
-- removed.
--
-- A first load (no pair of the account stored) inserts the snapshot's pairs as they are, in
-- key order, each with its history row: with nothing stored, every pair of the snapshot is new
-- and none is reassigned or removed, which is what the transitions would find.
--
-- Without nested loops: the statistics of staging and of the pairs' statuses lag behind a day's
-- changes (a status the table had none of is estimated at one row), and a nested loop over a
-- misjudged side turns a day's transitions quadratic; the hash joins cost what the account's
-- pairs cost.
CREATE FUNCTION etl.apply_roles_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql
SET enable_nestloop = off
AS $$
DECLARE
    v_account    bigint      := r.account_id;
    v_now        timestamptz := clock_timestamp();
    v_staged     bigint;
    v_updated    bigint;
    v_inserted   bigint;
    v_absent     bigint;
    v_assigned   bigint;
    v_new        bigint;
    v_reassigned bigint;
    v_removed    bigint;
    v_dangling   text[];
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_roles WHERE account_id = v_account;

    UPDATE etl.roles o
       SET name = s.name, description = s.description, is_default = s.is_default,
           agent_type = s.agent_type, present = true, created_at = s.created_at,
           updated_at = s.updated_at, synced_at = r.synced_at, ingested_at = v_now
      FROM etl.stg_roles s
     WHERE o.account_id = v_account AND s.account_id = v_account AND o.role_id = s.role_id
       AND (o.name, o.description, o.is_default, o.agent_type, o.present, o.created_at,
            o.updated_at)
           IS DISTINCT FROM
           (s.name, s.description, s.is_default, s.agent_type, true, s.created_at,
            s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.roles (account_id, role_id, name, description, is_default, agent_type,
                           present, created_at, updated_at, synced_at, ingested_at)
    SELECT v_account, s.role_id, s.name, s.description, s.is_default, s.agent_type, true,
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_roles s
     WHERE s.account_id = v_account
       AND NOT EXISTS (SELECT 1 FROM etl.roles o
                        WHERE o.account_id = v_account AND o.role_id = s.role_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.roles o
       SET present = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE o.account_id = v_account AND o.present
       AND NOT EXISTS (SELECT 1 FROM etl.stg_roles s
                        WHERE s.account_id = v_account AND s.role_id = o.role_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.account_id = v_account AND h.entity = 'roles'
                          AND h.record_kind = 'role' AND h.record_id = o.role_id);
    GET DIAGNOSTICS v_absent = ROW_COUNT;

    -- What foreign keys would check, for the whole staged set at once (etl never deletes
    -- agents or roles, so stored pairs stay valid). Two anti joins, not one filter with OR.
    SELECT array_agg(format('(%s, %s)', s.agent_id, s.role_id) ORDER BY s.agent_id, s.role_id)
      INTO v_dangling
      FROM (SELECT s.agent_id, s.role_id
              FROM (SELECT s.agent_id, s.role_id
                      FROM etl.stg_agent_roles s
                     WHERE s.account_id = v_account
                       AND NOT EXISTS (SELECT 1 FROM etl.agents a
                                        WHERE a.account_id = v_account
                                          AND a.agent_id = s.agent_id)
                    UNION
                    SELECT s.agent_id, s.role_id
                      FROM etl.stg_agent_roles s
                     WHERE s.account_id = v_account
                       AND NOT EXISTS (SELECT 1 FROM etl.roles o
                                        WHERE o.account_id = v_account
                                          AND o.role_id = s.role_id)) s
             ORDER BY s.agent_id, s.role_id
             LIMIT 10) s;
    IF v_dangling IS NOT NULL THEN
        RAISE EXCEPTION 'staged pairs (agent, role) name no stored agent or role: %',
                        array_to_string(v_dangling, ', ')
              USING ERRCODE = 'ET002';
    END IF;

    SELECT count(*) INTO v_assigned
      FROM etl.agent_role_mapping
     WHERE account_id = v_account AND status = 'assigned';

    -- A first load: min() is one probe of the key's index (see apply_groups_v1).
    IF (SELECT min(agent_id) FROM etl.agent_role_mapping WHERE account_id = v_account) IS NULL THEN
        WITH added AS (
            INSERT INTO etl.agent_role_mapping (account_id, agent_id, role_id, status,
                                                assigned_at)
            SELECT v_account, s.agent_id, s.role_id, 'assigned', r.synced_at
              FROM etl.stg_agent_roles s
             WHERE s.account_id = v_account
               AND s.agent_id NOT IN (SELECT h.record_id FROM etl.stg_held_ids h
                                       WHERE h.account_id = v_account AND h.entity = 'roles'
                                         AND h.record_kind = 'agent_details')
               AND s.role_id NOT IN (SELECT h.record_id FROM etl.stg_held_ids h
                                      WHERE h.account_id = v_account AND h.entity = 'roles'
                                        AND h.record_kind = 'role')
             ORDER BY s.agent_id, s.role_id
            RETURNING agent_id, role_id
        )
        INSERT INTO etl.agent_role_history (account_id, agent_id, role_id, from_status,
                                            to_status, changed_at, sync_day, run_id)
        SELECT v_account, agent_id, role_id, NULL, 'assigned', r.synced_at, r.sync_day, r.run_id
          FROM added
         ORDER BY agent_id, role_id;
        GET DIAGNOSTICS v_new = ROW_COUNT;
        v_reassigned := 0;
        v_removed := 0;
    ELSE
        WITH held_agent AS (
            SELECT record_id AS agent_id FROM etl.stg_held_ids
             WHERE account_id = v_account AND entity = 'roles' AND record_kind = 'agent_details'
        ), held_role AS (
            SELECT record_id AS role_id FROM etl.stg_held_ids
             WHERE account_id = v_account AND entity = 'roles' AND record_kind = 'role'
        ), snapshot AS (
            SELECT s.agent_id, s.role_id
              FROM etl.stg_agent_roles s
             WHERE s.account_id = v_account
               AND s.agent_id NOT IN (SELECT agent_id FROM held_agent)
               AND s.role_id NOT IN (SELECT role_id FROM held_role)
        ), reassigned AS (
            UPDATE etl.agent_role_mapping m
               SET status = 'assigned', assigned_at = r.synced_at, removed_at = NULL
              FROM snapshot s
             WHERE m.account_id = v_account AND m.agent_id = s.agent_id AND m.role_id = s.role_id
               AND m.status = 'removed'
            RETURNING m.agent_id, m.role_id, 'removed' AS from_status, 'assigned' AS to_status
        ), added AS (
            INSERT INTO etl.agent_role_mapping (account_id, agent_id, role_id, status, assigned_at)
            SELECT v_account, s.agent_id, s.role_id, 'assigned', r.synced_at
              FROM snapshot s
             WHERE NOT EXISTS (SELECT 1 FROM etl.agent_role_mapping m
                                WHERE m.account_id = v_account AND m.agent_id = s.agent_id
                                  AND m.role_id = s.role_id)
            RETURNING agent_id, role_id, NULL AS from_status, 'assigned' AS to_status
        ), removed AS (
            UPDATE etl.agent_role_mapping m
               SET status = 'removed', removed_at = r.synced_at
             WHERE m.account_id = v_account AND m.status = 'assigned'
               AND NOT EXISTS (SELECT 1 FROM etl.stg_agent_roles s
                                WHERE s.account_id = v_account AND s.agent_id = m.agent_id
                                  AND s.role_id = m.role_id)
               AND m.agent_id NOT IN (SELECT agent_id FROM held_agent)
               AND m.role_id NOT IN (SELECT role_id FROM held_role)
            RETURNING m.agent_id, m.role_id, 'assigned' AS from_status, 'removed' AS to_status
        ), changes AS (
            SELECT * FROM reassigned UNION ALL SELECT * FROM added UNION ALL SELECT * FROM removed
        ), logged AS (
            INSERT INTO etl.agent_role_history (account_id, agent_id, role_id, from_status,
                                                to_status, changed_at, sync_day, run_id)
            SELECT v_account, agent_id, role_id, from_status, to_status, r.synced_at, r.sync_day,
                   r.run_id
              FROM changes
             ORDER BY agent_id, role_id
            RETURNING from_status, to_status
        )
        SELECT count(*) FILTER (WHERE from_status IS NULL),
               count(*) FILTER (WHERE from_status = 'removed'),
               count(*) FILTER (WHERE to_status = 'removed')
          INTO v_new, v_reassigned, v_removed
          FROM logged;
    END IF;
    IF v_removed * 2 > v_assigned AND NOT p_allow_mass_removal THEN
        RAISE EXCEPTION 'mass removal refused: % of % assigned agent-role pairs would be removed',
                        v_removed, v_assigned
              USING ERRCODE = 'ET001',
                    HINT = 'if the export really lost them, re-run with --allow-mass-removal';
    END IF;

    RETURN jsonb_build_object(
        'staged', v_staged, 'inserted', v_inserted, 'updated', v_updated,
        'unchanged', v_staged - v_inserted - v_updated, 'removed', v_removed,
        'details', jsonb_build_object(
            'roles_absent', v_absent, 'pairs_staged',
            (SELECT count(*) FROM etl.stg_agent_roles WHERE account_id = v_account),
            'pairs_assigned', v_new, 'pairs_reassigned', v_reassigned,
            'pairs_removed', v_removed));
END
$$;
