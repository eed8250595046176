//! Planning progress kept in Redis, next to the tasks it describes.
//!
//! A page of tasks and the cursor after it are written by one Lua script, atomically: the
//! script writes only if the stored cursor is still the one the planner started the page from.
//! A planner that crashes after the script resumes after the page; one that crashes before it
//! redoes the page; two planners racing on one job (a stalled lease) cannot both write a page.
//! So every item of a job is planned exactly once. SQL holds a mirror of the progress, used
//! when Redis has lost it.

use super::{Keys, QueueError};
use crate::domain::JobId;
use redis::aio::ConnectionManager;
use std::sync::LazyLock;

/// Where a job's planning stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProgress {
    /// Last item id planned; `None` before the first page.
    pub cursor: Option<String>,
    /// Items planned so far.
    pub planned: i64,
}

/// The outcome of writing one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagePlanned {
    /// The tasks are on the stream and the cursor moved.
    Written,
    /// Another planner moved the cursor first; continue from its progress.
    Stale(PlanProgress),
}

/// Plan hashes expire if a job is abandoned mid-planning for this long.
const PLAN_TTL_SECS: u64 = 7 * 24 * 3600;

static INIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[1], 'planned', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'cursor', 'planned')
"#,
    )
});

static PAGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local cur = redis.call('HGET', KEYS[1], 'cursor')
if cur == false then cur = '' end
if cur ~= ARGV[1] then
  return {0, cur, redis.call('HGET', KEYS[1], 'planned') or '0'}
end
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'v', ARGV[4], 'task', ARGV[i])
end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2], 'planned', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[2], ARGV[3]}
"#,
    )
});

fn progress_from(cursor: String, planned: String) -> PlanProgress {
    PlanProgress {
        cursor: (!cursor.is_empty()).then_some(cursor),
        planned: planned.parse().unwrap_or(0),
    }
}

/// The planning scripts, bound to a connection and the key layout.
#[derive(Clone)]
pub struct PlanScripts {
    conn: ConnectionManager,
    keys: Keys,
}

impl PlanScripts {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// The job's progress in Redis, seeded from SQL's mirror when Redis has none.
    pub async fn progress(
        &self,
        job: JobId,
        sql_cursor: Option<&str>,
        sql_planned: i64,
    ) -> Result<PlanProgress, QueueError> {
        let mut conn = self.conn.clone();
        let (cursor, planned): (Option<String>, Option<String>) = INIT
            .key(self.keys.plan(job))
            .arg(sql_cursor.unwrap_or(""))
            .arg(sql_planned)
            .arg(PLAN_TTL_SECS)
            .invoke_async(&mut conn)
            .await?;
        Ok(progress_from(
            cursor.unwrap_or_default(),
            planned.unwrap_or_default(),
        ))
    }

    /// Writes `tasks` (encoded task payloads) and moves the cursor from `expected` to
    /// `next_cursor`, atomically, unless another planner moved it first.
    pub async fn write_page(
        &self,
        job: JobId,
        expected: Option<&str>,
        next_cursor: &str,
        planned_after: i64,
        tasks: &[String],
    ) -> Result<PagePlanned, QueueError> {
        let mut conn = self.conn.clone();
        let mut call = PAGE.key(self.keys.plan(job));
        call.key(self.keys.tasks_stream())
            .arg(expected.unwrap_or(""))
            .arg(next_cursor)
            .arg(planned_after)
            .arg(crate::messages::SCHEMA_VERSION)
            .arg(PLAN_TTL_SECS);
        for task in tasks {
            call.arg(task);
        }
        let (written, cursor, planned): (i64, String, String) =
            call.invoke_async(&mut conn).await?;
        Ok(if written == 1 {
            PagePlanned::Written
        } else {
            PagePlanned::Stale(progress_from(cursor, planned))
        })
    }

    /// Drops the progress of a job whose planning is finished (SQL has the final total).
    pub async fn forget(&self, job: JobId) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.keys.plan(job))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Entries on the tasks stream (queued plus in flight), for backpressure.
    pub async fn queued_tasks(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XLEN")
            .arg(self.keys.tasks_stream())
            .query_async(&mut conn)
            .await?)
    }
}
