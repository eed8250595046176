-- Each item's final outcome within a job, recorded once: the status writer counts into the
-- job's counters only the rows this insert really adds, so a task processed twice (after a
-- reclaim or a crash) never counts an item twice.
CREATE TABLE job_items (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    item_id  TEXT NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('COMPLETED', 'FAILED', 'SKIPPED')),
    PRIMARY KEY (job_id, item_id)
);
