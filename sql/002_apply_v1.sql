-- The apply procedure and its ledger functions, version 1.
-- etl.apply_sync_v1 applies one staged (entity, day) inside the caller's transaction: upserts,
-- assignment transitions with history, error rows, and the ledger row. A changed meaning gets a
-- new name (apply_sync_v2), never an edit of this file.
--
-- SQLSTATEs raised here: ET001 a safety guard refused the change; ET002 an invariant broke.

-- Opens a ledger row for a run. The caller holds the etl advisory lock, so any row still
-- 'running' belongs to a process that died: it is marked 'abandoned' first.
CREATE FUNCTION etl.start_run_v1(p_day text, p_entity text, p_synced_at timestamptz,
                                 p_forced boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id bigint;
BEGIN
    UPDATE etl.sync_runs
       SET status = 'abandoned', finished_at = clock_timestamp(),
           message = 'the process running it stopped before it finished'
     WHERE status = 'running';
    INSERT INTO etl.sync_runs (sync_day, entity, synced_at, forced)
    VALUES (p_day, p_entity, p_synced_at, p_forced)
    RETURNING run_id INTO v_run_id;
    RETURN v_run_id;
END
$$;

-- Closes a run that did not apply: 'failed' or 'refused', with the reason.
CREATE FUNCTION etl.end_run_v1(p_run_id bigint, p_status text, p_message text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE etl.sync_runs
       SET status = p_status, finished_at = clock_timestamp(), message = p_message
     WHERE run_id = p_run_id AND status = 'running';
$$;

-- The JSON text as jsonb, or NULL where jsonb cannot hold it. Called only for error rows, which
-- are few: each call is a subtransaction.
CREATE FUNCTION etl.try_jsonb_v1(p_text text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p_text::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

-- Records a run that could not start (the lock was held past --lock-timeout). Unlike
-- start_run_v1 it leaves 'running' rows alone: they belong to the run holding the lock.
CREATE FUNCTION etl.record_unstarted_run_v1(p_day text, p_entity text, p_synced_at timestamptz,
                                            p_forced boolean, p_message text)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO etl.sync_runs (sync_day, entity, status, finished_at, synced_at, forced, message)
    VALUES (p_day, p_entity, 'failed', clock_timestamp(), p_synced_at, p_forced, p_message)
    RETURNING run_id;
$$;

-- Replaces the day's error rows of the run's entity with the staged ones; returns their count.
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
    EXECUTE format('DELETE FROM etl.%I WHERE sync_day = $1', v_table) USING r.sync_day;
    EXECUTE format(
        'INSERT INTO etl.%I (run_id, sync_day, record_kind, error_type, error_message, field,
                             record_id, source_file, record_index, raw_record, raw_text,
                             ingested_at)
         SELECT $1, $2, record_kind, error_type, error_message, field, record_id, source_file,
                record_index, etl.try_jsonb_v1(raw_text), raw_text,
                clock_timestamp()
           FROM etl.stg_errors
          WHERE entity = $3
          ORDER BY source_file, record_index, field', v_table)
    USING r.run_id, r.sync_day, r.entity;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END
$$;

-- Agents: upsert by id; absent agents keep their row with present = false and active = false.
-- Agents whose every record was quarantined (stg_held_ids) keep their previous state.
CREATE FUNCTION etl.apply_agents_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_staged   bigint;
    v_present  bigint;
    v_leaving  bigint;
    v_updated  bigint;
    v_inserted bigint;
    v_removed  bigint;
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_agents;

    -- The guard: of the agents present now, how many leave the list or turn inactive.
    SELECT count(*), count(*) FILTER (
               WHERE NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                                  WHERE h.entity = 'agents' AND h.record_id = a.agent_id)
                 AND NOT EXISTS (SELECT 1 FROM etl.stg_agents s
                                  WHERE s.agent_id = a.agent_id
                                    AND (NOT a.active OR (s.deactivated IS NOT TRUE
                                                          AND s.contact_active IS NOT FALSE))))
      INTO v_present, v_leaving
      FROM etl.agents a
     WHERE a.present;
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
     WHERE a.agent_id = s.agent_id
       AND (a.name, a.email, a.deactivated, a.contact_active, a.present, a.active,
            a.created_at, a.updated_at)
           IS DISTINCT FROM
           (s.name, s.email, s.deactivated, s.contact_active, true,
            (s.deactivated IS NOT TRUE AND s.contact_active IS NOT FALSE),
            s.created_at, s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.agents (agent_id, name, email, deactivated, contact_active, present, active,
                            created_at, updated_at, synced_at, ingested_at)
    SELECT s.agent_id, s.name, s.email, s.deactivated, s.contact_active, true,
           (s.deactivated IS NOT TRUE AND s.contact_active IS NOT FALSE),
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_agents s
     WHERE NOT EXISTS (SELECT 1 FROM etl.agents a WHERE a.agent_id = s.agent_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.agents a
       SET present = false, active = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE (a.present OR a.active)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_agents s WHERE s.agent_id = a.agent_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'agents' AND h.record_id = a.agent_id);
    GET DIAGNOSTICS v_removed = ROW_COUNT;

    RETURN jsonb_build_object(
        'staged', v_staged, 'inserted', v_inserted, 'updated', v_updated,
        'unchanged', v_staged - v_inserted - v_updated, 'removed', v_removed,
        'details', jsonb_build_object('left_or_turned_inactive', v_leaving));
END
$$;

-- Roles: upsert by id (present = in the day's snapshot). Assignments: the staged snapshot drives
-- the transitions of section 6, each appended to agent_role_history. Pairs of an agent whose
-- agent_details record was quarantined, or of a quarantined role, are left as they were.
CREATE FUNCTION etl.apply_roles_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now        timestamptz := clock_timestamp();
    v_staged     bigint;
    v_updated    bigint;
    v_inserted   bigint;
    v_absent     bigint;
    v_assigned   bigint;
    v_new        bigint;
    v_reassigned bigint;
    v_removed    bigint;
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_roles;

    UPDATE etl.roles o
       SET name = s.name, description = s.description, is_default = s.is_default,
           agent_type = s.agent_type, present = true, created_at = s.created_at,
           updated_at = s.updated_at, synced_at = r.synced_at, ingested_at = v_now
      FROM etl.stg_roles s
     WHERE o.role_id = s.role_id
       AND (o.name, o.description, o.is_default, o.agent_type, o.present, o.created_at,
            o.updated_at)
           IS DISTINCT FROM
           (s.name, s.description, s.is_default, s.agent_type, true, s.created_at,
            s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.roles (role_id, name, description, is_default, agent_type, present,
                           created_at, updated_at, synced_at, ingested_at)
    SELECT s.role_id, s.name, s.description, s.is_default, s.agent_type, true,
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_roles s
     WHERE NOT EXISTS (SELECT 1 FROM etl.roles o WHERE o.role_id = s.role_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.roles o
       SET present = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE o.present
       AND NOT EXISTS (SELECT 1 FROM etl.stg_roles s WHERE s.role_id = o.role_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'roles' AND h.record_kind = 'role'
                          AND h.record_id = o.role_id);
    GET DIAGNOSTICS v_absent = ROW_COUNT;

    SELECT count(*) INTO v_assigned FROM etl.agent_role_mapping WHERE status = 'assigned';

    WITH held_agent AS (
        SELECT record_id AS agent_id FROM etl.stg_held_ids
         WHERE entity = 'roles' AND record_kind = 'agent_details'
    ), held_role AS (
        SELECT record_id AS role_id FROM etl.stg_held_ids
         WHERE entity = 'roles' AND record_kind = 'role'
    ), snapshot AS (
        SELECT s.agent_id, s.role_id
          FROM etl.stg_agent_roles s
         WHERE s.agent_id NOT IN (SELECT agent_id FROM held_agent)
           AND s.role_id NOT IN (SELECT role_id FROM held_role)
    ), reassigned AS (
        UPDATE etl.agent_role_mapping m
           SET status = 'assigned', assigned_at = r.synced_at, removed_at = NULL
          FROM snapshot s
         WHERE m.agent_id = s.agent_id AND m.role_id = s.role_id AND m.status = 'removed'
        RETURNING m.agent_id, m.role_id, 'removed' AS from_status, 'assigned' AS to_status
    ), added AS (
        INSERT INTO etl.agent_role_mapping (agent_id, role_id, status, assigned_at)
        SELECT s.agent_id, s.role_id, 'assigned', r.synced_at
          FROM snapshot s
         WHERE NOT EXISTS (SELECT 1 FROM etl.agent_role_mapping m
                            WHERE m.agent_id = s.agent_id AND m.role_id = s.role_id)
        RETURNING agent_id, role_id, NULL AS from_status, 'assigned' AS to_status
    ), removed AS (
        UPDATE etl.agent_role_mapping m
           SET status = 'removed', removed_at = r.synced_at
         WHERE m.status = 'assigned'
           AND NOT EXISTS (SELECT 1 FROM etl.stg_agent_roles s
                            WHERE s.agent_id = m.agent_id AND s.role_id = m.role_id)
           AND m.agent_id NOT IN (SELECT agent_id FROM held_agent)
           AND m.role_id NOT IN (SELECT role_id FROM held_role)
        RETURNING m.agent_id, m.role_id, 'assigned' AS from_status, 'removed' AS to_status
    ), changes AS (
        SELECT * FROM reassigned UNION ALL SELECT * FROM added UNION ALL SELECT * FROM removed
    )
    INSERT INTO etl.agent_role_history (agent_id, role_id, from_status, to_status, changed_at,
                                        sync_day, run_id)
    SELECT agent_id, role_id, from_status, to_status, r.synced_at, r.sync_day, r.run_id
      FROM changes
     ORDER BY agent_id, role_id;

    SELECT count(*) FILTER (WHERE from_status IS NULL),
           count(*) FILTER (WHERE from_status = 'removed'),
           count(*) FILTER (WHERE to_status = 'removed')
      INTO v_new, v_reassigned, v_removed
      FROM etl.agent_role_history
     WHERE run_id = r.run_id;
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
            (SELECT count(*) FROM etl.stg_agent_roles),
            'pairs_assigned', v_new, 'pairs_reassigned', v_reassigned,
            'pairs_removed', v_removed));
END
$$;

-- The one entry point: applies the staged rows of run p_run_id and closes its ledger row.
CREATE PROCEDURE etl.apply_sync_v1(p_run_id bigint, p_allow_mass_removal boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_run         etl.sync_runs;
    v_counts      jsonb;
    v_quarantined bigint;
    v_by_type     jsonb;
BEGIN
    SELECT * INTO v_run FROM etl.sync_runs WHERE run_id = p_run_id FOR UPDATE;
    IF NOT FOUND OR v_run.status <> 'running' THEN
        RAISE EXCEPTION 'run % is not an open run', p_run_id USING ERRCODE = 'ET002';
    END IF;

    v_counts := CASE v_run.entity
        WHEN 'agents' THEN etl.apply_agents_v1(v_run, p_allow_mass_removal)
        WHEN 'roles'  THEN etl.apply_roles_v1(v_run, p_allow_mass_removal)
    END;
    IF v_counts IS NULL THEN
        RAISE EXCEPTION 'entity % has no apply step', v_run.entity USING ERRCODE = 'ET002';
    END IF;

    v_quarantined := etl.record_errors_v1(v_run);
    SELECT coalesce(jsonb_object_agg(error_type, n), '{}') INTO v_by_type
      FROM (SELECT error_type, count(*) AS n FROM etl.stg_errors
             WHERE entity = v_run.entity GROUP BY error_type) e;

    UPDATE etl.sync_runs
       SET status = 'succeeded', finished_at = clock_timestamp(),
           rows_staged = (v_counts ->> 'staged')::bigint,
           rows_inserted = (v_counts ->> 'inserted')::bigint,
           rows_updated = (v_counts ->> 'updated')::bigint,
           rows_unchanged = (v_counts ->> 'unchanged')::bigint,
           rows_removed = (v_counts ->> 'removed')::bigint,
           rows_quarantined = v_quarantined,
           details = (v_counts -> 'details') || jsonb_build_object('errors', v_by_type)
     WHERE run_id = p_run_id;
END
$$;

-- Empties the staging rows of one entity before a run stages its own.
CREATE FUNCTION etl.clear_staging_v1(p_entity text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_entity
        WHEN 'agents' THEN TRUNCATE etl.stg_agents;
        WHEN 'roles'  THEN TRUNCATE etl.stg_roles, etl.stg_agent_roles;
        WHEN 'groups' THEN TRUNCATE etl.stg_groups, etl.stg_group_membership;
    END CASE;
    DELETE FROM etl.stg_held_ids WHERE entity = p_entity;
    DELETE FROM etl.stg_errors WHERE entity = p_entity;
END
$$;
