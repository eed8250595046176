//! The producer side: one job entry per job, whatever the job's size, written with the epoch
//! it lives in.

use super::epoch::fresh;
use super::{Keys, QueueError};
use crate::messages::{JobMessage, StreamMessage};
use redis::aio::ConnectionManager;
use std::sync::LazyLock;

/// KEYS: the epoch key, the jobs stream. ARGV: a new epoch (used if none is there), then the
/// entry's field names and values. Returns the epoch and the entry id.
static ENQUEUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  e = ARGV[1]
end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
return {e, id}
"#,
    )
});

/// Where a job entry went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub entry_id: String,
    /// The epoch the entry was written in.
    pub epoch: String,
}

/// Puts a job message on the jobs stream.
pub async fn enqueue_job(
    conn: &mut ConnectionManager,
    keys: &Keys,
    message: &JobMessage,
) -> Result<Enqueued, QueueError> {
    let mut call = ENQUEUE.key(keys.epoch());
    call.key(keys.jobs_stream()).arg(fresh());
    for (field, value) in message.encode() {
        call.arg(field).arg(value);
    }
    let (epoch, entry_id): (String, String) = call.invoke_async(conn).await?;
    Ok(Enqueued { entry_id, epoch })
}
