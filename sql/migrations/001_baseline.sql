-- The tables of etl: the run ledger, final tables, error tables and staging.
-- Migrations change tables only, and are never edited once released: add the next number.
-- Routines live in sql/routines/, one current text each.

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

-- The input files of each run, written a batch at a time while they are read. No foreign key:
-- only etl writes these rows, for the run it has just started; a trigger on sync_runs deletes
-- a run's files with the run.
CREATE TABLE etl.sync_run_files (
    run_id     bigint  NOT NULL,
    file_index integer NOT NULL,  -- the order the run read the files in, from 0
    file       text    NOT NULL,  -- relative to the data folder, as in the errors tables
    bytes      bigint  NOT NULL,
    sha256     text    NOT NULL,
    PRIMARY KEY (run_id, file_index)
);

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

-- Pairs and memberships have no foreign keys: the apply checks each staged set against agents,
-- roles and groups at once (row-by-row key checks cost more than the rest of the apply), and etl
-- never deletes agents, roles or groups.
CREATE TABLE etl.agent_role_mapping (
    agent_id    bigint      NOT NULL,
    role_id     bigint      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('assigned', 'removed')),
    assigned_at timestamptz NOT NULL,
    removed_at  timestamptz,
    PRIMARY KEY (agent_id, role_id),
    CHECK ((status = 'removed') = (removed_at IS NOT NULL))
);
CREATE INDEX agent_role_mapping_role ON etl.agent_role_mapping (role_id);

-- run_id names the run that made the change; a trigger on sync_runs refuses to delete it.
CREATE TABLE etl.agent_role_history (
    history_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    bigint      NOT NULL,
    role_id     bigint      NOT NULL,
    from_status text CHECK (from_status IN ('assigned', 'removed')),
    to_status   text        NOT NULL CHECK (to_status IN ('assigned', 'removed')),
    changed_at  timestamptz NOT NULL,
    sync_day    text        NOT NULL,
    run_id      bigint      NOT NULL
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
    group_id  bigint      NOT NULL,
    agent_id  bigint      NOT NULL,
    synced_at timestamptz NOT NULL,
    PRIMARY KEY (group_id, agent_id)
);
CREATE INDEX group_membership_agent ON etl.group_membership (agent_id);

-- Each group's number of active members, kept by statement triggers on group_membership and
-- agents (sql/routines/active_member_counts.sql), so that the inactive walk starts from the
-- groups that have one. Bookkeeping, not part of the data contract. Each change is added as a
-- signed delta; a count below zero means one went wrong, and the walk refuses to run on it (a
-- CHECK cannot say this: PostgreSQL checks the bare delta an upsert proposes).
CREATE TABLE etl.group_active_members (
    group_id       bigint PRIMARY KEY,
    active_members bigint NOT NULL
);

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

-- A staged group's members, one row per group (COPY carries far fewer rows than one per pair);
-- the view etl.stg_group_membership (sql/routines/staging.sql) shows them as pairs.
CREATE UNLOGGED TABLE etl.stg_group_members (
    group_id  bigint   NOT NULL,
    agent_ids bigint[] NOT NULL  -- distinct, known agents, in the order of the group's array
        CHECK (array_position(agent_ids, NULL) IS NULL)
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
