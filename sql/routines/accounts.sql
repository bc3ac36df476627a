-- Accounts: created on first use, and deleted with every row they own.

-- The account's id for its key, created on first use. Looked up first: an insert that meets
-- the key would still use up an id.
CREATE FUNCTION etl.ensure_account_v1(p_account_key text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_account_id bigint;
BEGIN
    SELECT account_id INTO v_account_id FROM etl.accounts WHERE account_key = p_account_key;
    IF NOT FOUND THEN
        INSERT INTO etl.accounts (account_key) VALUES (p_account_key)
        ON CONFLICT (account_key) DO NOTHING
        RETURNING account_id INTO v_account_id;
    END IF;
    IF v_account_id IS NULL THEN  -- created by another session meanwhile
        SELECT account_id INTO v_account_id FROM etl.accounts WHERE account_key = p_account_key;
    END IF;
    RETURN v_account_id;
END
$$;

-- Deletes the account and every row it owns, final, errors, ledger and staging, in the caller's
-- transaction; returns the rows deleted per table. History goes before the runs it names, and
-- memberships before the agents whose counts they carry.
CREATE FUNCTION etl.delete_account_v1(p_account_id bigint)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_table   text;
    v_rows    bigint;
    v_deleted jsonb := '{}';
BEGIN
    FOREACH v_table IN ARRAY ARRAY[
        'agent_role_history', 'agent_role_mapping', 'group_membership', 'group_active_members',
        'groups', 'roles', 'agents', 'agent_pipeline_errors', 'role_pipeline_errors',
        'group_pipeline_errors', 'sync_run_files', 'sync_runs', 'stg_agents', 'stg_roles',
        'stg_agent_roles', 'stg_groups', 'stg_group_members', 'stg_held_ids', 'stg_errors',
        'stg_groups_before', 'stg_membership_changes']
    LOOP
        EXECUTE format('DELETE FROM etl.%I WHERE account_id = $1', v_table) USING p_account_id;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_deleted := v_deleted || jsonb_build_object(v_table, v_rows);
    END LOOP;
    DELETE FROM etl.accounts WHERE account_id = p_account_id;
    RETURN v_deleted;
END
$$;
