-- What a job found and did beyond its counters, as JSON (a reconcile job's findings: points
-- scanned, orphans deleted, points missing or stale, payloads refreshed).
ALTER TABLE jobs ADD COLUMN result TEXT;
