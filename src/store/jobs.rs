//! Jobs: creation with an idempotency key, lookups, and the rollback of a job whose queue
//! message could not be written.

use super::records::{JOB_COLUMNS, JobRecord};
use super::{Store, StoreError};
use crate::domain::{JobId, JobScope, now_millis};

/// A job about to be recorded.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub kind: &'static str,
    pub scope: JobScope,
    pub model: String,
    pub idempotency_key: Option<String>,
}

/// The job that a create call resolved to, and whether this call created it.
#[derive(Debug, Clone)]
pub struct CreatedJob {
    pub job: JobRecord,
    pub created: bool,
}

impl Store {
    /// Records a QUEUED job. With an idempotency key already used, returns that job instead.
    pub async fn create_job(&self, new: NewJob) -> Result<CreatedJob, StoreError> {
        let now = now_millis();
        let scope = serde_json::to_string(&new.scope)
            .map_err(|e| StoreError::Corrupt(format!("scope does not serialise: {e}")))?;
        let sql = format!(
            "INSERT INTO jobs (id, kind, scope, model, state, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'QUEUED', $5, $6, $6) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(new.id.to_string())
            .bind(new.kind)
            .bind(scope)
            .bind(new.model)
            .bind(new.idempotency_key.clone())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(CreatedJob {
                job: JobRecord::from_row(&row)?,
                created: true,
            });
        }
        let key = new.idempotency_key.unwrap_or_default();
        let job = self
            .job_by_idempotency_key(&key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("idempotency key {key:?} vanished")))?;
        Ok(CreatedJob {
            job,
            created: false,
        })
    }

    pub async fn job_by_idempotency_key(&self, key: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1");
        let row = sqlx::query(&sql)
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(JobRecord::from_row).transpose()
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(JobRecord::from_row).transpose()
    }

    /// Removes a job that never reached the queue, so no half-made job is left behind.
    pub async fn delete_queued_job(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND state = 'QUEUED' AND started_at IS NULL")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
