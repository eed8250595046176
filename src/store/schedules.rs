//! Schedules in SQL: the scheduler's fencing token (one row), each schedule's last tick and
//! every firing with the job it made.
//!
//! A firing commits in one transaction with a check of its fencing token: the token must be
//! the highest any scheduler has shown, so a daemon that was paused past its lease (while
//! another took the lease with a higher token) cannot fire anything when it wakes up. The
//! firing's primary key (schedule, tick) makes a tick fire at most once whatever happens.

use super::jobs::{NewJob, insert_job};
use super::records::JobRecord;
use super::{Store, StoreError};
use crate::domain::{JobId, now_millis};
use sqlx::Row;
use std::collections::HashMap;

/// A tick about to be fired by the scheduler holding `fence`.
#[derive(Debug, Clone)]
pub struct Firing<'a> {
    pub schedule: &'a str,
    pub tick_ms: i64,
    pub fence: u64,
    /// The daemon's consumer name.
    pub fired_by: &'a str,
    /// The job the tick makes (none for an action that is not a job).
    pub job: Option<NewJob>,
}

/// How a firing went.
#[derive(Debug, Clone)]
pub enum FireOutcome {
    /// Recorded, with the job it made.
    Fired(Option<Box<JobRecord>>),
    /// The tick had been fired already (by this or another daemon).
    AlreadyFired,
    /// A scheduler with a higher fencing token exists: this one's lease is gone.
    Stale { highest: i64 },
}

/// A recorded firing.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleFiring {
    /// The tick fired, in milliseconds since the Unix epoch.
    pub tick_ms: i64,
    /// The job it made (none for a dead-letter purge).
    pub job_id: Option<JobId>,
    /// What an action that is not a job did (a purge: how many dead letters it removed).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The fencing token of the scheduler that fired it.
    pub fence: i64,
    /// The consumer name of the daemon that fired it.
    pub fired_by: String,
    pub fired_at: i64,
}

/// Raises the stored token to `fence` unless a higher one is stored; the stored one when it is.
async fn check_fence(
    conn: &mut sqlx::AnyConnection,
    fence: u64,
) -> Result<Option<i64>, StoreError> {
    let fence = i64::try_from(fence).map_err(|_| StoreError::Corrupt("fence overflows".into()))?;
    let raised = sqlx::query("UPDATE scheduler_fence SET fence = $1 WHERE id = 1 AND fence <= $1")
        .bind(fence)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if raised == 1 {
        return Ok(None);
    }
    let highest: i64 = sqlx::query("SELECT fence FROM scheduler_fence WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(Some(highest))
}

/// Moves a schedule's last tick forward (never back).
async fn advance(
    conn: &mut sqlx::AnyConnection,
    schedule: &str,
    tick_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO schedule_state (name, last_tick_ms) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET last_tick_ms = excluded.last_tick_ms \
         WHERE schedule_state.last_tick_ms < excluded.last_tick_ms",
    )
    .bind(schedule.to_owned())
    .bind(tick_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// A newly leased scheduler shows its token: `Err(highest)` when a higher one is stored
    /// (the lease's counter in Redis was lost; the caller must take a token above it).
    pub async fn claim_scheduler_fence(&self, fence: u64) -> Result<Result<(), i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let stale = check_fence(&mut tx, fence).await?;
        tx.commit().await?;
        Ok(stale.map_or(Ok(()), Err))
    }

    /// The last tick of every schedule that has one.
    pub async fn schedule_last_ticks(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT name, last_tick_ms FROM schedule_state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Moves a schedule past ticks it will not fire (a new schedule starts from now; missed
    /// ticks of a schedule that skips them), under the scheduler's fence.
    pub async fn skip_schedule_to(
        &self,
        schedule: &str,
        tick_ms: i64,
        fence: u64,
    ) -> Result<FireOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(highest) = check_fence(&mut tx, fence).await? {
            return Ok(FireOutcome::Stale { highest });
        }
        advance(&mut tx, schedule, tick_ms).await?;
        tx.commit().await?;
        Ok(FireOutcome::Fired(None))
    }

    /// Fires a tick: checks the fence, records the firing and its job, and moves the
    /// schedule's last tick, in one transaction.
    pub async fn fire_schedule(&self, firing: Firing<'_>) -> Result<FireOutcome, StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        if let Some(highest) = check_fence(&mut tx, firing.fence).await? {
            return Ok(FireOutcome::Stale { highest });
        }
        let recorded = sqlx::query(
            "INSERT INTO schedule_firings (schedule, tick_ms, fence, fired_by, fired_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, tick_ms) DO NOTHING",
        )
        .bind(firing.schedule.to_owned())
        .bind(firing.tick_ms)
        .bind(firing.fence as i64)
        .bind(firing.fired_by.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            return Ok(FireOutcome::AlreadyFired);
        }
        let job = match &firing.job {
            Some(new) => {
                // Its idempotency key names the tick: taken means the tick made its job.
                let Some(job) = insert_job(&mut tx, new, now).await? else {
                    return Ok(FireOutcome::AlreadyFired);
                };
                sqlx::query(
                    "UPDATE schedule_firings SET job_id = $3 WHERE schedule = $1 AND tick_ms = $2",
                )
                .bind(firing.schedule.to_owned())
                .bind(firing.tick_ms)
                .bind(job.id.to_string())
                .execute(&mut *tx)
                .await?;
                Some(Box::new(job))
            }
            None => None,
        };
        advance(&mut tx, firing.schedule, firing.tick_ms).await?;
        tx.commit().await?;
        Ok(FireOutcome::Fired(job))
    }

    /// Records what a firing that made no job did.
    pub async fn set_firing_result(
        &self,
        schedule: &str,
        tick_ms: i64,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedule_firings SET result = $3 WHERE schedule = $1 AND tick_ms = $2")
            .bind(schedule.to_owned())
            .bind(tick_ms)
            .bind(result.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A schedule's firings, newest first.
    pub async fn recent_firings(
        &self,
        schedule: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFiring>, StoreError> {
        let rows = sqlx::query(
            "SELECT tick_ms, job_id, result, fence, fired_by, fired_at FROM schedule_firings \
             WHERE schedule = $1 ORDER BY tick_ms DESC LIMIT $2",
        )
        .bind(schedule.to_owned())
        .bind(limit.min(1_000) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let job_id: Option<String> = r.try_get(1)?;
                let result: Option<String> = r.try_get(2)?;
                Ok(ScheduleFiring {
                    tick_ms: r.try_get(0)?,
                    job_id: job_id
                        .map(|j| JobId::parse(&j).map_err(|e| StoreError::Corrupt(e.0)))
                        .transpose()?,
                    result: result
                        .map(|r| serde_json::from_str(&r))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("a firing's result: {e}")))?,
                    fence: r.try_get(3)?,
                    fired_by: r.try_get(4)?,
                    fired_at: r.try_get(5)?,
                })
            })
            .collect()
    }
}
