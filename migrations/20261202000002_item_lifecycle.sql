-- The whole life of an item: versions, metadata, deletes.
--
-- Every change of an item (its content, its metadata, its deletion) raises its version; every
-- point in the vector store carries the version it was written at, and a write never replaces
-- a higher one. A deleted item leaves a tombstone with its last version: its points are removed
-- up to that version (by the API at once, by the reconciler if that failed), and an item made
-- again under the same id continues from it.
ALTER TABLE items ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
-- A JSON object (canonical text), written into the point's payload; NULL when none was given.
ALTER TABLE items ADD COLUMN metadata TEXT;

CREATE TABLE item_tombstones (
    id          TEXT PRIMARY KEY,
    context_id  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    deleted_at  BIGINT NOT NULL,
    -- When the item's points were removed from every generation; NULL until then.
    swept_at    BIGINT
);
CREATE INDEX item_tombstones_unswept ON item_tombstones (deleted_at) WHERE swept_at IS NULL;

-- Metadata changes whose payload update may not have reached the vector store yet: written
-- with the change, removed once the update is applied (the reconciler retries what is left).
CREATE TABLE payload_updates (
    item_id     TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A deleted member of a job counts as DELETED: total = completed + failed + skipped + deleted.
ALTER TABLE jobs ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;

CREATE TABLE job_items_v3 (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    item_id  TEXT NOT NULL,
    outcome  TEXT CHECK (outcome IS NULL OR outcome IN ('COMPLETED', 'FAILED', 'SKIPPED', 'DELETED')),
    PRIMARY KEY (job_id, item_id)
);
INSERT INTO job_items_v3 (job_id, item_id, outcome)
    SELECT job_id, item_id, outcome FROM job_items;
DROP TABLE job_items;
ALTER TABLE job_items_v3 RENAME TO job_items;
-- A deleted item's open memberships are found by item.
CREATE INDEX job_items_by_item ON job_items (item_id) WHERE outcome IS NULL;
