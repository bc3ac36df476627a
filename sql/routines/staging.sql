-- Staging: what the last run of each entity of each account staged.

-- The staged memberships as (group, agent) pairs, one row per member of each staged group.
CREATE VIEW etl.stg_group_membership AS
    SELECT m.account_id, m.group_id, u.agent_id
      FROM etl.stg_group_members m
     CROSS JOIN LATERAL unnest(m.agent_ids) AS u (agent_id);

-- Empties the staging rows of one entity of one account before a run stages its own. DELETE,
-- not TRUNCATE: other accounts' staging stays, and runs of other accounts go on meanwhile.
CREATE FUNCTION etl.clear_staging_v2(p_account_id bigint, p_entity text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_entity
        WHEN 'agents' THEN
            DELETE FROM etl.stg_agents WHERE account_id = p_account_id;
        WHEN 'roles' THEN
            DELETE FROM etl.stg_roles WHERE account_id = p_account_id;
            DELETE FROM etl.stg_agent_roles WHERE account_id = p_account_id;
        WHEN 'groups' THEN
            DELETE FROM etl.stg_groups WHERE account_id = p_account_id;
            DELETE FROM etl.stg_group_members WHERE account_id = p_account_id;
    END CASE;
    DELETE FROM etl.stg_held_ids WHERE account_id = p_account_id AND entity = p_entity;
    DELETE FROM etl.stg_errors WHERE account_id = p_account_id AND entity = p_entity;
END
$$;
