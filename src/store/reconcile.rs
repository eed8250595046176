//! What the reconciler asks SQL: which jobs' queued state Redis may have lost (their recorded
//! epoch is not the current one), the unfinished items of a job (its membership rows without an
//! outcome), and the jobs that still have unfinished items while nothing is queued anywhere.

use super::planning::PlannedItem;
use super::{Store, StoreError};
use crate::domain::{ItemId, JobId, now_millis};
use sqlx::Row;

/// A job whose queued state may be gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedJob {
    pub id: JobId,
    /// Every item of its scope was planned: its unfinished items are re-planned from SQL;
    /// otherwise it is planned again from the start.
    pub planned: bool,
}

impl Store {
    /// The Redis epoch the job's queued state lives in, if recorded.
    pub async fn job_epoch(&self, id: JobId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT epoch FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("epoch")?,
            None => None,
        })
    }

    /// Records the Redis epoch the job's queued state lives in now.
    pub async fn set_job_epoch(&self, id: JobId, epoch: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET epoch = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(epoch.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the epoch a new job's entry was written in, unless a planner already recorded
    /// one (which is newer).
    pub async fn set_job_epoch_if_unknown(&self, id: JobId, epoch: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET epoch = $2 WHERE id = $1 AND epoch IS NULL")
            .bind(id.to_string())
            .bind(epoch.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Jobs not yet final whose queued state lives in another epoch than `epoch` (Redis lost
    /// it), or whose epoch was never recorded and that are older than `unknown_before_ms`.
    pub async fn stranded_jobs(
        &self,
        epoch: &str,
        unknown_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<StrandedJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, planned_at FROM jobs WHERE state IN ('QUEUED', 'RUNNING') \
             AND ((epoch IS NOT NULL AND epoch <> $1) OR (epoch IS NULL AND created_at < $2)) \
             ORDER BY id LIMIT $3",
        )
        .bind(epoch.to_owned())
        .bind(unknown_before_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let planned: Option<i64> = r.try_get("planned_at")?;
                Ok(StrandedJob {
                    id: JobId::parse(&id).map_err(|e| StoreError::Corrupt(e.0))?,
                    planned: planned.is_some(),
                })
            })
            .collect()
    }

    /// Planning of a job not fully planned starts again from the first item, in `epoch` (what
    /// was planned before lived in a Redis that forgot it). Items already final stay counted.
    pub async fn restart_planning(&self, id: JobId, epoch: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET planning_cursor = NULL, total = 0, result = NULL, epoch = $2, updated_at = $3 \
             WHERE id = $1 AND planned_at IS NULL",
        )
        .bind(id.to_string())
        .bind(epoch.to_owned())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A keyset page of a job's unfinished items (after `after`, exclusive), with the attempts
    /// each has used. An item deleted since it was planned comes with no attempts: its task
    /// finds it gone and counts it.
    pub async fn unfinished_page(
        &self,
        job: JobId,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<PlannedItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT ji.item_id AS id, COALESCE(i.attempts, 0) AS attempts FROM job_items ji \
             LEFT JOIN items i ON i.id = ji.item_id \
             WHERE ji.job_id = $1 AND ji.outcome IS NULL AND ji.item_id > $2 \
             ORDER BY ji.item_id LIMIT $3",
        )
        .bind(job.to_string())
        .bind(after.map(|a| a.as_str().to_owned()).unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(PlannedItem {
                    id: ItemId::parse(id).map_err(|e| StoreError::Corrupt(e.0))?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Fully planned jobs, planned before `planned_before_ms`, that still have unfinished
    /// items (at most `limit`).
    pub async fn planned_jobs_with_unfinished_items(
        &self,
        planned_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id FROM jobs j WHERE j.state = 'RUNNING' AND j.planned_at IS NOT NULL \
             AND j.planned_at < $1 AND EXISTS (SELECT 1 FROM job_items ji \
             WHERE ji.job_id = j.id AND ji.outcome IS NULL) ORDER BY j.id LIMIT $2",
        )
        .bind(planned_before_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                JobId::parse(&id).map_err(|e| StoreError::Corrupt(e.0))
            })
            .collect()
    }
}
