-- Each group's count of active members (etl.group_active_members), kept by statement-level
-- triggers on group_membership and agents, so that the inactive walk starts from the groups
-- that have one. The triggers see only the rows a statement changed (its transition tables): a
-- day that flips a few agents or moves a few members touches a few counts. A statement may span
-- accounts (a write made by hand): every join pairs rows of one account.

-- Every group's count of one account from scratch: the repair after writes made outside etl
-- raced each other (one session flipping an agent while another adds its membership: each
-- trigger sees the other's change only once it commits, so both can miss the pair). etl's own
-- runs never race: they hold the account's lock.
CREATE FUNCTION etl.recount_active_members_v2(p_account_id bigint)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM etl.group_active_members WHERE account_id = p_account_id;
    INSERT INTO etl.group_active_members (account_id, group_id, active_members)
    SELECT p_account_id, m.group_id, count(*)
      FROM etl.group_membership m
      JOIN etl.agents a ON a.account_id = p_account_id AND a.agent_id = m.agent_id
     WHERE m.account_id = p_account_id AND a.active
     GROUP BY m.group_id;
$$;

-- group_membership: +1 for each pair added with an active agent, -1 for each one removed.
-- Pairs are counted against the agents as they are when the statement ends. Only the agents of
-- the statement's accounts are read, named by value (a parameter the planner sees): without it
-- the planner may hash every account's agents for one small account's pairs, a cost that grows
-- with the fleet; with them named by a subquery instead, one big account's first load probed
-- its agents one pair at a time. The pairs are counted by group in a hash table, not sorted by
-- group: they come in key order (by agent), and the planner, which cannot tell how many rows a
-- transition table's join gives, would sort a first load's pairs.
CREATE FUNCTION etl.count_active_members_v1()
RETURNS trigger
LANGUAGE plpgsql
SET enable_sort = off
AS $$
DECLARE
    v_accounts bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM etl.group_active_members;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        v_accounts := ARRAY(SELECT DISTINCT account_id FROM added_pairs);
        INSERT INTO etl.group_active_members AS c (account_id, group_id, active_members)
        SELECT m.account_id, m.group_id, count(*)
          FROM added_pairs m
          JOIN etl.agents a ON a.account_id = m.account_id AND a.agent_id = m.agent_id
         WHERE a.active
           AND a.account_id = ANY (v_accounts)
         GROUP BY m.account_id, m.group_id
        ON CONFLICT (account_id, group_id)
        DO UPDATE SET active_members = c.active_members + excluded.active_members;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        v_accounts := ARRAY(SELECT DISTINCT account_id FROM removed_pairs);
        INSERT INTO etl.group_active_members AS c (account_id, group_id, active_members)
        SELECT m.account_id, m.group_id, -count(*)
          FROM removed_pairs m
          JOIN etl.agents a ON a.account_id = m.account_id AND a.agent_id = m.agent_id
         WHERE a.active
           AND a.account_id = ANY (v_accounts)
         GROUP BY m.account_id, m.group_id
        ON CONFLICT (account_id, group_id)
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
-- inactive, or is deleted while active, takes one away. Old and new rows pair by account and
-- agent_id, which never change (agent_ids_never_change_v1). A statement's flips, each with its
-- sign, are counted at once. The flipping agents' groups are found by probing group_membership's
-- key (account, agent, group): the pages it reads were just written or read, which a
-- random_page_cost of 1.1 says better than the default (at which the planner hashed every
-- membership instead).
CREATE FUNCTION etl.add_to_active_members_v3(p_account_ids bigint[], p_agent_ids bigint[],
                                             p_changes integer[])
RETURNS void
LANGUAGE plpgsql  -- which keeps the plan for the session (a SQL function's body was planned
                  -- again at every call from a trigger)
SET random_page_cost = 1.1
AS $$
BEGIN
    INSERT INTO etl.group_active_members AS c (account_id, group_id, active_members)
    SELECT m.account_id, m.group_id, sum(f.change)
      FROM unnest(p_account_ids, p_agent_ids, p_changes) f (account_id, agent_id, change)
      JOIN etl.group_membership m ON m.account_id = f.account_id AND m.agent_id = f.agent_id
     GROUP BY m.account_id, m.group_id
    ON CONFLICT (account_id, group_id)
    DO UPDATE SET active_members = c.active_members + excluded.active_members;
END
$$;

CREATE FUNCTION etl.count_agent_flips_v1()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_accounts bigint[];
    v_agents   bigint[];
    v_changes  integer[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM etl.group_active_members;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.account_id), array_agg(n.agent_id), array_agg(1)
          INTO v_accounts, v_agents, v_changes
          FROM new_agents n WHERE n.active;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.account_id), array_agg(o.agent_id), array_agg(-1)
          INTO v_accounts, v_agents, v_changes
          FROM old_agents o WHERE o.active;
    ELSE
        SELECT array_agg(n.account_id), array_agg(n.agent_id),
               array_agg(CASE WHEN n.active THEN 1 ELSE -1 END)
          INTO v_accounts, v_agents, v_changes
          FROM new_agents n
          JOIN old_agents o ON o.account_id = n.account_id AND o.agent_id = n.agent_id
         WHERE n.active IS DISTINCT FROM o.active;
    END IF;
    PERFORM etl.add_to_active_members_v3(v_accounts, v_agents, v_changes);
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
    RAISE EXCEPTION 'agent ids never change (agent % of account % would become agent % of '
                    'account %): the active-member counts pair old and new rows by id',
                    OLD.agent_id, OLD.account_id, NEW.agent_id, NEW.account_id
          USING ERRCODE = 'ET002';
END
$$;

CREATE TRIGGER agent_ids_never_change_v1
    BEFORE UPDATE OF account_id, agent_id ON etl.agents
    FOR EACH ROW WHEN ((OLD.account_id, OLD.agent_id) IS DISTINCT FROM
                       (NEW.account_id, NEW.agent_id))
    EXECUTE FUNCTION etl.agent_ids_never_change_v1();
