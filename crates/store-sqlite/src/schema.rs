//! Versioned migrations, applied in order, each in its own transaction; the version is
//! SQLite's `user_version`. Never edit a migration that has shipped: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the archive.
    r"
CREATE TABLE sources (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    address          TEXT NOT NULL,
    organization_id  TEXT,
    cursor_ms        INTEGER,
    -- The page walk in progress; walk_started_ms is NULL when there is none.
    walk_started_ms  INTEGER,
    walk_since_ms    INTEGER,
    walk_next_page   INTEGER,
    walk_page_size   INTEGER,
    walk_newest_ms   INTEGER,
    walk_oldest_ms   INTEGER,
    walk_gap_from_ms INTEGER,
    -- Kept with every page so that status never counts millions of rows.
    event_count      INTEGER NOT NULL DEFAULT 0,
    oldest_ms        INTEGER,
    newest_ms        INTEGER,
    reject_count     INTEGER NOT NULL DEFAULT 0,
    created_ms       INTEGER NOT NULL
);

CREATE TABLE events (
    -- The ingest sequence: consumers keep cursors over it. AUTOINCREMENT so that a
    -- number is never reused.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL,
    source_id        INTEGER NOT NULL,
    organization_id  TEXT,
    ts_ms            INTEGER NOT NULL,
    auth_type        TEXT,
    accessor_id      TEXT,
    auth_description TEXT,
    impersonator_id  TEXT,
    request_id       TEXT,
    resource_id      TEXT,
    resource_type    TEXT,
    resource_action  TEXT,
    raw              TEXT NOT NULL,
    ingested_ms      INTEGER NOT NULL
);
-- Every index leads with time or with a column of few values, so that the inserts of
-- one page land on a few B-tree pages. An index led by a random key (the event's UUID,
-- a resource id) would dirty one page per event and cut ingest several times over.
-- So ids and resource ids are indexed within their hour, and found by probing hours.
-- An event's id is unique within its hour: an event's timestamp never changes.
CREATE UNIQUE INDEX events_by_hour_id   ON events (ts_ms / 3600000, id);
CREATE INDEX events_by_time             ON events (ts_ms);
CREATE INDEX events_by_actor            ON events (accessor_id, ts_ms);
CREATE INDEX events_by_kind             ON events (resource_type, resource_action, ts_ms);
CREATE INDEX events_by_hour_resource    ON events (ts_ms / 3600000, resource_id);

-- Every (accessor, description) pair seen: actor globs are resolved here, not by
-- scanning events.
CREATE TABLE actors (
    accessor_id   TEXT NOT NULL,
    description   TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (accessor_id, description)
) WITHOUT ROWID;

-- Hourly counts, written in the same transaction as the events they count, so that
-- a month's summary reads hundreds of rows, not millions.
CREATE TABLE hourly_kinds (
    hour            INTEGER NOT NULL,
    source_id       INTEGER NOT NULL,
    resource_type   TEXT NOT NULL,
    resource_action TEXT NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (hour, source_id, resource_type, resource_action)
) WITHOUT ROWID;
CREATE TABLE hourly_actors (
    hour        INTEGER NOT NULL,
    source_id   INTEGER NOT NULL,
    accessor_id TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (hour, source_id, accessor_id)
) WITHOUT ROWID;

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    result      TEXT,
    error       TEXT,
    pages       INTEGER NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    retries     INTEGER NOT NULL DEFAULT 0,
    new_events  INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    rejects     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_source ON runs (source_id, id);

CREATE TABLE gaps (
    id          INTEGER PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    from_ms     INTEGER NOT NULL,
    to_ms       INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL
);

CREATE TABLE rejects (
    id            INTEGER PRIMARY KEY,
    source_id     INTEGER NOT NULL,
    run_id        INTEGER,
    reason        TEXT NOT NULL,
    raw           TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    times_seen    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (source_id, raw)
);
",
    // 2: alerts — the engine's cursor and state, the outbox, deliveries.
    r"
-- Impersonated events are few: a partial index finds their impersonators cheaply.
CREATE INDEX events_by_impersonator ON events (impersonator_id) WHERE impersonator_id IS NOT NULL;

CREATE TABLE alert_consumer (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    seq        INTEGER NOT NULL,
    state      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    rule            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    group_key       TEXT,
    title           TEXT NOT NULL,
    text            TEXT NOT NULL,
    source          TEXT NOT NULL,
    event_seq       INTEGER NOT NULL,
    event_id        TEXT NOT NULL,
    event_ms        INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    window_start_ms INTEGER,
    window_end_ms   INTEGER,
    link            TEXT,
    event           TEXT NOT NULL,
    raised_ms       INTEGER NOT NULL
);
CREATE INDEX alerts_by_time ON alerts (raised_ms);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL,
    destination     TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER,
    last_error      TEXT,
    delivered_ms    INTEGER,
    UNIQUE (alert_id, destination)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
",
    // 3: when a walk last re-read a whole reconcile window (late events).
    r"
ALTER TABLE sources ADD COLUMN reconciled_ms INTEGER;
",
    // 4: where alerting starts per source, fixed when its first backfill completes;
    // and destinations a receiver said are set up wrong.
    //
    // An archive from before this keeps what the engine did then: a source whose
    // first walk completed starts at the engine's cursor when the engine has run
    // (nothing it has not evaluated is skipped), else at the newest event (history
    // is not alerted on). A source still in its first backfill gets its start point
    // when that completes.
    r"
ALTER TABLE sources ADD COLUMN alert_start_seq INTEGER;
UPDATE sources SET alert_start_seq = coalesce(
        (SELECT seq FROM alert_consumer WHERE id = 1),
        (SELECT coalesce(max(seq), 0) FROM events))
    WHERE cursor_ms IS NOT NULL
       OR EXISTS (SELECT 1 FROM runs WHERE runs.source_id = sources.id AND runs.result = 'ok');

CREATE TABLE destinations (
    name              TEXT PRIMARY KEY,
    misconfigured     TEXT,
    misconfigured_ms  INTEGER
);
CREATE INDEX deliveries_by_destination ON deliveries (destination, state, next_attempt_ms);
",
    // 5: named consumers. Every reader of the ingest sequence (the alert engine, a
    // later forwarder) keeps its cursor and opaque state in one row under its name, so
    // a new consumer needs no schema change. The alert engine's single-row table moves
    // here under "alerts", cursor and state unchanged.
    r"
CREATE TABLE consumers (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    state      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
INSERT INTO consumers (name, position, state, updated_ms)
    SELECT 'alerts', seq, state, updated_ms FROM alert_consumer WHERE id = 1;
DROP TABLE alert_consumer;
",
    // 6: leases (which instance syncs which organization, with a fencing epoch) and
    // the instances' heartbeats, for several processes sharing one archive.
    r"
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT,
    epoch      INTEGER NOT NULL,
    since_ms   INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE instances (
    name       TEXT PRIMARY KEY,
    expires_ms INTEGER NOT NULL
);
",
    // 7: dead letters — events a sink's target refused as invalid, kept per consumer
    // and seq until they are sent again — and the seqs alone in an index, for counting
    // how far a consumer is behind. A count over a range of seq (the rowid) on the table
    // steps through whole events; this index is a few bytes an event, and only ever
    // appended to at its end, so ingest hardly feels it.
    r"
CREATE TABLE dead_letters (
    consumer TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE INDEX events_by_seq ON events (seq);
",
    // 8: the ledger — a Merkle tree over the ingest order (a leaf per event, the roots
    // of every completed 256-leaf, 65,536-leaf… subtree), its head, the checkpoints made
    // of it and what verifications found. Leaves are appended at the end of their
    // B-trees only, so keeping them costs ingest nothing of note.
    r"
CREATE TABLE tree_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    origin     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    frontier   BLOB NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE tree_leaves (
    idx  INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE tree_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    id        INTEGER PRIMARY KEY,
    size      INTEGER NOT NULL,
    root      BLOB NOT NULL,
    note      TEXT NOT NULL,
    signed_by TEXT,
    made_ms   INTEGER NOT NULL
);
CREATE TABLE verifications (
    id              INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    frontier        BLOB NOT NULL,
    finding         TEXT,
    checkpoint_size INTEGER
);
",
    // 9: events' bytes compressed with zstd and a dictionary trained on the archive's
    // own events (see compress.rs): `dict` names the dictionary of a row whose `raw`
    // is a compressed frame; NULL keeps `raw` as the JSON text.
    r"
CREATE TABLE dictionaries (
    id         INTEGER PRIMARY KEY,
    trained_ms INTEGER NOT NULL,
    trained_at INTEGER NOT NULL,
    samples    INTEGER NOT NULL,
    bytes      BLOB NOT NULL
);
ALTER TABLE events ADD COLUMN dict INTEGER;
",
    // 10: days removed from the local archive once cold storage holds them
    // (`[retention] keep_local`): exactly which seqs, and where their copy is, so that
    // `verify` tells a pruned event from a deleted one and `archive pull` can put the
    // day back.
    r"
CREATE TABLE pruned_days (
    source_id   INTEGER NOT NULL,
    day         TEXT NOT NULL,
    events      INTEGER NOT NULL,
    -- Ascending seqs, LEB128 varints of their differences.
    seqs        BLOB NOT NULL,
    location    TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    pruned_ms   INTEGER NOT NULL,
    restored_ms INTEGER,
    PRIMARY KEY (source_id, day)
) WITHOUT ROWID;
",
    // 11: a compact layout of events, the same rows and seqs. The strings an event
    // shares with many others (organization, auth type, accessor, its description,
    // impersonator, resource type and action) are kept once in `names` and referred to
    // by key: the columns keep their names but hold `names.id`, and their indexes hold
    // small integers. An id that is a UUID in canonical form (lowercase, hyphenated)
    // is kept as its 16 bytes (see names.rs), any other id as its text; the request id
    // likewise. Resource ids stay text: they are mostly new with each event, and
    // interning them would insert into `names`' value index at a random place per event.
    //
    // The copy runs in this migration's transaction: a crash leaves the old layout
    // whole. It needs `tfaudit_pack_id`, registered on every writing connection.
    r"
CREATE TABLE names (
    id    INTEGER PRIMARY KEY,
    value TEXT NOT NULL UNIQUE
);
-- One scan of events, seven names from each row.
INSERT OR IGNORE INTO names (value)
    SELECT v FROM (
        SELECT CASE k.n WHEN 0 THEN e.organization_id WHEN 1 THEN e.auth_type WHEN 2 THEN e.accessor_id
                        WHEN 3 THEN e.auth_description WHEN 4 THEN e.impersonator_id
                        WHEN 5 THEN e.resource_type ELSE e.resource_action END AS v
        FROM events e CROSS JOIN (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3
                                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6) k)
    WHERE v IS NOT NULL;

CREATE TABLE events_compact (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL,
    source_id        INTEGER NOT NULL,
    ts_ms            INTEGER NOT NULL,
    organization_id  INTEGER,
    auth_type        INTEGER,
    accessor_id      INTEGER,
    auth_description INTEGER,
    impersonator_id  INTEGER,
    resource_type    INTEGER,
    resource_action  INTEGER,
    request_id       BLOB,
    resource_id      TEXT,
    ingested_ms      INTEGER NOT NULL,
    dict             INTEGER,
    raw              TEXT NOT NULL
);
INSERT INTO events_compact (seq, id, source_id, ts_ms, organization_id, auth_type, accessor_id, auth_description,
        impersonator_id, resource_type, resource_action, request_id, resource_id, ingested_ms, dict, raw)
    SELECT seq, tfaudit_pack_id(id), source_id, ts_ms,
           (SELECT n.id FROM names n WHERE n.value = e.organization_id),
           (SELECT n.id FROM names n WHERE n.value = e.auth_type),
           (SELECT n.id FROM names n WHERE n.value = e.accessor_id),
           (SELECT n.id FROM names n WHERE n.value = e.auth_description),
           (SELECT n.id FROM names n WHERE n.value = e.impersonator_id),
           (SELECT n.id FROM names n WHERE n.value = e.resource_type),
           (SELECT n.id FROM names n WHERE n.value = e.resource_action),
           tfaudit_pack_id(e.request_id), resource_id, ingested_ms, dict, raw
    FROM events e ORDER BY seq;
-- AUTOINCREMENT never reuses a seq, not even one whose event is gone (were they all).
DELETE FROM sqlite_sequence WHERE name = 'events_compact';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_compact', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_compact RENAME TO events;

-- The indexes of before, on the keys. Still none led by a random key.
CREATE UNIQUE INDEX events_by_hour_id   ON events (ts_ms / 3600000, id);
CREATE INDEX events_by_time             ON events (ts_ms);
CREATE INDEX events_by_actor            ON events (accessor_id, ts_ms);
CREATE INDEX events_by_kind             ON events (resource_type, resource_action, ts_ms);
CREATE INDEX events_by_hour_resource    ON events (ts_ms / 3600000, resource_id);
CREATE INDEX events_by_impersonator     ON events (impersonator_id) WHERE impersonator_id IS NOT NULL;
CREATE INDEX events_by_seq              ON events (seq);
",
    // 12: names for ids, with history (the catalogue), and when each organization's
    // listings were last fetched.
    r"
CREATE TABLE catalogue (
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    email         TEXT,
    source_id     INTEGER NOT NULL REFERENCES sources (id),
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    gone_ms       INTEGER,
    listed        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (id, name)
) WITHOUT ROWID;
CREATE INDEX catalogue_by_name ON catalogue (name COLLATE NOCASE);
CREATE INDEX catalogue_by_kind ON catalogue (source_id, kind);
CREATE TABLE catalogue_listings (
    source_id INTEGER PRIMARY KEY REFERENCES sources (id),
    listed_ms INTEGER NOT NULL
);
",
    // 13: scheduled reports: when each was first scheduled (no period that ended
    // before is made), each report made once per period with its file, and its
    // deliveries (a directory, email destinations) as the alert outbox keeps them.
    r"
CREATE TABLE report_schedules (
    name     TEXT NOT NULL,
    cadence  TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (name, cadence)
);
CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    period       TEXT NOT NULL,
    since_ms     INTEGER NOT NULL,
    until_ms     INTEGER NOT NULL,
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content      BLOB NOT NULL,
    summary      TEXT NOT NULL,
    made_ms      INTEGER NOT NULL,
    UNIQUE (name, period)
);
CREATE TABLE report_deliveries (
    id              INTEGER PRIMARY KEY,
    report_id       INTEGER NOT NULL REFERENCES reports (id),
    target          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER,
    last_error      TEXT,
    delivered_ms    INTEGER,
    UNIQUE (report_id, target)
);
CREATE INDEX report_deliveries_due ON report_deliveries (state, next_attempt_ms);
",
    // 14: events about a run that destroys (`resource.meta.run.is_destroy` true) marked
    // as they are stored, with a partial index of them, so that the compliance report
    // counts and lists destroy runs without reading every run. The events already
    // archived are read once here: it needs `tfaudit_raw` and `tfaudit_destroy_run`,
    // registered on every writing connection. (`tfaudit_raw` takes the row's id,
    // request id and time since migration 18, its resource id and description since
    // migration 22, and its accessor id since migration 23, made them part of how a
    // frame is read; the archives this runs on have no such frames, and its answer is
    // the same.)
    r"
ALTER TABLE events ADD COLUMN destroy_run INTEGER NOT NULL DEFAULT 0;
UPDATE events SET destroy_run = 1
    WHERE tfaudit_destroy_run(tfaudit_raw(raw, dict, id, request_id, ts_ms, resource_id, auth_description, accessor_id));
CREATE INDEX events_by_destroy_run ON events (ts_ms) WHERE destroy_run = 1;
",
    // 15: the newest seq when `events`' indexes were last rebuilt, and whether some are
    // left to build at the end of a first backfill (see upkeep.rs): a backfill stores
    // the newest events first, which leaves indexes led by time half empty; built or
    // rebuilt once it is done, they are packed full.
    r"
CREATE TABLE IF NOT EXISTS upkeep (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    reindexed_seq  INTEGER NOT NULL DEFAULT 0,
    deferred       INTEGER NOT NULL DEFAULT 0
);
",
    // 16: the tree's leaves kept 480 to a row (leaves `block * 480` on): their seqs as
    // LEB128 varints of the differences, their hashes end to end. A row a leaf cost 45
    // bytes an event, 13 of them the row's own; this costs 33, and a page's leaves are a
    // row or two written, not a thousand. It needs `tfaudit_encode_seqs`, registered
    // on every writing connection.
    //
    // And a first backfill now also leaves the kind's and the destroy runs' indexes out
    // until its walk ends (upkeep.rs), which a tfaudit from before would not build,
    // though its queries name them: this version also keeps it off such an archive.
    r"
CREATE TABLE tree_leaf_blocks (
    block  INTEGER PRIMARY KEY,
    seqs   BLOB NOT NULL,
    hashes BLOB NOT NULL
);
INSERT INTO tree_leaf_blocks (block, seqs, hashes)
    SELECT idx / 480, tfaudit_encode_seqs(group_concat(seq, ',' ORDER BY idx)), unhex(group_concat(hex(hash), '' ORDER BY idx))
    FROM tree_leaves GROUP BY idx / 480;
DROP TABLE tree_leaves;
",
    // 17: resource ids kept as keys of `names`, as the other shared strings are. An
    // organization's events name few resources many times (200,000 of the simulator's
    // events name 3,887): as text, the id cost the row about 20 bytes and its index by
    // hour and resource as many again; as a key, 2 or 3 each. The column keeps its name
    // and moves to the end of the row.
    r"
INSERT OR IGNORE INTO names (value) SELECT DISTINCT resource_id FROM events WHERE resource_id IS NOT NULL;
DROP INDEX IF EXISTS events_by_hour_resource;
ALTER TABLE events ADD COLUMN resource_key INTEGER;
UPDATE events SET resource_key = (SELECT n.id FROM names n WHERE n.value = events.resource_id) WHERE resource_id IS NOT NULL;
ALTER TABLE events DROP COLUMN resource_id;
ALTER TABLE events RENAME COLUMN resource_key TO resource_id;
CREATE INDEX events_by_hour_resource ON events (ts_ms / 3600000, resource_id);
",
    // 18: frames without the values their row keeps (compress.rs, `Known`): an event's
    // id, its request's id and its time, marked in the text and put back on reading,
    // which halves a frame. Frames from before read as they did; a dictionary trained
    // on text from before is replaced by one trained on marked text once, and this
    // version keeps an older tfaudit, which would show the marks, off the archive.
    r"
ALTER TABLE dictionaries ADD COLUMN marked INTEGER NOT NULL DEFAULT 0;
",
    // 19: the tree's leaves with only an 8-byte prefix of the hash of each event still
    // in the archive (ledger.rs, `PREFIXED`): 10 bytes a leaf instead of 34. The whole
    // hash is computed again from the event; those of events retention removed stay
    // whole. Blocks from before keep their form (`WHOLE`) and read as they did;
    // `tfaudit compact` rewrites them. This version keeps an older tfaudit, which would
    // read the new form as damaged, off the archive.
    r"
ALTER TABLE tree_leaf_blocks ADD COLUMN form INTEGER NOT NULL DEFAULT 0;
",
    // 20: no index of the seqs alone (migration 7): a consumer's lag is counted on the
    // tree's leaves instead (dead_letters.rs), and the index cost 13 bytes an event and
    // a B-tree written with each. And when each event was archived kept once for each
    // run of seqs archived in the same millisecond (`ingest_times`, rollup.rs) rather
    // than in every row: a page's events share it, and the column cost 7 bytes an
    // event. Dropping the column copies the table once. An older tfaudit, which names
    // both, is kept off.
    r"
DROP INDEX IF EXISTS events_by_seq;
CREATE TABLE ingest_times (
    first_seq INTEGER PRIMARY KEY,
    ms        INTEGER NOT NULL
);
INSERT INTO ingest_times (first_seq, ms)
    SELECT seq, ingested_ms FROM (SELECT seq, ingested_ms, lag(ingested_ms) OVER (ORDER BY seq) AS before FROM events)
    WHERE before IS NOT ingested_ms;
ALTER TABLE events DROP COLUMN ingested_ms;
-- What counting a consumer's lag needs of each day retention removed and that is
-- not back, without reading its seqs: the day's first and last seq and how many.
CREATE TABLE pruned_spans (
    source_id INTEGER NOT NULL,
    day       TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    events    INTEGER NOT NULL,
    PRIMARY KEY (source_id, day)
) WITHOUT ROWID;
INSERT INTO pruned_spans (source_id, day, first_seq, last_seq, events)
    SELECT source_id, day, tfaudit_seq_at(seqs, 0), tfaudit_seq_at(seqs, -1), events
    FROM pruned_days WHERE restored_ms IS NULL;
",
    // 21: posting lists (postings.rs) in place of the indexes on actor, kind and hour
    // and resource: for each key and bucket of time (an hour; a week for resources) the
    // seqs of its events, a byte or two each, where each index kept an entry of about
    // 17 bytes for every event. `kinds` holds every kind's key, so that a filter on a
    // type or an action finds its keys without reading the lists. Filled from the
    // events by migration 24 ([`after`]), which this version takes next.
    r"
CREATE TABLE postings (
    list   INTEGER NOT NULL,
    key    INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    seqs   BLOB NOT NULL,
    PRIMARY KEY (list, key, bucket)
) WITHOUT ROWID;
CREATE TABLE kinds (key INTEGER PRIMARY KEY);
DROP INDEX IF EXISTS events_by_actor;
DROP INDEX IF EXISTS events_by_kind;
DROP INDEX IF EXISTS events_by_hour_resource;
",
    // 22: frames without their resource's id and their actor's description either
    // (compress.rs, `Known`), which the row keeps as keys of `names`: a dictionary
    // trained with these marks says so with `marked = 2`. Frames from before read as
    // they did; this version keeps an older tfaudit, which would read the new marks as
    // text, off the archive.
    r"
UPDATE dictionaries SET marked = marked WHERE 0;
",
    // 23: frames without their actor's id (compress.rs, `Known`), which the row keeps as
    // a key of `names`, and without every later span that is a whole JSON string of a
    // value kept as a name (a run's id again in its `meta`): a dictionary trained with these
    // says so with `marked = 3`. Frames from before read as they did; this version keeps
    // an older tfaudit, which would read the new marks as text, off the archive.
    //
    // And the index by hour and id holds the id's last 4 bytes, not unique: an insert
    // probes it and compares the whole id (rollup.rs, `EVENT_PROBE`). Its entry was 29
    // bytes an event, and is 17. An older tfaudit, whose inserts rest on the unique
    // index, is kept off.
    //
    // (`IF EXISTS` since migration 24 dropped the index: tests that set an archive's
    // version back run this again on a layout that no longer has it.)
    r"
DROP INDEX IF EXISTS events_by_hour_id;
CREATE INDEX events_by_hour_id ON events (ts_ms / 3600000, substr(id, -4));
",
    // 24: one index for the time and for duplicates: `events_by_time` holds the time and
    // the id's last 4 bytes, and an insert probes the event's second (rollup.rs,
    // `EVENT_PROBE`), where the index by hour and id cost 17 bytes an event and an insert
    // of its own. A lookup by id, which knows no time, reads the hours `id_prints` says
    // may hold it (postings.rs, `print`): 2 bytes an event, kept with the posting lists
    // and, as they are, built at a first backfill's end. An older tfaudit, whose
    // inserts probe the index by hour, is kept off.
    r"
DROP INDEX IF EXISTS events_by_hour_id;
DROP INDEX IF EXISTS events_by_time;
CREATE INDEX events_by_time ON events (ts_ms, substr(id, -4));
CREATE TABLE IF NOT EXISTS id_prints (
    hour   INTEGER NOT NULL,
    part   INTEGER NOT NULL,
    prints BLOB NOT NULL,
    PRIMARY KEY (hour, part)
) WITHOUT ROWID;
",
];

/// What a migration does in Rust after its SQL, in its transaction: `version` is the
/// schema version it migrates to.
pub fn after(version: usize, tx: &rusqlite::Connection) -> rusqlite::Result<()> {
    match version {
        // The lists of migration 21 are filled with the prints of 24, which every
        // archive that takes 21 takes after it: by 24's code, which knows both tables.
        24 => crate::postings::build_unless_deferred(tx),
        _ => Ok(()),
    }
}
