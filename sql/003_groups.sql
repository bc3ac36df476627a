-- Groups: their apply step, the inactive flag recomputed set-based, and apply_sync_v2, which
-- runs every entity's step. apply_sync_v1 had no groups step and did not recompute inactive
-- after an agents step, so it is dropped: a caller of it would leave inactive stale.
--
-- SQLSTATEs raised here: ET001 a safety guard refused the change; ET002 an invariant broke.

-- group_membership is written only by apply_groups_v1, which checks the whole staged set against
-- agents and groups at once. The row-by-row foreign-key triggers cost 20 s of a 35 s apply for a
-- million memberships (2 cores), so they go.
ALTER TABLE etl.group_membership
    DROP CONSTRAINT group_membership_group_id_fkey,
    DROP CONSTRAINT group_membership_agent_id_fkey;

-- Recomputes groups.inactive for every group (SEMANTICS section 7): a group is active iff some
-- present group reachable from it by child edges through present groups, itself included, has
-- an active member; absent groups are inactive. The walk goes upwards from the groups with an
-- active member, from child to parent; UNION drops rows already found, so each group is visited
-- once and cycles end the walk. Only flipped rows are written; returns their counts.
CREATE FUNCTION etl.refresh_group_inactive_v1(r etl.sync_runs)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_to_inactive bigint;
    v_to_active   bigint;
BEGIN
    WITH RECURSIVE active (group_id, parent_group_id) AS (
        SELECT g.group_id, g.parent_group_id
          FROM etl.groups g
         WHERE g.present
           AND EXISTS (SELECT 1 FROM etl.group_membership m
                         JOIN etl.agents a ON a.agent_id = m.agent_id
                        WHERE m.group_id = g.group_id AND a.active)
        UNION
        SELECT p.group_id, p.parent_group_id
          FROM active c
          JOIN etl.groups p ON p.group_id = c.parent_group_id
         WHERE p.present
    ), computed AS (
        SELECT g.group_id, a.group_id IS NULL AS inactive
          FROM etl.groups g
          LEFT JOIN active a ON a.group_id = g.group_id
    ), flipped AS (
        UPDATE etl.groups g
           SET inactive = c.inactive, synced_at = r.synced_at, ingested_at = clock_timestamp()
          FROM computed c
         WHERE g.group_id = c.group_id AND g.inactive <> c.inactive
        RETURNING g.inactive
    )
    SELECT count(*) FILTER (WHERE inactive), count(*) FILTER (WHERE NOT inactive)
      INTO v_to_inactive, v_to_active
      FROM flipped;
    RETURN jsonb_build_object('groups_turned_inactive', v_to_inactive,
                              'groups_turned_active', v_to_active);
END
$$;

-- Groups: upsert by id (parent stored as given); present = in the day's snapshot. A staged
-- group's memberships become exactly its staged ones; an absent group loses its memberships and
-- keeps its row. Held groups (every record of the id quarantined) keep row, parent, memberships
-- and presence. Then inactive is recomputed. The guard counts, of the groups present before,
-- those that leave the snapshot or turn inactive.
CREATE FUNCTION etl.apply_groups_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now             timestamptz := clock_timestamp();
    v_staged          bigint;
    v_updated         bigint;
    v_inserted        bigint;
    v_removed         bigint;
    v_members_added   bigint;
    v_members_removed bigint;
    v_present         bigint;
    v_leaving         bigint;
    v_to_inactive     bigint;
    v_to_active       bigint;
    v_dangling        text[];
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_groups;
    -- What the guard and the summary compare with: inactive flips of new groups are not flips.
    CREATE TEMP TABLE groups_before ON COMMIT DROP AS
        SELECT group_id, present, inactive FROM etl.groups;

    UPDATE etl.groups g
       SET name = s.name, description = s.description, parent_group_id = s.parent_group_id,
           present = true, created_at = s.created_at, updated_at = s.updated_at,
           synced_at = r.synced_at, ingested_at = v_now
      FROM etl.stg_groups s
     WHERE g.group_id = s.group_id
       AND (g.name, g.description, g.parent_group_id, g.present, g.created_at, g.updated_at)
           IS DISTINCT FROM
           (s.name, s.description, s.parent_group_id, true, s.created_at, s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.groups (group_id, name, description, parent_group_id, present, inactive,
                            created_at, updated_at, synced_at, ingested_at)
    SELECT s.group_id, s.name, s.description, s.parent_group_id, true, true,
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_groups s
     WHERE NOT EXISTS (SELECT 1 FROM etl.groups g WHERE g.group_id = s.group_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.groups g
       SET present = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE g.present
       AND NOT EXISTS (SELECT 1 FROM etl.stg_groups s WHERE s.group_id = g.group_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'groups' AND h.record_id = g.group_id);
    GET DIAGNOSTICS v_removed = ROW_COUNT;

    -- Staged groups keep only their staged members; absent groups have none staged.
    DELETE FROM etl.group_membership m
     WHERE NOT EXISTS (SELECT 1 FROM etl.stg_group_membership s
                        WHERE s.group_id = m.group_id AND s.agent_id = m.agent_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'groups' AND h.record_id = m.group_id);
    GET DIAGNOSTICS v_members_removed = ROW_COUNT;

    -- What the foreign keys would check, for the whole staged set at once (agents are never
    -- deleted, so stored memberships stay valid).
    SELECT array_agg(DISTINCT format('(%s, %s)', s.group_id, s.agent_id)) INTO v_dangling
      FROM (SELECT s.group_id, s.agent_id
              FROM etl.stg_group_membership s
             WHERE NOT EXISTS (SELECT 1 FROM etl.agents a WHERE a.agent_id = s.agent_id)
                OR NOT EXISTS (SELECT 1 FROM etl.stg_groups g WHERE g.group_id = s.group_id)
             LIMIT 10) s;
    IF v_dangling IS NOT NULL THEN
        RAISE EXCEPTION 'staged memberships (group, agent) name no stored agent or no staged '
                        'group: %', array_to_string(v_dangling, ', ')
              USING ERRCODE = 'ET002';
    END IF;
    INSERT INTO etl.group_membership (group_id, agent_id, synced_at)
    SELECT s.group_id, s.agent_id, r.synced_at
      FROM etl.stg_group_membership s
     WHERE NOT EXISTS (SELECT 1 FROM etl.group_membership m
                        WHERE m.group_id = s.group_id AND m.agent_id = s.agent_id);
    GET DIAGNOSTICS v_members_added = ROW_COUNT;

    PERFORM etl.refresh_group_inactive_v1(r);

    SELECT count(*) FILTER (WHERE b.present),
           count(*) FILTER (WHERE b.present AND (NOT g.present OR (NOT b.inactive AND g.inactive))),
           count(*) FILTER (WHERE NOT b.inactive AND g.inactive),
           count(*) FILTER (WHERE b.inactive AND NOT g.inactive)
      INTO v_present, v_leaving, v_to_inactive, v_to_active
      FROM groups_before b
      JOIN etl.groups g ON g.group_id = b.group_id;
    DROP TABLE groups_before;
    IF v_leaving * 2 > v_present AND NOT p_allow_mass_removal THEN
        RAISE EXCEPTION 'mass removal refused: % of % present groups would leave the snapshot or '
                        'turn inactive', v_leaving, v_present
              USING ERRCODE = 'ET001',
                    HINT = 'if the export really lost them, re-run with --allow-mass-removal';
    END IF;

    RETURN jsonb_build_object(
        'staged', v_staged, 'inserted', v_inserted, 'updated', v_updated,
        'unchanged', v_staged - v_inserted - v_updated, 'removed', v_removed,
        'details', jsonb_build_object(
            'left_or_turned_inactive', v_leaving,
            'groups_turned_inactive', v_to_inactive, 'groups_turned_active', v_to_active,
            'members_staged', (SELECT count(*) FROM etl.stg_group_membership),
            'members_added', v_members_added, 'members_removed', v_members_removed));
END
$$;

-- The one entry point: applies the staged rows of run p_run_id and closes its ledger row. An
-- agents step is followed by the inactive recomputation, since agents turning (in)active move it.
CREATE PROCEDURE etl.apply_sync_v2(p_run_id bigint, p_allow_mass_removal boolean)
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
        WHEN 'groups' THEN etl.apply_groups_v1(v_run, p_allow_mass_removal)
    END;
    IF v_run.entity = 'agents' THEN
        v_counts := jsonb_set(v_counts, '{details}',
                              (v_counts -> 'details') || etl.refresh_group_inactive_v1(v_run));
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

DROP PROCEDURE etl.apply_sync_v1(bigint, boolean);
