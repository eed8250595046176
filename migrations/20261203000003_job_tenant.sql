-- A job's tenant: among jobs of one priority, turns go by tenant first, then by job.
ALTER TABLE jobs ADD COLUMN tenant TEXT;
