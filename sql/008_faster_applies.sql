-- Faster applies, measured at scale L (200,000 agents, 20,000 groups, 2M memberships,
-- 300,000 agent-role pairs; 2 cores, PostgreSQL 15). Meanings are unchanged, so the functions
-- keep their names.
-- * agent_role_history.run_id loses its foreign key: a first day's 300,000 history rows took
--   4.5 s to insert with it and 1.8 s without. etl writes history only for the run it is
--   applying. What the key also did, refuse to delete a run that history names, a
--   statement-level trigger now does.
-- * apply_roles_v1 on a first load inserts pairs and history without their keys and builds
--   them afterwards (3.8 s -> 2.3 s for 300,000 pairs), and looks for dangling pairs with two
--   anti joins, as apply_groups_v1 now does.
-- * apply_agents_v1's guard reads staged and held agents in two outer joins instead of probing
--   both per stored agent (0.68 s at L).
-- * apply_groups_v1: on a first load the changes are the staged pairs themselves, read through a
--   view instead of copied into a temporary table (1.5 s for 2M pairs). Dangling pairs are
--   looked for with two anti joins instead of one filter with OR: 0.84 s against 1.45 s where
--   they run in parallel (psql), the same 1.5 s inside the procedure.

ALTER TABLE etl.agent_role_history DROP CONSTRAINT agent_role_history_run_id_fkey;

CREATE FUNCTION etl.keep_history_runs_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
BEGIN
    SELECT h.run_id INTO v_run
      FROM etl.agent_role_history h
     WHERE h.run_id IN (SELECT d.run_id FROM deleted_runs d)
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

CREATE OR REPLACE FUNCTION etl.apply_roles_v1(r etl.sync_runs, p_allow_mass_removal boolean)
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
    v_dangling   text[];
    v_keys_after boolean;
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

    -- What the foreign keys checked, for the whole staged set at once (etl never deletes agents
    -- or roles, so stored pairs stay valid).
    SELECT array_agg(format('(%s, %s)', s.agent_id, s.role_id) ORDER BY s.agent_id, s.role_id)
      INTO v_dangling
      FROM (SELECT s.agent_id, s.role_id
              FROM (SELECT s.agent_id, s.role_id
                      FROM etl.stg_agent_roles s
                     WHERE NOT EXISTS (SELECT 1 FROM etl.agents a WHERE a.agent_id = s.agent_id)
                    UNION
                    SELECT s.agent_id, s.role_id
                      FROM etl.stg_agent_roles s
                     WHERE NOT EXISTS (SELECT 1 FROM etl.roles o WHERE o.role_id = s.role_id)) s
             ORDER BY s.agent_id, s.role_id
             LIMIT 10) s;
    IF v_dangling IS NOT NULL THEN
        RAISE EXCEPTION 'staged pairs (agent, role) name no stored agent or role: %',
                        array_to_string(v_dangling, ', ')
              USING ERRCODE = 'ET002';
    END IF;

    SELECT count(*) INTO v_assigned FROM etl.agent_role_mapping WHERE status = 'assigned';

    -- A first load (no pairs and no history stored) inserts without the two tables' keys and
    -- builds them afterwards, as apply_groups_v1 does for memberships: 300,000 pairs took 3.8 s
    -- with the keys in place and 2.3 s so. Only when no other session holds a lock on them.
    v_keys_after := v_assigned = 0
                    AND NOT EXISTS (SELECT 1 FROM etl.agent_role_mapping)
                    AND NOT EXISTS (SELECT 1 FROM etl.agent_role_history)
                    AND EXISTS (SELECT 1 FROM etl.stg_agent_roles);
    IF v_keys_after THEN
        BEGIN
            LOCK TABLE etl.agent_role_mapping, etl.agent_role_history
                IN ACCESS EXCLUSIVE MODE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            v_keys_after := false;
        END;
    END IF;
    IF v_keys_after THEN
        ALTER TABLE etl.agent_role_mapping DROP CONSTRAINT agent_role_mapping_pkey;
        DROP INDEX etl.agent_role_mapping_role;
        ALTER TABLE etl.agent_role_history DROP CONSTRAINT agent_role_history_pkey;
        DROP INDEX etl.agent_role_history_pair;
    END IF;

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
    IF v_keys_after THEN
        ALTER TABLE etl.agent_role_mapping ADD PRIMARY KEY (agent_id, role_id);
        CREATE INDEX agent_role_mapping_role ON etl.agent_role_mapping (role_id);
        ALTER TABLE etl.agent_role_history ADD PRIMARY KEY (history_id);
        CREATE INDEX agent_role_history_pair ON etl.agent_role_history (agent_id, role_id);
    END IF;

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

CREATE OR REPLACE FUNCTION etl.apply_agents_v1(r etl.sync_runs, p_allow_mass_removal boolean)
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
    -- (Two outer joins: as NOT EXISTS inside the FILTER they were probed once per agent.)
    SELECT count(*), count(*) FILTER (
               WHERE h.record_id IS NULL
                 AND (s.agent_id IS NULL
                      OR (a.active AND (s.deactivated IS TRUE OR s.contact_active IS FALSE))))
      INTO v_present, v_leaving
      FROM etl.agents a
      LEFT JOIN etl.stg_agents s ON s.agent_id = a.agent_id
      LEFT JOIN (SELECT DISTINCT record_id FROM etl.stg_held_ids WHERE entity = 'agents') h
        ON h.record_id = a.agent_id
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

CREATE OR REPLACE FUNCTION etl.apply_groups_v1(r etl.sync_runs, p_allow_mass_removal boolean)
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
    v_first_load      boolean;
    v_keys_after      boolean;
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

    -- Staged groups keep exactly their staged members; absent groups have none staged; held
    -- groups keep theirs. One pass over both sets finds the pairs to add and to remove. On a
    -- first load every staged pair is added and none removed: the changes are the staged pairs
    -- themselves, read in place rather than copied.
    v_first_load := NOT EXISTS (SELECT 1 FROM etl.group_membership);
    IF v_first_load THEN
        CREATE TEMP VIEW membership_changes AS
            SELECT s.group_id, s.agent_id, true AS added FROM etl.stg_group_membership s;
    ELSE
        CREATE TEMP TABLE membership_changes ON COMMIT DROP AS
            SELECT coalesce(s.group_id, m.group_id) AS group_id,
                   coalesce(s.agent_id, m.agent_id) AS agent_id,
                   m.group_id IS NULL AS added
              FROM etl.stg_group_membership s
              FULL JOIN etl.group_membership m
                ON m.group_id = s.group_id AND m.agent_id = s.agent_id
             WHERE s.group_id IS NULL OR m.group_id IS NULL;
    END IF;

    DELETE FROM etl.group_membership m
     USING membership_changes c
     WHERE NOT c.added AND m.group_id = c.group_id AND m.agent_id = c.agent_id
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'groups' AND h.record_id = m.group_id);
    GET DIAGNOSTICS v_members_removed = ROW_COUNT;

    -- What the foreign keys would check, for the added pairs at once (agents are never deleted,
    -- so stored memberships stay valid).
    -- Two anti joins, not one filter with OR, which probed both sets row by row; and no LIMIT
    -- inside them, under which the planner probed 2M pairs one by one (9 s) to find ten.
    SELECT array_agg(DISTINCT format('(%s, %s)', c.group_id, c.agent_id)) INTO v_dangling
      FROM (SELECT c.group_id, c.agent_id
              FROM (SELECT c.group_id, c.agent_id
                      FROM membership_changes c
                     WHERE c.added
                       AND NOT EXISTS (SELECT 1 FROM etl.agents a WHERE a.agent_id = c.agent_id)
                    UNION  -- a pair dangling on both sides once: ten distinct pairs are named
                    SELECT c.group_id, c.agent_id
                      FROM membership_changes c
                     WHERE c.added
                       AND NOT EXISTS (SELECT 1 FROM etl.stg_groups g
                                        WHERE g.group_id = c.group_id)) c
             ORDER BY c.group_id, c.agent_id
             LIMIT 10) c;
    IF v_dangling IS NOT NULL THEN
        RAISE EXCEPTION 'staged memberships (group, agent) name no stored agent or no staged '
                        'group: %', array_to_string(v_dangling, ', ')
              USING ERRCODE = 'ET002';
    END IF;
    -- A first load (group_membership empty before this step) inserts without the table's keys
    -- and builds them afterwards: three times faster than keeping them up to date row by row
    -- (4.5 s against 13.8 s for 2M pairs). That needs the table to itself until commit, so it
    -- is done only when there are pairs to add and no other session holds a lock on the table
    -- at that moment; otherwise the pairs go in with the keys in place, and nobody waits.
    v_keys_after := v_first_load AND EXISTS (SELECT 1 FROM membership_changes WHERE added);
    IF v_keys_after THEN
        BEGIN
            LOCK TABLE etl.group_membership IN ACCESS EXCLUSIVE MODE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            v_keys_after := false;
        END;
    END IF;
    IF v_keys_after THEN
        ALTER TABLE etl.group_membership DROP CONSTRAINT group_membership_pkey;
        DROP INDEX etl.group_membership_agent;
    END IF;
    INSERT INTO etl.group_membership (group_id, agent_id, synced_at)
    SELECT c.group_id, c.agent_id, r.synced_at
      FROM membership_changes c
     WHERE c.added;
    GET DIAGNOSTICS v_members_added = ROW_COUNT;
    IF v_first_load THEN
        DROP VIEW membership_changes;
    ELSE
        DROP TABLE membership_changes;
    END IF;
    IF v_keys_after THEN
        ALTER TABLE etl.group_membership ADD PRIMARY KEY (group_id, agent_id);
        CREATE INDEX group_membership_agent ON etl.group_membership (agent_id);
    END IF;

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

