-- agent_role_mapping without its index by role, and agent_role_history keyed by account, pair,
-- then history id, without its index by pair: each table keeps one index, which an added pair or
-- history row is written to. etl never read pairs by role; a pair's history is still found by
-- its key, and a role's pairs by reading the account's. history_id stays unique as the identity
-- column that numbers the rows (GENERATED ALWAYS); no constraint holds it alone any more.
DROP INDEX etl.agent_role_mapping_role;
ALTER TABLE etl.agent_role_history
    DROP CONSTRAINT agent_role_history_pkey,
    ADD PRIMARY KEY (account_id, agent_id, role_id, history_id);
DROP INDEX etl.agent_role_history_pair;
