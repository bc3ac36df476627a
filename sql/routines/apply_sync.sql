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
-- this for account after account on one connection: an account whose last run of the entity
-- staged few rows reuses the session's cached plans (planning the steps' statements afresh
-- costs more than applying a small account), any other is planned for itself (a generic plan
-- fits the average account, and would fail a large one).
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
    IF etl.last_rows_staged_v1(p_account_id, v_run.entity) < 20000 THEN
        PERFORM set_config('plan_cache_mode', 'auto', true);
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
    PERFORM etl.analyze_first_load_v1(v_run.entity);

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

-- The rows the account's last applied run of the entity staged; NULL before its first.
CREATE FUNCTION etl.last_rows_staged_v1(p_account_id bigint, p_entity text)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT rows_staged FROM etl.sync_runs
     WHERE account_id = p_account_id AND entity = p_entity AND status = 'succeeded'
     ORDER BY run_id DESC LIMIT 1
$$;

-- A table a step has just loaded for the first time (for any account) gets its planner
-- statistics now, not whenever autovacuum comes round: without them the next step or day plans
-- its joins blind. For agents only the columns the steps join and filter on; autovacuum adds
-- the rest. If another account's apply is analyzing the same table (its lock held until that
-- apply commits), this one goes on without waiting: one account never waits for another.
CREATE FUNCTION etl.analyze_first_load_v1(p_entity text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '10ms', true);
    BEGIN
        IF p_entity = 'agents' AND etl.lacks_statistics_v1('agents')
           AND EXISTS (SELECT 1 FROM etl.agents) THEN
            ANALYZE etl.agents (account_id, agent_id, present, active);
        ELSIF p_entity = 'roles' AND etl.lacks_statistics_v1('agent_role_mapping')
           AND EXISTS (SELECT 1 FROM etl.agent_role_mapping) THEN
            ANALYZE etl.agent_role_mapping;
        ELSIF p_entity = 'groups' AND etl.lacks_statistics_v1('group_membership')
           AND EXISTS (SELECT 1 FROM etl.group_membership) THEN
            ANALYZE etl.groups, etl.group_membership;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        NULL;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;

CREATE FUNCTION etl.lacks_statistics_v1(p_table name)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stats s
                        WHERE s.schemaname = 'etl' AND s.tablename = p_table);
$$;
