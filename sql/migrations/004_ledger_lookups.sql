-- The ledger's lookups of an account's runs stay probes as its history grows: with 300 days of
-- runs an account, finding the rows the last runs staged (sizing a fleet's accounts) and the
-- runs still 'running' (when a run starts) read every run of the account.
CREATE INDEX sync_runs_succeeded ON etl.sync_runs (account_id, entity, run_id)
    WHERE status = 'succeeded';
CREATE INDEX sync_runs_running ON etl.sync_runs (account_id) WHERE status = 'running';
