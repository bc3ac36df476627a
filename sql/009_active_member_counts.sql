-- Each group's number of active members, kept by statement-level triggers on group_membership
-- and agents, so that the inactive walk starts from the groups that have one instead of joining
-- every membership with agents on every run: at scale L (2M memberships) that join took
-- 1.5-1.7 s, after every agents step and again after every groups step. The triggers see only
-- the rows a statement changed (its transition tables): a day that flips a few agents or moves a
-- few members touches a few counts.
--
-- The counts are bookkeeping, not part of the data contract: no flag, timestamp or summary
-- changes with them. Each change is added as a signed delta (an upsert); a count below zero
-- would mean one went wrong, and the walk refuses to run on it. (A CHECK cannot say this:
-- PostgreSQL checks the row an upsert proposes, the bare negative delta, before the conflict.)

CREATE TABLE etl.group_active_members (
    group_id       bigint PRIMARY KEY,
    active_members bigint NOT NULL
);

INSERT INTO etl.group_active_members (group_id, active_members)
SELECT m.group_id, count(*)
  FROM etl.group_membership m
  JOIN etl.agents a ON a.agent_id = m.agent_id
 WHERE a.active
 GROUP BY m.group_id;

-- group_membership: +1 for each pair added with an active agent, -1 for each one removed.
-- Pairs are counted against the agents as they are when the statement ends.
CREATE FUNCTION etl.count_active_members_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM etl.group_active_members;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO etl.group_active_members AS c (group_id, active_members)
        SELECT m.group_id, count(*)
          FROM added_pairs m
          JOIN etl.agents a ON a.agent_id = m.agent_id
         WHERE a.active
         GROUP BY m.group_id
        ON CONFLICT (group_id)
        DO UPDATE SET active_members = c.active_members + excluded.active_members;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO etl.group_active_members AS c (group_id, active_members)
        SELECT m.group_id, -count(*)
          FROM removed_pairs m
          JOIN etl.agents a ON a.agent_id = m.agent_id
         WHERE a.active
         GROUP BY m.group_id
        ON CONFLICT (group_id)
        DO UPDATE SET active_members = c.active_members + excluded.active_members;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_added_pairs_v1
    AFTER INSERT ON etl.group_membership REFERENCING NEW TABLE AS added_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_active_members_v1();
CREATE TRIGGER count_removed_pairs_v1
    AFTER DELETE ON etl.group_membership REFERENCING OLD TABLE AS removed_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_active_members_v1();
CREATE TRIGGER count_changed_pairs_v1
    AFTER UPDATE ON etl.group_membership
    REFERENCING OLD TABLE AS removed_pairs NEW TABLE AS added_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_active_members_v1();
CREATE TRIGGER count_cleared_pairs_v1
    AFTER TRUNCATE ON etl.group_membership
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_active_members_v1();

-- agents: an agent that turns active adds one to each of its groups' counts; one that turns
-- inactive, or is deleted while active, takes one away. Old and new rows pair by agent_id,
-- which never changes (agent_ids_never_change_v1).
CREATE FUNCTION etl.add_to_active_members_v1(p_agent_ids bigint[], p_change integer)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO etl.group_active_members AS c (group_id, active_members)
    SELECT m.group_id, p_change * count(*)
      FROM unnest(p_agent_ids) f (agent_id)
      JOIN etl.group_membership m ON m.agent_id = f.agent_id
     GROUP BY m.group_id
    ON CONFLICT (group_id)
    DO UPDATE SET active_members = c.active_members + excluded.active_members;
$$;

CREATE FUNCTION etl.count_agent_flips_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM etl.group_active_members;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM etl.add_to_active_members_v1(
            ARRAY(SELECT n.agent_id FROM new_agents n WHERE n.active), 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM etl.add_to_active_members_v1(
            ARRAY(SELECT o.agent_id FROM old_agents o WHERE o.active), -1);
    ELSE
        PERFORM etl.add_to_active_members_v1(
            ARRAY(SELECT n.agent_id FROM new_agents n
                    JOIN old_agents o ON o.agent_id = n.agent_id
                   WHERE n.active AND NOT o.active), 1);
        PERFORM etl.add_to_active_members_v1(
            ARRAY(SELECT n.agent_id FROM new_agents n
                    JOIN old_agents o ON o.agent_id = n.agent_id
                   WHERE o.active AND NOT n.active), -1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_added_agents_v1
    AFTER INSERT ON etl.agents REFERENCING NEW TABLE AS new_agents
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_agent_flips_v1();
CREATE TRIGGER count_removed_agents_v1
    AFTER DELETE ON etl.agents REFERENCING OLD TABLE AS old_agents
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_agent_flips_v1();
CREATE TRIGGER count_changed_agents_v1
    AFTER UPDATE ON etl.agents REFERENCING OLD TABLE AS old_agents NEW TABLE AS new_agents
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_agent_flips_v1();
CREATE TRIGGER count_cleared_agents_v1
    AFTER TRUNCATE ON etl.agents
    FOR EACH STATEMENT EXECUTE FUNCTION etl.count_agent_flips_v1();

CREATE FUNCTION etl.agent_ids_never_change_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agent ids never change (agent % would become %): the active-member counts '
                    'pair old and new rows by id', OLD.agent_id, NEW.agent_id
          USING ERRCODE = 'ET002';
END
$$;

CREATE TRIGGER agent_ids_never_change_v1
    BEFORE UPDATE OF agent_id ON etl.agents
    FOR EACH ROW WHEN (OLD.agent_id IS DISTINCT FROM NEW.agent_id)
    EXECUTE FUNCTION etl.agent_ids_never_change_v1();

-- The walk of 003, seeded from the counts: a present group with an active member starts it.
CREATE OR REPLACE FUNCTION etl.refresh_group_inactive_v1(r etl.sync_runs)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_to_inactive bigint;
    v_to_active   bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM etl.group_active_members WHERE active_members < 0) THEN
        RAISE EXCEPTION 'active-member counts below zero (groups %): a change to group_membership '
                        'or agents went uncounted',
                        (SELECT string_agg(group_id::text, ', ' ORDER BY group_id)
                           FROM etl.group_active_members WHERE active_members < 0)
              USING ERRCODE = 'ET002';
    END IF;
    WITH RECURSIVE active (group_id, parent_group_id) AS (
        SELECT g.group_id, g.parent_group_id
          FROM etl.groups g
          JOIN etl.group_active_members c ON c.group_id = g.group_id
         WHERE g.present AND c.active_members > 0
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

-- apply_sync_v2 of 003, and after the step: a table loaded for the first time gets its planner
-- statistics now, not whenever autovacuum comes round. Without them the next step or day plans
-- its joins blind (at L, 2M memberships were read whole to find 2,000 agents' groups).
CREATE OR REPLACE PROCEDURE etl.apply_sync_v2(p_run_id bigint, p_allow_mass_removal boolean)
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
    PERFORM etl.analyze_first_load_v1(v_run.entity);

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
ALTER PROCEDURE etl.apply_sync_v2(bigint, boolean) SET work_mem = '256MB' SET jit = off;

-- ANALYZE the step's large tables that hold rows but have no statistics yet: a first load.
CREATE FUNCTION etl.analyze_first_load_v1(p_entity text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_entity = 'agents' AND etl.lacks_statistics_v1('agents')
       AND EXISTS (SELECT 1 FROM etl.agents) THEN
        ANALYZE etl.agents;
    ELSIF p_entity = 'roles' AND etl.lacks_statistics_v1('agent_role_mapping')
       AND EXISTS (SELECT 1 FROM etl.agent_role_mapping) THEN
        ANALYZE etl.agent_role_mapping;
    ELSIF p_entity = 'groups' AND etl.lacks_statistics_v1('group_membership')
       AND EXISTS (SELECT 1 FROM etl.group_membership) THEN
        ANALYZE etl.groups, etl.group_membership;
    END IF;
END
$$;

CREATE FUNCTION etl.lacks_statistics_v1(p_table name)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stats s
                        WHERE s.schemaname = 'etl' AND s.tablename = p_table);
$$;
