//! Versioned migrations, applied in order, each in its own transaction and recorded in
//! `schema_migrations`. Never edit a migration that has shipped: add a new one.
//!
//! Times are kept as milliseconds since the epoch (`bigint`), as in the SQLite archive,
//! so that both backends round the same way and `migrate` copies values unchanged.
//! Text columns that filters compare are `COLLATE "C"`: comparisons and `LIKE` are then
//! byte-wise whatever the database's locale, and a `LIKE 'prefix%'` can use a B-tree.

pub const MIGRATIONS: &[&str] = &[
    // 1: the archive, the named consumers (the alert engine is `alerts`), the outbox.
    r#"
CREATE TABLE sources (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text COLLATE "C" NOT NULL UNIQUE,
    address          text NOT NULL,
    organization_id  text COLLATE "C",
    cursor_ms        bigint,
    reconciled_ms    bigint,
    -- The page walk in progress; walk_started_ms is NULL when there is none.
    walk_started_ms  bigint,
    walk_since_ms    bigint,
    walk_next_page   bigint,
    walk_page_size   bigint,
    walk_newest_ms   bigint,
    walk_oldest_ms   bigint,
    walk_gap_from_ms bigint,
    -- Kept with every page so that status never counts millions of rows.
    event_count      bigint NOT NULL DEFAULT 0,
    oldest_ms        bigint,
    newest_ms        bigint,
    reject_count     bigint NOT NULL DEFAULT 0,
    -- Where alerting starts: the newest seq when the first walk completed.
    alert_start_seq  bigint,
    created_ms       bigint NOT NULL
);

CREATE TABLE events (
    -- The ingest sequence that consumers keep cursors over. Numbers are handed out
    -- at insert time; every transaction that inserts events holds one advisory lock
    -- until it commits, so they also become visible in order (see lib.rs).
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text COLLATE "C" NOT NULL UNIQUE,
    source_id        bigint NOT NULL,
    organization_id  text COLLATE "C",
    ts_ms            bigint NOT NULL,
    auth_type        text,
    accessor_id      text COLLATE "C",
    auth_description text,
    impersonator_id  text COLLATE "C",
    request_id       text,
    resource_id      text COLLATE "C",
    resource_type    text COLLATE "C",
    resource_action  text COLLATE "C",
    -- The event's JSON exactly as received: bytes, so that no encoding setting of
    -- client or server can touch it.
    raw              bytea NOT NULL,
    ingested_ms      bigint NOT NULL
);
CREATE INDEX events_by_time     ON events (ts_ms, seq);
CREATE INDEX events_by_actor    ON events (accessor_id, ts_ms);
CREATE INDEX events_by_kind     ON events (resource_type, resource_action, ts_ms);
CREATE INDEX events_by_resource ON events (resource_id, ts_ms);
-- No index on organization_id: the organization filter is `source_id = ANY(…) OR
-- organization_id = ANY(…)`, which no single index answers (it is checked on rows
-- found by time), and every index costs every insert.
-- Impersonated events are few: a partial index finds their impersonators cheaply.
CREATE INDEX events_by_impersonator ON events (impersonator_id) WHERE impersonator_id IS NOT NULL;

-- Every (accessor, description) pair seen: actor patterns are resolved here (in Rust,
-- by Unicode simple case folding), not by scanning events.
CREATE TABLE actors (
    accessor_id   text COLLATE "C" NOT NULL,
    description   text NOT NULL,
    first_seen_ms bigint NOT NULL,
    last_seen_ms  bigint NOT NULL,
    PRIMARY KEY (accessor_id, description)
);

-- Every organization id events carried: organization patterns are resolved here.
CREATE TABLE organizations (
    organization_id text COLLATE "C" PRIMARY KEY
);

-- Hourly counts, written in the same transaction as the events they count, so that
-- a month's summary reads hundreds of rows, not millions.
CREATE TABLE hourly_kinds (
    hour            bigint NOT NULL,
    source_id       bigint NOT NULL,
    resource_type   text COLLATE "C" NOT NULL,
    resource_action text COLLATE "C" NOT NULL,
    n               bigint NOT NULL,
    PRIMARY KEY (hour, source_id, resource_type, resource_action)
);
CREATE TABLE hourly_actors (
    hour        bigint NOT NULL,
    source_id   bigint NOT NULL,
    accessor_id text COLLATE "C" NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (hour, source_id, accessor_id)
);
-- The same counts by day, and all events by hour: a 30-day summary reads about 30
-- rows per kind and actor and 720 totals, and the hourly tables only for the partial
-- days at either end (a month of hourly kinds is tens of thousands of rows).
CREATE TABLE daily_kinds (
    day             bigint NOT NULL,
    source_id       bigint NOT NULL,
    resource_type   text COLLATE "C" NOT NULL,
    resource_action text COLLATE "C" NOT NULL,
    n               bigint NOT NULL,
    PRIMARY KEY (day, source_id, resource_type, resource_action)
);
CREATE TABLE daily_actors (
    day         bigint NOT NULL,
    source_id   bigint NOT NULL,
    accessor_id text COLLATE "C" NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (day, source_id, accessor_id)
);
CREATE TABLE hourly_totals (
    hour      bigint NOT NULL,
    source_id bigint NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (hour, source_id)
);

CREATE TABLE runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   bigint NOT NULL,
    started_ms  bigint NOT NULL,
    finished_ms bigint,
    result      text,
    error       text,
    pages       bigint NOT NULL DEFAULT 0,
    requests    bigint NOT NULL DEFAULT 0,
    retries     bigint NOT NULL DEFAULT 0,
    new_events  bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    rejects     bigint NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_source ON runs (source_id, id);
CREATE INDEX runs_ok_by_source ON runs (source_id, id) WHERE result = 'ok';

CREATE TABLE gaps (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   bigint NOT NULL,
    from_ms     bigint NOT NULL,
    to_ms       bigint NOT NULL,
    detected_ms bigint NOT NULL
);
CREATE INDEX gaps_by_source ON gaps (source_id, from_ms);

-- Kept once per source by their text; the text can be large, so it is unique by its
-- SHA-256 (a B-tree entry holds at most about 2,700 bytes).
CREATE TABLE rejects (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id     bigint NOT NULL,
    run_id        bigint,
    reason        text NOT NULL,
    -- bytea: an element's text may hold a NUL, which text cannot.
    raw           bytea NOT NULL,
    raw_sha256    bytea NOT NULL,
    first_seen_ms bigint NOT NULL,
    last_seen_ms  bigint NOT NULL,
    times_seen    bigint NOT NULL DEFAULT 1,
    UNIQUE (source_id, raw_sha256)
);

-- Durable named cursors over seq, each with its own state: the alert engine is
-- `alerts`; a forwarding sink would be another row.
CREATE TABLE consumers (
    name       text COLLATE "C" PRIMARY KEY,
    position   bigint NOT NULL,
    state      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key             text COLLATE "C" NOT NULL UNIQUE,
    rule            text COLLATE "C" NOT NULL,
    severity        text NOT NULL,
    group_key       text,
    title           text NOT NULL,
    text            text NOT NULL,
    source          text NOT NULL,
    event_seq       bigint NOT NULL,
    event_id        text NOT NULL,
    event_ms        bigint NOT NULL,
    count           bigint NOT NULL,
    window_start_ms bigint,
    window_end_ms   bigint,
    link            text,
    event           text NOT NULL,
    raised_ms       bigint NOT NULL
);
CREATE INDEX alerts_by_time ON alerts (raised_ms);

CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint NOT NULL,
    destination     text COLLATE "C" NOT NULL,
    state           text NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL,
    lease_until_ms  bigint,
    last_error      text,
    delivered_ms    bigint,
    UNIQUE (alert_id, destination)
);
CREATE INDEX deliveries_by_destination ON deliveries (destination, state, next_attempt_ms);
CREATE INDEX deliveries_by_state ON deliveries (state);

CREATE TABLE destinations (
    name             text COLLATE "C" PRIMARY KEY,
    misconfigured    text,
    misconfigured_ms bigint
);
"#,
    // 2: leases (which instance syncs which organization, with a fencing epoch) and
    // the instances' heartbeats. Times by the database's clock.
    r#"
CREATE TABLE leases (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text COLLATE "C",
    epoch      bigint NOT NULL,
    since_ms   bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE TABLE instances (
    name       text COLLATE "C" PRIMARY KEY,
    expires_ms bigint NOT NULL
);
"#,
    // 3: dead letters: events a sink's target refused as invalid, kept per consumer and
    // seq until they are sent again.
    r#"
CREATE TABLE dead_letters (
    consumer text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    event_id text NOT NULL,
    reason   text NOT NULL,
    at_ms    bigint NOT NULL,
    attempts bigint NOT NULL,
    PRIMARY KEY (consumer, seq)
);
"#,
    // 4: the ledger: a Merkle tree over the ingest order, its head, checkpoints and
    // verifications (see the SQLite schema's migration 8).
    r#"
CREATE TABLE tree_head (
    id         integer PRIMARY KEY CHECK (id = 1),
    origin     text NOT NULL,
    size       bigint NOT NULL,
    last_seq   bigint NOT NULL,
    frontier   bytea NOT NULL,
    updated_ms bigint NOT NULL
);
CREATE TABLE tree_leaves (
    idx  bigint PRIMARY KEY,
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
CREATE TABLE tree_nodes (
    level integer NOT NULL,
    idx   bigint NOT NULL,
    hash  bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE checkpoints (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size      bigint NOT NULL,
    root      bytea NOT NULL,
    note      text NOT NULL,
    signed_by text,
    made_ms   bigint NOT NULL
);
CREATE TABLE verifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms           bigint NOT NULL,
    size            bigint NOT NULL,
    last_seq        bigint NOT NULL,
    frontier        bytea NOT NULL,
    finding         text,
    checkpoint_size bigint
);
"#,
    // 5: days removed from the local archive once cold storage holds them (see the
    // SQLite schema's migration 10).
    r#"
CREATE TABLE pruned_days (
    source_id   bigint NOT NULL,
    day         text COLLATE "C" NOT NULL,
    events      bigint NOT NULL,
    -- Ascending seqs, LEB128 varints of their differences.
    seqs        bytea NOT NULL,
    location    text NOT NULL,
    path        text NOT NULL,
    sha256      text NOT NULL,
    pruned_ms   bigint NOT NULL,
    restored_ms bigint,
    PRIMARY KEY (source_id, day)
);
"#,
    // 6: names for ids, with history (see the SQLite schema's migration 12).
    r#"
CREATE TABLE catalogue (
    id            text NOT NULL,
    name          text NOT NULL,
    kind          text NOT NULL,
    email         text,
    source_id     bigint NOT NULL,
    first_seen_ms bigint NOT NULL,
    last_seen_ms  bigint NOT NULL,
    gone_ms       bigint,
    listed        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (id, name)
);
CREATE INDEX catalogue_by_name ON catalogue (lower(name));
CREATE INDEX catalogue_by_kind ON catalogue (source_id, kind);
CREATE TABLE catalogue_listings (
    source_id bigint PRIMARY KEY,
    listed_ms bigint NOT NULL
);
"#,
    // 7: scheduled reports (see the SQLite schema's migration 13).
    r#"
CREATE TABLE report_schedules (
    name     text NOT NULL,
    cadence  text NOT NULL,
    since_ms bigint NOT NULL,
    PRIMARY KEY (name, cadence)
);
CREATE TABLE reports (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    period       text NOT NULL,
    since_ms     bigint NOT NULL,
    until_ms     bigint NOT NULL,
    file_name    text NOT NULL,
    content_type text NOT NULL,
    content      bytea NOT NULL,
    summary      text NOT NULL,
    made_ms      bigint NOT NULL,
    UNIQUE (name, period)
);
CREATE TABLE report_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report_id       bigint NOT NULL REFERENCES reports (id),
    target          text NOT NULL,
    state           text NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL,
    lease_until_ms  bigint,
    last_error      text,
    delivered_ms    bigint,
    UNIQUE (report_id, target)
);
CREATE INDEX report_deliveries_due ON report_deliveries (state, next_attempt_ms);
"#,
    // 8: events about a run that destroys marked as they are stored, with a partial
    // index of them (see the SQLite schema's migration 14). The events already archived
    // are read once here, those whose text holds the key at all: where the key is
    // written as `"is_destroy"`, as the Rust check reads it. JSON the server cannot
    // read (only text Rust reads differently, which ingest never let in) says no rather
    // than stopping the migration.
    r#"
ALTER TABLE events ADD COLUMN destroy_run boolean NOT NULL DEFAULT false;
CREATE FUNCTION pg_temp.tfaudit_destroy_run(raw bytea) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v json;
BEGIN
    -- `json`, not `jsonb`: it keeps every key, and its operators take the last of
    -- repeated ones, as the Rust check does.
    v := convert_from(raw, 'UTF8')::json #> '{resource,meta,run,is_destroy}';
    RETURN v IS NOT NULL AND json_typeof(v) = 'boolean' AND v::text = 'true';
EXCEPTION WHEN others THEN
    RETURN false;
END $$;
UPDATE events SET destroy_run = true
    WHERE position('"is_destroy"'::bytea IN raw) > 0 AND pg_temp.tfaudit_destroy_run(raw);
CREATE INDEX events_by_destroy_run ON events (ts_ms, seq) WHERE destroy_run;
"#,
];
