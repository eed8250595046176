//! Planning progress kept in Redis, next to the tasks it describes.
//!
//! A page of tasks and the cursor after it are written by one Lua script, atomically: the
//! script writes only if the stored cursor is still the one the planner started the page from.
//! A planner that crashes after the script resumes after the page; one that crashes before it
//! redoes the page; two planners racing on one job (a stalled lease) cannot both write a page.
//! So every item of a job is planned exactly once. SQL holds a mirror of the progress, used
//! when Redis has lost it.
//!
//! Each page is written only in the Redis epoch the planner started the job in: if Redis lost
//! its data since (a restart without persistence, a flush), the script says so and writes
//! nothing, and the job is planned again from the start in the new epoch. The reconciler's
//! pages of a job's unfinished items ([`PlanScripts::write_replan_page`]) follow the same
//! rules, with their own cursor.

use super::{Keys, QueueError};
use crate::domain::{JobId, Priority};
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

/// One page of a job's tasks to write with the cursor after it.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite<'a> {
    pub job: JobId,
    /// Which tasks stream the page goes to.
    pub priority: Priority,
    /// The Redis epoch the job was started in.
    pub epoch: &'a str,
    /// The cursor the page was read from (`None`: the first page).
    pub expected: Option<&'a str>,
    pub next_cursor: &'a str,
    /// Items planned once the page is written.
    pub planned_after: i64,
    /// The encoded task payloads.
    pub tasks: &'a [String],
}

/// The outcome of writing one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagePlanned {
    /// The tasks are on the stream and the cursor moved.
    Written,
    /// Another planner moved the cursor first; continue from its progress.
    Stale(PlanProgress),
    /// Redis lost its data since the job was started (its epoch changed): nothing was written.
    EpochChanged,
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

/// KEYS: the progress hash, the tasks stream, the epoch key. ARGV: the cursor expected, the
/// cursor after the page, items planned after it, the schema version, the hash's TTL, the
/// epoch expected, then the tasks. Returns {1, …} written, {0, cursor, planned} stale, {-1}
/// epoch changed.
static PAGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[3]) ~= ARGV[6] then
  return {-1, '', '0'}
end
local cur = redis.call('HGET', KEYS[1], 'cursor')
if cur == false then cur = '' end
if cur ~= ARGV[1] then
  return {0, cur, redis.call('HGET', KEYS[1], 'planned') or '0'}
end
for i = 7, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'v', ARGV[4], 'task', ARGV[i])
end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2], 'planned', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[2], ARGV[3]}
"#,
    )
});

/// KEYS: tasks streams. ARGV: the consumer group. Returns, per stream, its length less what
/// is pending in the group (nothing pending when the group does not exist yet).
static WAITING: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local out = {}
for i, key in ipairs(KEYS) do
  local len = redis.call('XLEN', key)
  local pending = redis.pcall('XPENDING', key, ARGV[1])
  local n = 0
  if type(pending) == 'table' and type(pending[1]) == 'number' then n = pending[1] end
  out[i] = len - n
end
return out
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

    /// The current Redis epoch (made now if Redis has none).
    pub async fn epoch(&self) -> Result<String, QueueError> {
        super::Epoch::new(self.conn.clone(), &self.keys)
            .current()
            .await
    }

    /// Writes the page's tasks and moves the job's cursor from `expected` to `next_cursor`,
    /// atomically, unless another planner moved it first or Redis is no longer in `epoch`.
    pub async fn write_page(&self, page: &PageWrite<'_>) -> Result<PagePlanned, QueueError> {
        self.write(self.keys.plan(page.job), page).await
    }

    /// A page of a job's unfinished items planned again by the reconciler, with its own cursor
    /// (the same rules as [`PlanScripts::write_page`]; `planned_after` counts what it planned
    /// again).
    pub async fn write_replan_page(&self, page: &PageWrite<'_>) -> Result<PagePlanned, QueueError> {
        self.write(self.keys.replan(page.job), page).await
    }

    async fn write(
        &self,
        progress_key: String,
        page: &PageWrite<'_>,
    ) -> Result<PagePlanned, QueueError> {
        let PageWrite {
            priority,
            epoch,
            expected,
            next_cursor,
            planned_after,
            tasks,
            ..
        } = *page;
        let mut conn = self.conn.clone();
        let mut call = PAGE.key(progress_key);
        call.key(self.keys.tasks_stream(priority))
            .key(self.keys.epoch())
            .arg(expected.unwrap_or(""))
            .arg(next_cursor)
            .arg(planned_after)
            .arg(crate::messages::SCHEMA_VERSION)
            .arg(PLAN_TTL_SECS)
            .arg(epoch);
        for task in tasks {
            call.arg(task);
        }
        let (written, cursor, planned): (i64, String, String) =
            call.invoke_async(&mut conn).await?;
        Ok(match written {
            1 => PagePlanned::Written,
            -1 => PagePlanned::EpochChanged,
            _ => PagePlanned::Stale(progress_from(cursor, planned)),
        })
    }

    /// The reconciler's progress in planning a job's unfinished items again.
    pub async fn replan_progress(&self, job: JobId) -> Result<PlanProgress, QueueError> {
        let mut conn = self.conn.clone();
        let (cursor, planned): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.replan(job))
            .arg("cursor")
            .arg("planned")
            .query_async(&mut conn)
            .await?;
        Ok(progress_from(
            cursor.unwrap_or_default(),
            planned.unwrap_or_default(),
        ))
    }

    /// Drops the reconciler's progress of a job once its unfinished items are all planned again.
    pub async fn forget_replan(&self, job: JobId) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.keys.replan(job))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether nothing is queued at all: no task on any stream (pending ones included) and no
    /// retry waiting, read in one transaction.
    pub async fn nothing_queued(&self) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let [interactive, normal, bulk] = self.keys.tasks_streams();
        let (a, b, c, retries): (u64, u64, u64, u64) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(interactive)
            .cmd("XLEN")
            .arg(normal)
            .cmd("XLEN")
            .arg(bulk)
            .cmd("ZCARD")
            .arg(self.keys.retries())
            .query_async(&mut conn)
            .await?;
        Ok(a + b + c == 0 && retries == 0)
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

    /// Tasks of each priority (in [`Priority::ALL`]'s order) that no daemon has taken yet,
    /// for backpressure: what is on a stream less what is pending in its group, read at once.
    /// (An acknowledged entry is deleted with its acknowledgement, so a stream holds only the
    /// waiting and the pending.)
    pub async fn waiting_tasks(&self) -> Result<[u64; 3], QueueError> {
        let mut conn = self.conn.clone();
        let mut call = WAITING.prepare_invoke();
        for stream in self.keys.tasks_streams() {
            call.key(stream);
        }
        let waiting: Vec<i64> = call
            .arg(super::PIPELINE_GROUP)
            .invoke_async(&mut conn)
            .await?;
        let mut out = [0u64; 3];
        for (slot, n) in out.iter_mut().zip(waiting) {
            *slot = n.max(0) as u64;
        }
        Ok(out)
    }
}
