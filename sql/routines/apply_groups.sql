-- Groups: upsert by id (parent stored as given); present = in the day's snapshot. A staged
-- group's memberships become exactly its staged ones; an absent group loses its memberships and
-- keeps its row. Held groups (every record of the id quarantined) keep row, parent, memberships
-- and presence. Then inactive is recomputed. The guard counts, of the groups present before,
-- those that leave the snapshot or turn inactive.
CREATE FUNCTION etl.apply_groups_v1(r etl.sync_runs, p_allow_mass_removal boolean)
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
    v_check_pairs     boolean;
    v_first_load      boolean;
    v_keys_after      boolean;
    v_moved           bigint;
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
        v_members_removed := 0;
        CREATE TEMP VIEW membership_changes AS
            SELECT s.group_id, s.agent_id, true AS added FROM etl.stg_group_membership s;
        -- One pass over the staged pairs and agents gives each group's active members (what
        -- the count trigger would add) and its pairs naming no agent (what the dangling check
        -- looks for), so that neither reads all the pairs again.
        CREATE TEMP TABLE first_counts ON COMMIT DROP AS
            SELECT s.group_id,
                   count(*) FILTER (WHERE a.active) AS active_members,
                   count(*) FILTER (WHERE a.agent_id IS NULL) AS no_agent
              FROM etl.stg_group_membership s
              LEFT JOIN etl.agents a ON a.agent_id = s.agent_id
             GROUP BY s.group_id;
        v_check_pairs := EXISTS (SELECT 1 FROM first_counts c
                                  WHERE c.no_agent > 0
                                     OR NOT EXISTS (SELECT 1 FROM etl.stg_groups g
                                                     WHERE g.group_id = c.group_id));
    ELSE
        v_check_pairs := true;
        -- Each stored pair to remove comes with its row's ctid, by which it is deleted below.
        CREATE TEMP TABLE membership_changes ON COMMIT DROP AS
            SELECT coalesce(s.group_id, m.group_id) AS group_id,
                   coalesce(s.agent_id, m.agent_id) AS agent_id,
                   m.group_id IS NULL AS added, m.ctid AS tid
              FROM etl.stg_group_membership s
              FULL JOIN etl.group_membership m
                ON m.group_id = s.group_id AND m.agent_id = s.agent_id
             WHERE s.group_id IS NULL OR m.group_id IS NULL;
        -- Pairs of held groups stay: they are no change.
        DELETE FROM membership_changes c
         WHERE NOT c.added
           AND EXISTS (SELECT 1 FROM etl.stg_held_ids h
                        WHERE h.entity = 'groups' AND h.record_id = c.group_id);
        -- The leaving pairs by the ctid the diff read them at (a TID scan) and their key, not by
        -- joining them back to every stored pair by key. The key check keeps a row that another
        -- session moved meanwhile.
        DELETE FROM etl.group_membership m
         USING membership_changes c
         WHERE m.ctid = ANY (ARRAY(SELECT c.tid FROM membership_changes c WHERE NOT c.added))
           AND NOT c.added AND m.ctid = c.tid
           AND m.group_id = c.group_id AND m.agent_id = c.agent_id;
        GET DIAGNOSTICS v_members_removed = ROW_COUNT;
        -- A leaving pair whose row another session rewrote since the diff read it (a write made
        -- outside etl) is no longer at that ctid: those go by their key, as before 011.
        IF v_members_removed < (SELECT count(*) FROM membership_changes c WHERE NOT c.added) THEN
            DELETE FROM etl.group_membership m
             USING membership_changes c
             WHERE NOT c.added AND m.group_id = c.group_id AND m.agent_id = c.agent_id;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            v_members_removed := v_members_removed + v_moved;
        END IF;
    END IF;

    -- What the foreign keys would check, for the added pairs at once (agents are never deleted,
    -- so stored memberships stay valid); on a first load only when first_counts found one.
    -- Two anti joins, not one filter with OR, which probed both sets row by row; and no LIMIT
    -- inside them, under which the planner probed every pair one by one to find ten.
    IF v_check_pairs THEN
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
    END IF;
    IF v_dangling IS NOT NULL THEN
        RAISE EXCEPTION 'staged memberships (group, agent) name no stored agent or no staged '
                        'group: %', array_to_string(v_dangling, ', ')
              USING ERRCODE = 'ET002';
    END IF;
    -- A first load (group_membership empty before this step) inserts without the table's keys
    -- and builds them afterwards, faster than keeping them up to date row by row. That needs
    -- the table to itself until commit, so it is done only when there are pairs to add and no
    -- other session holds a lock on the table at that moment; otherwise the pairs go in with
    -- the keys in place, and nobody waits.
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
        -- The counts come from first_counts instead of the trigger reading every pair back. The
        -- trigger is dropped, not disabled: a disabled one still has the insert keep every row
        -- for its transition table.
        DROP TRIGGER count_added_pairs_v1 ON etl.group_membership;
    END IF;
    INSERT INTO etl.group_membership (group_id, agent_id, synced_at)
    SELECT c.group_id, c.agent_id, r.synced_at
      FROM membership_changes c
     WHERE c.added;
    GET DIAGNOSTICS v_members_added = ROW_COUNT;
    IF v_keys_after THEN
        CREATE TRIGGER count_added_pairs_v1  -- as in active_member_counts.sql
            AFTER INSERT ON etl.group_membership REFERENCING NEW TABLE AS added_pairs
            FOR EACH STATEMENT EXECUTE FUNCTION etl.count_active_members_v1();
        INSERT INTO etl.group_active_members AS c (group_id, active_members)
        SELECT f.group_id, f.active_members FROM first_counts f WHERE f.active_members > 0
        ON CONFLICT (group_id)
        DO UPDATE SET active_members = c.active_members + excluded.active_members;
    END IF;
    IF v_first_load THEN
        DROP VIEW membership_changes;
        DROP TABLE first_counts;
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
