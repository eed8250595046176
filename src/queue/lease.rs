//! Leases in Redis: a key holding one holder's random token for a while. A configured consumer
//! name is leased so that two daemons given the same name by mistake cannot both consume as
//! that name (the second refuses to start); the reconciler's lease makes one daemon at a time
//! the active reconciler. A holder that stops renewing loses the lease after its time-to-live.

use super::QueueError;
use redis::aio::ConnectionManager;
use std::sync::LazyLock;
use std::time::Duration;

/// Extends the lease while it still holds our token; takes it if it is free.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"#,
    )
});

#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// A lease on `key` for this holder (a fresh token), held for `ttl` at a time.
    pub fn new(conn: ConnectionManager, key: String, ttl: Duration) -> Self {
        Self {
            conn,
            key,
            token: uuid::Uuid::new_v4().to_string(),
            ttl,
        }
    }

    /// Takes the lease if nobody holds it; false when someone does.
    pub async fn take(&self) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(taken.is_some())
    }

    /// Renews the lease, or takes it if it is free; false when another holder has it.
    pub async fn renew(&self) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let held: i64 = RENEW
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}
