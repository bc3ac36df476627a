-- The one entry point of an apply: CALL etl.apply_sync_v3(account_id, run_id,
-- allow_mass_removal) applies the staged rows of an open run of the account inside the caller's
-- transaction and closes its ledger row. Every statement of the step reads and writes the
-- account's rows only.
--
-- SQLSTATEs raised by the apply: ET001 a safety guard refused the change; ET002 an invariant
-- broke.
--
-- Settings: work_mem keeps the membership diff's hash table and the roles step's sorts in
-- memory; JIT compiles cost more than they bought on these statements. A fleet's worker calls
-- this for account after account on one connection: a run that staged few rows reuses the
-- session's generic plans, made for the average account (planning the steps' statements afresh
-- costs more than applying a small account, and an account loaded since the tables' last
-- analyze would be planned as holding no rows); any other is planned for itself (a generic plan
-- would fail a large one).
CREATE PROCEDURE etl.apply_sync_v3(p_account_id bigint, p_run_id bigint,
                                   p_allow_mass_removal boolean)
LANGUAGE plpgsql
SET work_mem = '256MB'
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_run         etl.sync_runs;
    v_counts      jsonb;
    v_quarantined bigint;
    v_by_type     jsonb;
BEGIN
    SELECT * INTO v_run FROM etl.sync_runs
     WHERE account_id = p_account_id AND run_id = p_run_id
       FOR UPDATE;
    IF NOT FOUND OR v_run.status <> 'running' THEN
        RAISE EXCEPTION 'run % is not an open run of account %', p_run_id, p_account_id
              USING ERRCODE = 'ET002';
    END IF;
    IF etl.is_small_run_v1(p_account_id, v_run.entity) THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;

    v_counts := CASE v_run.entity
        WHEN 'agents' THEN etl.apply_agents_v1(v_run, p_allow_mass_removal)
        WHEN 'roles'  THEN etl.apply_roles_v1(v_run, p_allow_mass_removal)
        WHEN 'groups' THEN etl.apply_groups_v1(v_run, p_allow_mass_removal)
    END;
    -- Agents turning (in)active move the inactive flags of their groups.
    IF v_run.entity = 'agents' THEN
        v_counts := jsonb_set(v_counts, '{details}',
                              (v_counts -> 'details') || etl.refresh_group_inactive_v1(v_run));
    END IF;
    PERFORM etl.analyze_outgrown_v1(v_run.entity);

    v_quarantined := etl.record_errors_v1(v_run);
    SELECT coalesce(jsonb_object_agg(error_type, n), '{}') INTO v_by_type
      FROM (SELECT error_type, count(*) AS n FROM etl.stg_errors
             WHERE account_id = p_account_id AND entity = v_run.entity GROUP BY error_type) e;

    UPDATE etl.sync_runs
       SET status = 'succeeded', finished_at = clock_timestamp(),
           rows_staged = (v_counts ->> 'staged')::bigint,
           rows_inserted = (v_counts ->> 'inserted')::bigint,
           rows_updated = (v_counts ->> 'updated')::bigint,
           rows_unchanged = (v_counts ->> 'unchanged')::bigint,
           rows_removed = (v_counts ->> 'removed')::bigint,
           rows_quarantined = v_quarantined,
           details = (v_counts -> 'details') || jsonb_build_object('errors', v_by_type)
     WHERE account_id = p_account_id AND run_id = p_run_id;
END
$$;

-- Whether the run staged fewer than 20,000 rows of the entity's snapshot (agents, assignment
-- pairs, memberships): agents and pairs counted no further than that, memberships by the
-- lengths of the groups' member lists. One query an entity, each kept for the session by the
-- function's own plan_cache_mode whatever the apply's.
CREATE FUNCTION etl.is_small_run_v1(p_account_id bigint, p_entity text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF p_entity = 'agents' THEN
        RETURN (SELECT count(*) < 20000
                  FROM (SELECT 1 FROM etl.stg_agents
                         WHERE account_id = p_account_id LIMIT 20000) s);
    ELSIF p_entity = 'roles' THEN
        RETURN (SELECT count(*) < 20000
                  FROM (SELECT 1 FROM etl.stg_agent_roles
                         WHERE account_id = p_account_id LIMIT 20000) s);
    ELSIF p_entity = 'groups' THEN
        RETURN (SELECT coalesce(sum(cardinality(agent_ids)), 0) < 20000
                  FROM etl.stg_group_members WHERE account_id = p_account_id);
    END IF;
    RETURN true;
END
$$;

-- The tables a step writes get fresh planner statistics whenever they have grown to more than
-- twice the pages they had at their last analyze (a table never analyzed: as soon as it has
-- rows), not whenever autovacuum comes round. A fleet's first day fills them account by account:
-- statistics taken after the first account say every other account is empty, and the next
-- accounts' joins are then planned as nested loops over rows they hold by the thousand. Doubling
-- keeps the analyzes few: a few per table while a fleet grows. Only the columns the steps find
-- and join rows by are analyzed (keys, flags, counts): the names, emails, descriptions and times
-- took most of an analyze's time, and autovacuum's analyzes still cover every column. If another
-- account's apply is analyzing the same table (its lock held until that apply commits), this one
-- goes on without waiting: one account never waits for another. Its checks read the catalog,
-- not the account's rows: their plans are made once a session, whatever the apply's settings.
CREATE FUNCTION etl.analyze_outgrown_v1(p_entity text)
RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '10ms', true);
    BEGIN
        IF p_entity = 'agents' AND etl.outgrew_statistics_v1('etl.agents') THEN
            ANALYZE etl.agents (account_id, agent_id, present, active);
        END IF;
        IF p_entity = 'roles' AND etl.outgrew_statistics_v1('etl.roles') THEN
            ANALYZE etl.roles (account_id, role_id, present);
        END IF;
        IF p_entity = 'roles' AND etl.outgrew_statistics_v1('etl.agent_role_mapping') THEN
            ANALYZE etl.agent_role_mapping (account_id, agent_id, role_id, status);
        END IF;
        IF p_entity IN ('agents', 'groups') AND etl.outgrew_statistics_v1('etl.groups') THEN
            ANALYZE etl.groups (account_id, group_id, parent_group_id, present, inactive);
        END IF;
        IF p_entity = 'groups' AND etl.outgrew_statistics_v1('etl.group_membership') THEN
            ANALYZE etl.group_membership (account_id, group_id, agent_id);
        END IF;
        IF p_entity IN ('agents', 'groups')
           AND etl.outgrew_statistics_v1('etl.group_active_members') THEN
            ANALYZE etl.group_active_members;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        NULL;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;

-- Whether the table has more than twice the pages it had at its last analyze (its size on disk,
-- this transaction's rows included: exact at once, where the statistics system's counts of
-- other sessions' changes come up to a second late), and no vacuum or analyze (autovacuum's,
-- say) holds it now.
-- (PL/pgSQL keeps the query's plan for the session; as a SQL function called from PL/pgSQL its
-- body, two progress views and all, was planned again at every call: 0.9 ms an apply.)
CREATE FUNCTION etl.outgrew_statistics_v1(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint > 2 * c.relpages::bigint
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_vacuum v
                                WHERE v.relid = c.oid)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_analyze a
                                WHERE a.relid = c.oid)
          FROM pg_catalog.pg_class c
         WHERE c.oid = p_table);
END
$$;
