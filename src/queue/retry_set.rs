//! Retries waiting for their time: task payloads in a Redis sorted set scored by the time they
//! are due. A Lua script moves due entries back to the tasks stream of their priority (read
//! from the payload) atomically, so a retry is never lost nor duplicated between the set and
//! the streams, whichever daemon moves it, and keeps the priority it had.

use super::{Keys, QueueError};
use crate::messages::{SCHEMA_VERSION, TaskMessage};
use redis::aio::ConnectionManager;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: retry set, then the interactive, normal and bulk tasks streams. ARGV: most to move,
/// schema version. A payload without a (known) priority is normal. Returns how many moved.
static MOVE_DUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local streams = {interactive = KEYS[2], normal = KEYS[3], bulk = KEYS[4]}
for _, payload in ipairs(due) do
  local ok, task = pcall(cjson.decode, payload)
  local stream = KEYS[3]
  if ok and type(task) == 'table' and streams[task['priority']] then
    stream = streams[task['priority']]
  end
  redis.call('XADD', stream, '*', 'v', ARGV[2], 'task', payload)
  redis.call('ZREM', KEYS[1], payload)
end
return #due
"#,
    )
});

/// KEYS: retry set. ARGV: delay ms, payload. Scores by Redis's clock.
static SCHEDULE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
"#,
    )
});

#[derive(Clone)]
pub struct RetrySet {
    conn: ConnectionManager,
    set: String,
    /// The tasks streams, in `Priority::ALL`'s order.
    tasks: [String; 3],
}

impl RetrySet {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        Self {
            conn,
            set: keys.retries(),
            tasks: keys.tasks_streams(),
        }
    }

    /// Puts a task in the set, due after `delay`.
    pub async fn schedule(&self, task: &TaskMessage, delay: Duration) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = SCHEDULE
            .key(&self.set)
            .arg(delay.as_millis() as u64)
            .arg(task.payload())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Moves up to `max` due tasks to the tasks streams of their priorities; returns how many
    /// moved.
    pub async fn move_due(&self, max: usize) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        let [interactive, normal, bulk] = &self.tasks;
        let moved: i64 = MOVE_DUE
            .key(&self.set)
            .key(interactive)
            .key(normal)
            .key(bulk)
            .arg(max)
            .arg(SCHEMA_VERSION)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved.max(0) as usize)
    }

    /// Tasks waiting in the set.
    pub async fn waiting(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZCARD")
            .arg(&self.set)
            .query_async(&mut conn)
            .await?)
    }
}
