-- etl schema: final tables, error tables, staging tables and the run ledger.
-- Applied once and recorded in etl.schema_migrations; never edit it: add the next number.

-- The run ledger: one row per (entity, day) run, written before any work starts so that a crash
-- leaves a visible 'running' row (marked 'abandoned' by the next run).
CREATE TABLE etl.sync_runs (
    run_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync_day         text        NOT NULL,
    entity           text        NOT NULL CHECK (entity IN ('agents', 'roles', 'groups')),
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'refused', 'abandoned')),
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    synced_at        timestamptz NOT NULL,
    forced           boolean     NOT NULL DEFAULT false,
    input_files      jsonb       NOT NULL DEFAULT '[]',
    rows_staged      bigint,
    rows_inserted    bigint,
    rows_updated     bigint,
    rows_unchanged   bigint,
    rows_removed     bigint,
    rows_quarantined bigint,
    details          jsonb,
    message          text
);
CREATE INDEX sync_runs_entity_day ON etl.sync_runs (entity, sync_day, status);

-- Final tables. synced_at is the sync time T of the run that last changed the row; ingested_at the
-- wall clock of that change. Rows that do not change are never rewritten.
CREATE TABLE etl.agents (
    agent_id       bigint PRIMARY KEY,
    name           text,
    email          text,
    deactivated    boolean,
    contact_active boolean,
    present        boolean     NOT NULL,
    active         boolean     NOT NULL,
    created_at     timestamptz,
    updated_at     timestamptz,
    synced_at      timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL
);

CREATE TABLE etl.roles (
    role_id     bigint PRIMARY KEY,
    name        text        NOT NULL,
    description text,
    is_default  boolean,
    agent_type  integer,
    present     boolean     NOT NULL,
    created_at  timestamptz,
    updated_at  timestamptz,
    synced_at   timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL
);

CREATE TABLE etl.agent_role_mapping (
    agent_id    bigint      NOT NULL REFERENCES etl.agents,
    role_id     bigint      NOT NULL REFERENCES etl.roles,
    status      text        NOT NULL CHECK (status IN ('assigned', 'removed')),
    assigned_at timestamptz NOT NULL,
    removed_at  timestamptz,
    PRIMARY KEY (agent_id, role_id),
    CHECK ((status = 'removed') = (removed_at IS NOT NULL))
);
CREATE INDEX agent_role_mapping_role ON etl.agent_role_mapping (role_id);

CREATE TABLE etl.agent_role_history (
    history_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    bigint      NOT NULL,
    role_id     bigint      NOT NULL,
    from_status text CHECK (from_status IN ('assigned', 'removed')),
    to_status   text        NOT NULL CHECK (to_status IN ('assigned', 'removed')),
    changed_at  timestamptz NOT NULL,
    sync_day    text        NOT NULL,
    run_id      bigint      NOT NULL REFERENCES etl.sync_runs
);
CREATE INDEX agent_role_history_pair ON etl.agent_role_history (agent_id, role_id);

CREATE TABLE etl.groups (
    group_id        bigint PRIMARY KEY,
    name            text        NOT NULL,
    description     text,
    parent_group_id bigint,
    present         boolean     NOT NULL,
    inactive        boolean     NOT NULL,
    created_at      timestamptz,
    updated_at      timestamptz,
    synced_at       timestamptz NOT NULL,
    ingested_at     timestamptz NOT NULL
);
CREATE INDEX groups_parent ON etl.groups (parent_group_id);

CREATE TABLE etl.group_membership (
    group_id  bigint      NOT NULL REFERENCES etl.groups,
    agent_id  bigint      NOT NULL REFERENCES etl.agents,
    synced_at timestamptz NOT NULL,
    PRIMARY KEY (group_id, agent_id)
);
CREATE INDEX group_membership_agent ON etl.group_membership (agent_id);

-- Quarantined records and elements. raw_text is the record's exact JSON text; raw_record is the
-- same as jsonb where PostgreSQL can hold it (not with \u0000, invalid UTF-8, or numbers beyond
-- numeric's range).
CREATE TABLE etl.agent_pipeline_errors (
    error_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        bigint      NOT NULL REFERENCES etl.sync_runs,
    sync_day      text        NOT NULL,
    record_kind   text        NOT NULL,
    error_type    text        NOT NULL,
    error_message text        NOT NULL,
    field         text,
    record_id     bigint,
    source_file   text        NOT NULL,
    record_index  integer     NOT NULL,
    raw_record    jsonb,
    raw_text      text        NOT NULL,
    ingested_at   timestamptz NOT NULL
);
CREATE INDEX agent_pipeline_errors_day ON etl.agent_pipeline_errors (sync_day);
CREATE TABLE etl.role_pipeline_errors (LIKE etl.agent_pipeline_errors INCLUDING ALL);
ALTER TABLE etl.role_pipeline_errors
    ADD FOREIGN KEY (run_id) REFERENCES etl.sync_runs;
CREATE TABLE etl.group_pipeline_errors (LIKE etl.agent_pipeline_errors INCLUDING ALL);
ALTER TABLE etl.group_pipeline_errors
    ADD FOREIGN KEY (run_id) REFERENCES etl.sync_runs;

-- Staging: what the last run of each entity staged, kept for inspection. Unlogged: it is rebuilt
-- by every run, so it needs no crash safety.
CREATE UNLOGGED TABLE etl.stg_agents (
    agent_id       bigint PRIMARY KEY,
    name           text,
    email          text,
    deactivated    boolean,
    contact_active boolean,
    created_at     timestamptz,
    updated_at     timestamptz,
    source_file    text   NOT NULL,
    record_index   integer NOT NULL
);

CREATE UNLOGGED TABLE etl.stg_roles (
    role_id      bigint PRIMARY KEY,
    name         text   NOT NULL,
    description  text,
    is_default   boolean,
    agent_type   integer,
    created_at   timestamptz,
    updated_at   timestamptz,
    source_file  text   NOT NULL,
    record_index integer NOT NULL
);

-- The day's assignment snapshot: one row per distinct (agent, role) pair, valid and known.
CREATE UNLOGGED TABLE etl.stg_agent_roles (
    agent_id     bigint  NOT NULL,
    role_id      bigint  NOT NULL,
    from_details boolean NOT NULL,
    from_role    boolean NOT NULL,
    PRIMARY KEY (agent_id, role_id)
);

CREATE UNLOGGED TABLE etl.stg_groups (
    group_id        bigint PRIMARY KEY,
    name            text   NOT NULL,
    description     text,
    parent_group_id bigint,
    created_at      timestamptz,
    updated_at      timestamptz,
    source_file     text   NOT NULL,
    record_index    integer NOT NULL
);

CREATE UNLOGGED TABLE etl.stg_group_membership (
    group_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    PRIMARY KEY (group_id, agent_id)
);

-- Ids whose every occurrence this day was quarantined: their previous state is kept.
CREATE UNLOGGED TABLE etl.stg_held_ids (
    entity      text   NOT NULL,
    record_kind text   NOT NULL,
    record_id   bigint NOT NULL,
    PRIMARY KEY (entity, record_kind, record_id)
);

CREATE UNLOGGED TABLE etl.stg_errors (
    entity        text    NOT NULL,
    record_kind   text    NOT NULL,
    error_type    text    NOT NULL,
    error_message text    NOT NULL,
    field         text,
    record_id     bigint,
    source_file   text    NOT NULL,
    record_index  integer NOT NULL,
    raw_text      text    NOT NULL
);
