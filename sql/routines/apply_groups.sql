-- Groups of the run's account: upsert by id (parent stored as given); present = in the day's
-- snapshot. A staged group's memberships become exactly its staged ones; an absent group loses
-- its memberships and keeps its row. Held groups (every record of the id quarantined) keep row,
-- parent, memberships and presence. Then inactive is recomputed. The guard counts, of the
-- groups present before, those that leave the snapshot or turn inactive.
--
-- A first load (no membership of the account stored) inserts the staged memberships as they
-- are, in key order (by agent, then group): with nothing stored, every staged pair is added and
-- none leaves, which is what the diff would find, without each pair written to a helper table
-- and deleted again.
--
-- Its helper tables (stg_groups_before, stg_membership_changes) hold the account's rows only
-- while the step runs: they are deleted before it returns.
CREATE FUNCTION etl.apply_groups_v1(r etl.sync_runs, p_allow_mass_removal boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_account         bigint      := r.account_id;
    v_now             timestamptz := clock_timestamp();
    v_staged          bigint;
    v_updated         bigint;
    v_inserted        bigint;
    v_removed         bigint;
    v_members_added   bigint;
    v_members_removed bigint;
    v_leaving_pairs   bigint;
    v_present         bigint;
    v_leaving         bigint;
    v_to_inactive     bigint;
    v_to_active       bigint;
    v_dangling        text[];
    v_dangling_count  bigint      := 0;
    v_moved           bigint;
    v_leaving_tids    tid[];
    v_leaving_groups  bigint[];
    v_leaving_agents  bigint[];
    v_first_load      boolean;
BEGIN
    SELECT count(*) INTO v_staged FROM etl.stg_groups WHERE account_id = v_account;
    -- What the guard and the summary compare with: inactive flips of new groups are not flips.
    INSERT INTO etl.stg_groups_before (account_id, group_id, present, inactive)
    SELECT v_account, group_id, present, inactive FROM etl.groups WHERE account_id = v_account;

    UPDATE etl.groups g
       SET name = s.name, description = s.description, parent_group_id = s.parent_group_id,
           present = true, created_at = s.created_at, updated_at = s.updated_at,
           synced_at = r.synced_at, ingested_at = v_now
      FROM etl.stg_groups s
     WHERE g.account_id = v_account AND s.account_id = v_account AND g.group_id = s.group_id
       AND (g.name, g.description, g.parent_group_id, g.present, g.created_at, g.updated_at)
           IS DISTINCT FROM
           (s.name, s.description, s.parent_group_id, true, s.created_at, s.updated_at);
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    INSERT INTO etl.groups (account_id, group_id, name, description, parent_group_id, present,
                            inactive, created_at, updated_at, synced_at, ingested_at)
    SELECT v_account, s.group_id, s.name, s.description, s.parent_group_id, true, true,
           s.created_at, s.updated_at, r.synced_at, v_now
      FROM etl.stg_groups s
     WHERE s.account_id = v_account
       AND NOT EXISTS (SELECT 1 FROM etl.groups g
                        WHERE g.account_id = v_account AND g.group_id = s.group_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE etl.groups g
       SET present = false, synced_at = r.synced_at, ingested_at = v_now
     WHERE g.account_id = v_account AND g.present
       AND NOT EXISTS (SELECT 1 FROM etl.stg_groups s
                        WHERE s.account_id = v_account AND s.group_id = g.group_id)
       AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.account_id = v_account AND h.entity = 'groups'
                          AND h.record_id = g.group_id);
    GET DIAGNOSTICS v_removed = ROW_COUNT;

    -- Staged groups keep exactly their staged members; absent groups have none staged; held
    -- groups keep theirs. On a first load that is every staged pair added, inserted below.
    -- Otherwise one pass over both sets finds the pairs to add and to remove; each stored pair
    -- to remove comes with its row's ctid, by which it is deleted below.
    -- (min() reads the first key of the account's index range: one probe in any plan, where
    -- NOT EXISTS took a generic plan's sequential scan through every other account's rows.)
    v_first_load := (SELECT min(agent_id) FROM etl.group_membership
                      WHERE account_id = v_account) IS NULL;
    IF v_first_load THEN
        v_members_removed := 0;
    ELSE
        INSERT INTO etl.stg_membership_changes (account_id, group_id, agent_id, added, tid)
        SELECT v_account, coalesce(s.group_id, m.group_id), coalesce(s.agent_id, m.agent_id),
               m.group_id IS NULL, m.tid
          FROM (SELECT group_id, agent_id FROM etl.stg_group_membership
                 WHERE account_id = v_account) s
          FULL JOIN (SELECT group_id, agent_id, ctid AS tid FROM etl.group_membership
                      WHERE account_id = v_account) m
            ON m.group_id = s.group_id AND m.agent_id = s.agent_id
         WHERE m.group_id IS NULL
            OR (s.group_id IS NULL
                AND NOT EXISTS (SELECT 1 FROM etl.stg_held_ids h  -- held groups' pairs stay
                                 WHERE h.account_id = v_account AND h.entity = 'groups'
                                   AND h.record_id = m.group_id));
        SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added)
          INTO v_members_added, v_leaving_pairs
          FROM etl.stg_membership_changes WHERE account_id = v_account;

        -- The leaving pairs by the ctid the diff read them at (a TID scan) and their key, not by
        -- joining them back to every stored pair by key. The key check keeps a row that another
        -- session moved meanwhile.
        SELECT array_agg(c.tid), array_agg(c.group_id), array_agg(c.agent_id)
          INTO v_leaving_tids, v_leaving_groups, v_leaving_agents
          FROM etl.stg_membership_changes c
         WHERE c.account_id = v_account AND NOT c.added;
        DELETE FROM etl.group_membership m
         USING unnest(v_leaving_tids, v_leaving_groups, v_leaving_agents)
               AS c (tid, group_id, agent_id)
         WHERE m.ctid = c.tid
           AND m.account_id = v_account AND m.group_id = c.group_id AND m.agent_id = c.agent_id;
        GET DIAGNOSTICS v_members_removed = ROW_COUNT;
        -- A leaving pair whose row another session rewrote since the diff read it (a write made
        -- outside etl) is no longer at that ctid: those go by their key.
        IF v_members_removed < v_leaving_pairs THEN
            DELETE FROM etl.group_membership m
             USING etl.stg_membership_changes c
             WHERE c.account_id = v_account AND NOT c.added
               AND m.account_id = v_account AND m.group_id = c.group_id AND m.agent_id = c.agent_id;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            v_members_removed := v_members_removed + v_moved;
        END IF;
    END IF;

    -- What foreign keys would check, for the added pairs at once (agents are never deleted, so
    -- stored memberships stay valid): the diff's, or on a first load every staged pair. A first
    -- load first counts what dangles at less cost: groups by their member arrays, the pairs'
    -- agents in one pass (counted, not EXISTS: a plan for the first row probes pair by pair).
    -- The pairs are named only then, or on a later load, whose added pairs are few: two anti
    -- joins, not one filter with OR, which probed both sets row by row; and no LIMIT inside
    -- them, under which the planner probed every pair one by one to find ten. The count and
    -- the naming query check the same rule: they change together.
    IF v_first_load THEN
        SELECT count(*) INTO v_dangling_count
          FROM (SELECT 1 FROM etl.stg_group_members m
                 WHERE m.account_id = v_account
                   AND NOT EXISTS (SELECT 1 FROM etl.stg_groups g
                                    WHERE g.account_id = v_account AND g.group_id = m.group_id)
                UNION ALL
                SELECT 1 FROM etl.stg_group_membership s
                 WHERE s.account_id = v_account
                   AND NOT EXISTS (SELECT 1 FROM etl.agents a
                                    WHERE a.account_id = v_account
                                      AND a.agent_id = s.agent_id)) d;
    END IF;
    IF NOT v_first_load OR v_dangling_count > 0 THEN
        WITH added AS NOT MATERIALIZED (
            SELECT c.group_id, c.agent_id
              FROM etl.stg_membership_changes c
             WHERE c.account_id = v_account AND c.added AND NOT v_first_load
            UNION ALL
            SELECT s.group_id, s.agent_id
              FROM etl.stg_group_membership s
             WHERE s.account_id = v_account AND v_first_load
        )
        SELECT array_agg(DISTINCT format('(%s, %s)', c.group_id, c.agent_id)) INTO v_dangling
          FROM (SELECT c.group_id, c.agent_id
                  FROM (SELECT c.group_id, c.agent_id
                          FROM added c
                         WHERE NOT EXISTS (SELECT 1 FROM etl.agents a
                                            WHERE a.account_id = v_account
                                              AND a.agent_id = c.agent_id)
                        UNION  -- a pair dangling on both sides once: ten distinct pairs named
                        SELECT c.group_id, c.agent_id
                          FROM added c
                         WHERE NOT EXISTS (SELECT 1 FROM etl.stg_groups g
                                            WHERE g.account_id = v_account
                                              AND g.group_id = c.group_id)) c
                 ORDER BY c.group_id, c.agent_id
                 LIMIT 10) c;
        IF v_dangling IS NOT NULL THEN
            RAISE EXCEPTION 'staged memberships (group, agent) name no stored agent or no '
                            'staged group: %', array_to_string(v_dangling, ', ')
                  USING ERRCODE = 'ET002';
        END IF;
    END IF;

    IF v_first_load THEN
        INSERT INTO etl.group_membership (account_id, group_id, agent_id, synced_at)
        SELECT v_account, s.group_id, s.agent_id, r.synced_at
          FROM etl.stg_group_membership s
         WHERE s.account_id = v_account
         ORDER BY s.agent_id, s.group_id;
        GET DIAGNOSTICS v_members_added = ROW_COUNT;
    ELSE
        INSERT INTO etl.group_membership (account_id, group_id, agent_id, synced_at)
        SELECT v_account, c.group_id, c.agent_id, r.synced_at
          FROM etl.stg_membership_changes c
         WHERE c.account_id = v_account AND c.added;
        DELETE FROM etl.stg_membership_changes WHERE account_id = v_account;
    END IF;

    PERFORM etl.refresh_group_inactive_v1(r);

    SELECT count(*) FILTER (WHERE b.present),
           count(*) FILTER (WHERE b.present AND (NOT g.present OR (NOT b.inactive AND g.inactive))),
           count(*) FILTER (WHERE NOT b.inactive AND g.inactive),
           count(*) FILTER (WHERE b.inactive AND NOT g.inactive)
      INTO v_present, v_leaving, v_to_inactive, v_to_active
      FROM etl.stg_groups_before b
      JOIN etl.groups g ON g.account_id = v_account AND g.group_id = b.group_id
     WHERE b.account_id = v_account;
    DELETE FROM etl.stg_groups_before WHERE account_id = v_account;
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
            'members_staged',
            (SELECT coalesce(sum(cardinality(m.agent_ids)), 0) FROM etl.stg_group_members m
              WHERE m.account_id = v_account),
            'members_added', v_members_added, 'members_removed', v_members_removed));
END
$$;
