//! The producer side: one XADD per job, whatever the job's size.

use super::{Keys, QueueError};
use crate::messages::{JobMessage, StreamMessage};
use redis::aio::ConnectionManager;

/// Puts a job message on the jobs stream and returns the entry id.
pub async fn enqueue_job(
    conn: &mut ConnectionManager,
    keys: &Keys,
    message: &JobMessage,
) -> Result<String, QueueError> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys.jobs_stream()).arg("*");
    for (field, value) in message.encode() {
        cmd.arg(field).arg(value);
    }
    Ok(cmd.query_async(conn).await?)
}
