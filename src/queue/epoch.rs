//! The epoch of the Redis data: a random mark that lives as long as Redis keeps its data. A
//! Redis that restarts without persistence, or is flushed, comes back without it, and the
//! first daemon to look makes a new one; every job records the epoch its queued state (job
//! entry, planning progress, tasks) was written in, so a job of another epoch is known to have
//! lost that state and is planned again from SQL.

use super::{Keys, QueueError};
use redis::aio::ConnectionManager;
use std::sync::LazyLock;

/// KEYS: the epoch key. ARGV: a new epoch, used if none is there. Returns the epoch.
pub(crate) static CURRENT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  e = ARGV[1]
end
return e
"#,
    )
});

/// A fresh epoch id.
pub(crate) fn fresh() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Clone)]
pub struct Epoch {
    conn: ConnectionManager,
    key: String,
}

impl Epoch {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        Self {
            conn,
            key: keys.epoch(),
        }
    }

    /// The current epoch (made now if Redis has none).
    pub async fn current(&self) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        Ok(CURRENT
            .key(&self.key)
            .arg(fresh())
            .invoke_async(&mut conn)
            .await?)
    }
}
