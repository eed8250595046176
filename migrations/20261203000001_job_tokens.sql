-- Tokens the provider billed for a job's requests (its `usage`, else embedq's count), every
-- request paid for included, retried ones too.
ALTER TABLE jobs ADD COLUMN tokens BIGINT NOT NULL DEFAULT 0;
