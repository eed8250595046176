-- A job's priority: which work is taken first (interactive, normal, bulk).
ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
