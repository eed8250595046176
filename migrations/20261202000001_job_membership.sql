-- SQL remembers every item a job planned, whatever Redis forgets: the planner records each
-- page's items here (outcome NULL) before it writes their tasks, and the status writer fills
-- the outcome in once, when the item is final. A job's unfinished items are its rows without
-- an outcome; a job whose tasks Redis lost is planned again from them.
CREATE TABLE job_items_v2 (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    item_id  TEXT NOT NULL,
    outcome  TEXT CHECK (outcome IS NULL OR outcome IN ('COMPLETED', 'FAILED', 'SKIPPED')),
    PRIMARY KEY (job_id, item_id)
);
INSERT INTO job_items_v2 (job_id, item_id, outcome)
    SELECT job_id, item_id, outcome FROM job_items;
DROP TABLE job_items;
ALTER TABLE job_items_v2 RENAME TO job_items;

-- The Redis epoch a job's queued state lives in (its job entry, planning progress and tasks).
-- Redis marks each life of its data with a new epoch; a job of another epoch lost that state.
ALTER TABLE jobs ADD COLUMN epoch TEXT;
