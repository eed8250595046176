//! Jobs: creation with an idempotency key, lookups, and the rollback of a job whose queue
//! message could not be written.

use super::records::{JOB_COLUMNS, JobRecord};
use super::{Store, StoreError};
use crate::domain::{JobId, JobKind, JobScope, JobState, Priority, Tenant, now_millis};

/// A job about to be recorded.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub kind: JobKind,
    pub scope: JobScope,
    pub model: String,
    pub priority: Priority,
    pub tenant: Option<Tenant>,
    pub idempotency_key: Option<String>,
}

/// The job that a create call resolved to, and whether this call created it.
#[derive(Debug, Clone)]
pub struct CreatedJob {
    pub job: JobRecord,
    pub created: bool,
}

/// The one rule of a job's end: once planned, a RUNNING job whose every planned item has its
/// outcome (completed, failed, skipped or deleted) ends — FAILED if any item failed, else
/// COMPLETED. Returns whether this call ended it.
pub(super) async fn finish_if_done(
    conn: &mut sqlx::AnyConnection,
    job: JobId,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = CASE WHEN failed > 0 THEN 'FAILED' ELSE 'COMPLETED' END, \
         finished_at = $2, updated_at = $2 \
         WHERE id = $1 AND state = 'RUNNING' AND planned_at IS NOT NULL \
         AND completed + failed + skipped + deleted >= total RETURNING id",
    )
    .bind(job.to_string())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(done.is_some())
}

/// Inserts a QUEUED job unless its idempotency key is taken; the job when it was inserted.
pub(super) async fn insert_job(
    conn: &mut sqlx::AnyConnection,
    new: &NewJob,
    now: i64,
) -> Result<Option<JobRecord>, StoreError> {
    let scope = serde_json::to_string(&new.scope)
        .map_err(|e| StoreError::Corrupt(format!("scope does not serialise: {e}")))?;
    let sql = format!(
        "INSERT INTO jobs (id, kind, scope, model, state, priority, tenant, idempotency_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'QUEUED', $5, $6, $7, $8, $8) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(new.id.to_string())
        .bind(new.kind.as_str())
        .bind(scope)
        .bind(new.model.clone())
        .bind(new.priority.as_str())
        .bind(new.tenant.as_ref().map(|t| t.as_str().to_owned()))
        .bind(new.idempotency_key.clone())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(JobRecord::from_row).transpose()
}

impl Store {
    /// Replaces a job's result (what it found and did beyond its counters).
    pub async fn set_job_result(
        &self,
        id: JobId,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET result = $2, updated_at = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(result.to_string())
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a QUEUED job. With an idempotency key already used, returns that job instead.
    pub async fn create_job(&self, new: NewJob) -> Result<CreatedJob, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = insert_job(&mut conn, &new, now_millis()).await?;
        if let Some(job) = row {
            return Ok(CreatedJob { job, created: true });
        }
        drop(conn);
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

    /// Records a job that a producer put straight on the jobs stream, unless a job with its id
    /// exists already (the entry was delivered again); returns the job either way.
    pub async fn record_job_from_stream(
        &self,
        id: JobId,
        scope: &JobScope,
        model: &str,
        priority: Priority,
        tenant: Option<&Tenant>,
    ) -> Result<JobRecord, StoreError> {
        let now = now_millis();
        let scope = serde_json::to_string(scope)
            .map_err(|e| StoreError::Corrupt(format!("scope does not serialise: {e}")))?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, scope, model, state, priority, tenant, created_at, updated_at) \
             VALUES ($1, 'embed', $2, $3, 'QUEUED', $4, $5, $6, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(scope)
        .bind(model.to_owned())
        .bind(priority.as_str())
        .bind(tenant.map(|t| t.as_str().to_owned()))
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_job(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished after its insert")))
    }

    pub async fn job_by_idempotency_key(&self, key: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1");
        let row = sqlx::query(&sql)
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(JobRecord::from_row).transpose()
    }

    /// Sets the priority of a job that has not ended; `None` when there is no such job.
    /// Tasks planned from now on carry it; tasks already queued keep the one they had.
    pub async fn set_job_priority(
        &self,
        id: JobId,
        priority: Priority,
    ) -> Result<Option<JobRecord>, StoreError> {
        sqlx::query(
            "UPDATE jobs SET priority = $2, updated_at = $3 \
             WHERE id = $1 AND state IN ('QUEUED', 'RUNNING')",
        )
        .bind(id.to_string())
        .bind(priority.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        self.get_job(id).await
    }

    /// The state and priority of each of `ids` that exists (the planner's view of the jobs it
    /// is planning, read once per step).
    pub async fn planning_views(
        &self,
        ids: &[JobId],
    ) -> Result<Vec<(JobId, JobState, Priority)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = super::placeholders::list(1, ids.len());
        let sql = format!("SELECT id, state, priority FROM jobs WHERE id IN ({marks})");
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id.to_string());
        }
        let corrupt = |e: crate::domain::ParseError| StoreError::Corrupt(e.0);
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                use sqlx::Row;
                Ok((
                    JobId::parse(&row.try_get::<String, _>("id")?).map_err(corrupt)?,
                    JobState::parse(&row.try_get::<String, _>("state")?).map_err(corrupt)?,
                    Priority::parse(&row.try_get::<String, _>("priority")?).map_err(corrupt)?,
                ))
            })
            .collect()
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

/// Which jobs to list: optionally one state, newest first, after a keyset cursor.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<crate::domain::JobState>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    pub limit: usize,
}

impl Store {
    /// A page of jobs, newest first (job ids are time-ordered UUIDv7).
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let before = filter
            .before
            .map(|b| b.to_string())
            .unwrap_or_else(|| "ffffffff-ffff-ffff-ffff-ffffffffffff".into());
        let rows = match filter.state {
            Some(state) => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                );
                sqlx::query(&sql)
                    .bind(state.as_str())
                    .bind(before)
                    .bind(filter.limit as i64)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id < $1 ORDER BY id DESC LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(before)
                    .bind(filter.limit as i64)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Jobs not yet final, for progress reporting (at most `limit`, newest first).
    pub async fn active_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('QUEUED', 'RUNNING') ORDER BY id DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Jobs that reached a final state at or after `since_ms` (at most `limit`).
    pub async fn jobs_finished_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE finished_at >= $1 ORDER BY finished_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Cancels a job that is not final yet. Returns the job as it is now, or `None` if unknown.
    /// Queued work of a cancelled job is dropped; items in flight finish and are counted.
    pub async fn cancel_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let now = now_millis();
        sqlx::query(
            "UPDATE jobs SET state = 'CANCELLED', finished_at = $2, updated_at = $2 \
             WHERE id = $1 AND state IN ('QUEUED', 'RUNNING')",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_job(id).await
    }

    /// The job's state, or `None` if it does not exist.
    pub async fn job_state(
        &self,
        id: JobId,
    ) -> Result<Option<crate::domain::JobState>, StoreError> {
        use sqlx::Row;
        let row = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let s: String = r.try_get("state")?;
            crate::domain::JobState::parse(&s).map_err(|e| StoreError::Corrupt(e.0))
        })
        .transpose()
    }
}
