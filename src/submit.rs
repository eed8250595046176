//! Job submission: a job recorded in SQL gets its one message on the jobs stream, and SQL
//! learns which life of the Redis data (epoch) holds it. The API uses it for the jobs it makes,
//! the scheduler for the jobs its firings make.
//!
//! Should the epoch not be recorded, the reconciler treats the job as of an unknown epoch and
//! enqueues it again after a grace: a second entry for a job is harmless.

use crate::messages::JobMessage;
use crate::queue::{Keys, QueueError, enqueue_job};
use crate::store::{JobRecord, Store};
use redis::aio::ConnectionManager;

/// Puts a recorded job's message on the jobs stream and records its epoch.
pub(crate) async fn enqueue_recorded(
    store: &Store,
    redis: &ConnectionManager,
    keys: &Keys,
    job: &JobRecord,
) -> Result<(), QueueError> {
    let mut conn = redis.clone();
    let enqueued = enqueue_job(&mut conn, keys, &JobMessage::recorded(job.id)).await?;
    if let Err(e) = store
        .set_job_epoch_if_unknown(job.id, &enqueued.epoch)
        .await
    {
        tracing::warn!(job = %job.id, error = %e, "could not record the job's epoch");
    }
    tracing::info!(job = %job.id, kind = job.kind.as_str(), scope = job.scope.kind(), priority = %job.priority, "job enqueued");
    Ok(())
}
