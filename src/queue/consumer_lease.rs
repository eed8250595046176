//! A lease on a configured consumer name, so that two daemons given the same name by mistake
//! cannot both consume as that name: the second refuses to start. Generated names are unique
//! by construction and skip the lease.

use super::{Keys, QueueError};
use redis::aio::ConnectionManager;
use std::sync::LazyLock;
use std::time::Duration;

/// Extends the lease only while it still holds our token.
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
pub struct ConsumerLease {
    conn: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
}

impl ConsumerLease {
    /// Takes the lease or fails with [`QueueError::ConsumerNameTaken`].
    pub async fn acquire(
        mut conn: ConnectionManager,
        keys: &Keys,
        name: &str,
        ttl: Duration,
    ) -> Result<Self, QueueError> {
        let key = keys.consumer_lease(name);
        let token = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if taken.is_none() {
            return Err(QueueError::ConsumerNameTaken(name.to_owned()));
        }
        Ok(Self {
            conn,
            key,
            token,
            ttl,
        })
    }

    /// Renews the lease; false when another process holds it now.
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
