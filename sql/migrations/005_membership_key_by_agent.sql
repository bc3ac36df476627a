-- group_membership keyed by account, agent, then group, and without its index by agent: the key
-- finds an agent's groups (what the active-member counts read when agents flip), and an added
-- membership is written to one index instead of two. What reads memberships by group (the
-- membership diff, the views) reads the account's rows whatever their order.
ALTER TABLE etl.group_membership
    DROP CONSTRAINT group_membership_pkey,
    ADD PRIMARY KEY (account_id, agent_id, group_id);
DROP INDEX etl.group_membership_agent;
