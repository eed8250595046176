//! Leases in Redis: a key holding one holder's random token for a while. A configured consumer
//! name is leased so that two daemons given the same name by mistake cannot both consume as
//! that name (the second refuses to start); the reconciler's lease makes one daemon at a time
//! the active reconciler. A holder that stops renewing loses the lease after its time-to-live.
//!
//! A [`FencedLease`] also hands each new holder a fencing token, higher than any before: what
//! the holder writes elsewhere carries it, and a write with a lower token than one already
//! seen is refused there (the scheduler's firings in SQL).

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

/// Renews the lease while it holds our token (answering its fencing token); takes it with the
/// next token if it is free, never below ARGV[3]; 0 when another holder has it.
static TAKE_FENCED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, ':', 1, true)
  if sep and string.sub(held, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(held, sep + 1))
  end
  return 0
end
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if fence <= floor then
  fence = floor + 1
  redis.call('SET', KEYS[2], fence)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
"#,
    )
});

/// Gives the lease up if we still hold it.
static RELEASE_FENCED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// A lease whose every new holder gets a fencing token above all earlier ones.
#[derive(Clone)]
pub struct FencedLease {
    conn: ConnectionManager,
    key: String,
    counter: String,
    token: String,
    ttl: Duration,
}

impl FencedLease {
    pub fn new(conn: ConnectionManager, key: String, counter: String, ttl: Duration) -> Self {
        Self {
            conn,
            key,
            counter,
            token: uuid::Uuid::new_v4().simple().to_string(),
            ttl,
        }
    }

    /// Renews the lease, or takes it if it is free with a token above `floor`; the token
    /// while we hold it, `None` while another holder has it.
    pub async fn hold(&self, floor: u64) -> Result<Option<u64>, QueueError> {
        let mut conn = self.conn.clone();
        let fence: i64 = TAKE_FENCED
            .key(&self.key)
            .key(&self.counter)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .arg(floor)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(fence).ok().filter(|f| *f > 0))
    }

    /// Gives the lease up (another daemon may take it at once).
    pub async fn release(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE_FENCED
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
