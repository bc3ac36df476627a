-- Recomputes groups.inactive for every group of the run's account (SEMANTICS section 7): a
-- group is active iff some present group reachable from it by child edges through present
-- groups, itself included, has an active member; absent groups are inactive. The walk goes
-- upwards, from child to parent, starting at the present groups with an active member
-- (etl.group_active_members); UNION drops rows already found, so each group is visited once and
-- cycles end the walk. Both branches of the walk stay inside the account. Only flipped rows are
-- written; returns their counts.
--
-- The planner cannot tell how many groups a walk finds, and a fleet's small accounts run on
-- generic plans, or on statistics taken before they were loaded: no statement joins the walk to
-- the account's groups, a join it could make a loop over one for each row of the other. Each step
-- of the walk probes the key for its groups' parents; the groups to flip are found by grouping
-- the account's groups with the walk's, and are written by key.
CREATE FUNCTION etl.refresh_group_inactive_v1(r etl.sync_runs)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_account     bigint := r.account_id;
    v_to_inactive bigint;
    v_to_active   bigint;
    v_flipped     bigint[];
BEGIN
    IF EXISTS (SELECT 1 FROM etl.group_active_members
                WHERE account_id = v_account AND active_members < 0) THEN
        RAISE EXCEPTION 'active-member counts below zero (groups %): a change to group_membership '
                        'or agents went uncounted',
                        (SELECT string_agg(group_id::text, ', ' ORDER BY group_id)
                           FROM etl.group_active_members
                          WHERE account_id = v_account AND active_members < 0)
              USING ERRCODE = 'ET002';
    END IF;
    WITH RECURSIVE active (group_id, parent_group_id) AS (
        SELECT g.group_id, g.parent_group_id
          FROM etl.groups g
          JOIN etl.group_active_members c
            ON c.account_id = v_account AND c.group_id = g.group_id
         WHERE g.account_id = v_account AND g.present AND c.active_members > 0
        UNION
        SELECT p.group_id, p.parent_group_id
          FROM active c
         CROSS JOIN LATERAL (SELECT p.group_id, p.parent_group_id
                               FROM etl.groups p
                              WHERE p.account_id = v_account AND p.group_id = c.parent_group_id
                                AND p.present
                              LIMIT 1) p  -- LIMIT keeps it a probe, not a join
    )
    SELECT array_agg(group_id) INTO v_flipped
      FROM (SELECT m.group_id
              FROM (SELECT group_id, inactive, false AS walked
                      FROM etl.groups WHERE account_id = v_account
                    UNION ALL
                    SELECT group_id, NULL, true FROM active) m
             GROUP BY m.group_id  -- inactive though walked, or active though not:
            HAVING bool_or(m.inactive) = bool_or(m.walked)) f;
    WITH flipped AS (
        UPDATE etl.groups g
           SET inactive = NOT g.inactive, synced_at = r.synced_at, ingested_at = clock_timestamp()
         WHERE g.account_id = v_account AND g.group_id = ANY (v_flipped)
        RETURNING g.inactive
    )
    SELECT count(*) FILTER (WHERE inactive), count(*) FILTER (WHERE NOT inactive)
      INTO v_to_inactive, v_to_active
      FROM flipped;
    RETURN jsonb_build_object('groups_turned_inactive', v_to_inactive,
                              'groups_turned_active', v_to_active);
END
$$;
