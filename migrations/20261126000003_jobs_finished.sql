-- Jobs that finished recently, for live progress events.
CREATE INDEX jobs_by_finished ON jobs (finished_at);
