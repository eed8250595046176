-- embedq's state: contexts, their items, and jobs. One schema for PostgreSQL and SQLite:
-- text ids, BIGINT milliseconds since the epoch, JSON kept as TEXT.

CREATE TABLE contexts (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE items (
    id              TEXT PRIMARY KEY,
    context_id      TEXT NOT NULL REFERENCES contexts (id),
    content         TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- What the stored vector was computed from: model and content hash.
    embedded_model  TEXT,
    embedded_hash   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Keyset pages of one context; also the per-context status roll-up.
CREATE INDEX items_by_context ON items (context_id, id);
-- Keyset pages of the items in FAILED (a small subset: a partial index).
CREATE INDEX items_failed ON items (id) WHERE status = 'FAILED';

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    scope            TEXT NOT NULL,
    model            TEXT NOT NULL,
    state            TEXT NOT NULL
        CHECK (state IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    total            BIGINT NOT NULL DEFAULT 0,
    completed        BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    skipped          BIGINT NOT NULL DEFAULT 0,
    -- Last item id planned; planning resumes after it.
    planning_cursor  TEXT,
    -- Set once every item of the scope has been planned; total is final from then on.
    planned_at       BIGINT,
    idempotency_key  TEXT UNIQUE,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);

-- Listing jobs by state, newest first (ids are UUIDv7, so they sort by time).
CREATE INDEX jobs_by_state ON jobs (state, id);
