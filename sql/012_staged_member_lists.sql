-- Memberships are staged as one row per group holding its members, instead of one row per
-- (group, agent) pair: at scale L (20,000 groups, 2M pairs) the COPY carries 100 times fewer
-- rows. etl.stg_group_membership becomes a view unnesting them, so the groups step (and anyone
-- reading staging) sees the same pairs as before.
CREATE UNLOGGED TABLE etl.stg_group_members (
    group_id  bigint   NOT NULL,
    agent_ids bigint[] NOT NULL  -- distinct, known agents, in the order of the group's array
        CHECK (array_position(agent_ids, NULL) IS NULL)
);

-- The last run's staged pairs stay staged (a run that staged them may not have applied yet).
INSERT INTO etl.stg_group_members (group_id, agent_ids)
SELECT group_id, array_agg(agent_id ORDER BY agent_id)
  FROM etl.stg_group_membership
 GROUP BY group_id;
DROP TABLE etl.stg_group_membership;
CREATE VIEW etl.stg_group_membership AS
    SELECT group_id, unnest(agent_ids) AS agent_id FROM etl.stg_group_members;

-- clear_staging_v1 of 002, emptying stg_group_members.
CREATE OR REPLACE FUNCTION etl.clear_staging_v1(p_entity text)
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
