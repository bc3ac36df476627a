-- Staging: what the last run of each entity staged.

-- The staged memberships as (group, agent) pairs, one row per member of each staged group.
CREATE VIEW etl.stg_group_membership AS
    SELECT m.group_id, u.agent_id
      FROM etl.stg_group_members m
     CROSS JOIN LATERAL unnest(m.agent_ids) AS u (agent_id);

-- Empties the staging rows of one entity before a run stages its own.
CREATE FUNCTION etl.clear_staging_v1(p_entity text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_entity
        WHEN 'agents' THEN TRUNCATE etl.stg_agents;
        WHEN 'roles'  THEN TRUNCATE etl.stg_roles, etl.stg_agent_roles;
        WHEN 'groups' THEN TRUNCATE etl.stg_groups, etl.stg_group_members;
    END CASE;
    DELETE FROM etl.stg_held_ids WHERE entity = p_entity;
    DELETE FROM etl.stg_errors WHERE entity = p_entity;
END
$$;
