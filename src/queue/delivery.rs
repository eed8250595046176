//! A message handed from an intake to the actor that processes it, holding one credit of the
//! intake until it is dropped, and the means to acknowledge it once its work is committed.

use super::QueueError;
use crate::messages::EntryFields;
use redis::aio::ConnectionManager;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// One stream entry in flight. Dropping it returns the intake's credit and stops keeping its
/// claim alive; acknowledging it removes the entry from the stream.
#[derive(Debug)]
pub struct Delivery<M> {
    pub entry_id: String,
    pub message: M,
    pub acker: StreamAcker,
    pub(crate) _credit: Option<OwnedSemaphorePermit>,
    pub(crate) _held: Option<HeldEntry>,
}

/// The entries of one stream that this daemon holds in memory right now (a live [`Delivery`]
/// each), wherever they are in the pipeline: queued in the pool, in a worker, or in the status
/// writer's batch. The intake keeps their claims alive, and never delivers one of them twice.
#[derive(Debug, Default)]
struct HeldEntries(Mutex<HashSet<String>>);

impl HeldEntries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Marks an entry as held until dropped (with the delivery that owns it).
#[derive(Debug)]
pub(crate) struct HeldEntry {
    set: Arc<HeldEntries>,
    id: String,
}

impl Drop for HeldEntry {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

impl<M> Delivery<M> {
    /// XACK and XDEL, atomically: the entry leaves the pending list and the stream.
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.acker.ack(std::slice::from_ref(&self.entry_id)).await
    }
}

/// Acknowledges, keeps alive and dead-letters entries of one stream and group.
#[derive(Clone)]
pub struct StreamAcker {
    conn: ConnectionManager,
    stream: String,
    group: String,
    consumer: String,
    dead_letters: String,
    /// Shared by every clone: the intake and all deliveries of this stream.
    held: Arc<HeldEntries>,
}

impl std::fmt::Debug for StreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAcker")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .finish()
    }
}

/// Renews this consumer's claim on entries it still owns (resetting their idle time) and
/// returns the ids it no longer owns, atomically per entry.
static KEEP_ALIVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#,
    )
});

/// Hands entries this consumer owns to whoever claims next: their idle time is set to `ARGV[3]`
/// ms, so any consumer's XAUTOCLAIM (a restarted daemon's first) takes them without waiting a
/// visibility timeout. Only entries still owned by `ARGV[2]` are touched. Returns how many.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local released = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    released = released + 1
  end
end
return released
"#,
    )
});

/// An item that ended FAILED, recorded in the dead-letter stream with its reason.
#[derive(Debug, Clone)]
pub struct DeadItem {
    pub job_id: crate::domain::JobId,
    pub item_id: crate::domain::ItemId,
    pub attempts: u32,
    pub reason: String,
}

/// Dead letters kept, approximately.
const DEAD_LETTER_MAXLEN: usize = 100_000;

impl StreamAcker {
    pub fn new(
        conn: ConnectionManager,
        stream: String,
        group: String,
        consumer: String,
        dead_letters: String,
    ) -> Self {
        Self {
            conn,
            stream,
            group,
            consumer,
            dead_letters,
            held: Arc::default(),
        }
    }

    /// Marks `entry_id` as held in memory; `None` when a live delivery already holds it.
    pub(crate) fn hold(&self, entry_id: &str) -> Option<HeldEntry> {
        self.held
            .lock()
            .insert(entry_id.to_owned())
            .then(|| HeldEntry {
                set: self.held.clone(),
                id: entry_id.to_owned(),
            })
    }

    /// Whether a live delivery holds `entry_id`.
    pub fn is_held(&self, entry_id: &str) -> bool {
        self.held.lock().contains(entry_id)
    }

    /// The entries held in memory right now.
    pub fn held(&self) -> Vec<String> {
        self.held.lock().iter().cloned().collect()
    }

    /// Makes this consumer's entries `ids` reclaimable at once by any consumer (their idle time
    /// set to `idle`); used on shutdown for entries left unfinished.
    pub async fn release(&self, ids: &[String], idle: Duration) -> Result<usize, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut call = RELEASE.key(&self.stream);
        call.arg(&self.group)
            .arg(&self.consumer)
            .arg(idle.as_millis() as u64);
        for id in ids {
            call.arg(id);
        }
        let released: i64 = call.invoke_async(&mut conn).await?;
        Ok(released.max(0) as usize)
    }

    /// This consumer's pending entries (at most `count`), whoever holds them in memory.
    pub async fn own_pending(&self, count: usize) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(count)
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.into_iter().map(|p| p.id).collect())
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// XACK and XDEL of `ids`, in one transaction.
    pub async fn ack(&self, ids: &[String]) -> Result<(), QueueError> {
        self.ack_settled(ids, &[]).await
    }

    /// Adds XACK and XDEL of `ids` to a pipeline.
    fn push_ack(&self, pipe: &mut redis::Pipeline, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(ids)
            .ignore();
    }

    /// Adds one dead letter with `fields` (and the time) to a pipeline.
    fn push_dead_letter(&self, pipe: &mut redis::Pipeline, fields: &[(&str, String)]) {
        let cmd = pipe
            .cmd("XADD")
            .arg(&self.dead_letters)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAXLEN)
            .arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        cmd.arg("at_ms").arg(crate::domain::now_millis()).ignore();
    }

    /// Keeps the claim on `ids` alive; returns those another consumer has taken over.
    pub async fn keep_alive(&self, ids: &[String]) -> Result<Vec<String>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut call = KEEP_ALIVE.key(&self.stream);
        call.arg(&self.group).arg(&self.consumer);
        for id in ids {
            call.arg(id);
        }
        Ok(call.invoke_async(&mut conn).await?)
    }

    /// Acknowledges settled entries and records the items that ended FAILED as dead letters,
    /// in one transaction.
    pub async fn ack_settled(&self, ids: &[String], dead: &[DeadItem]) -> Result<(), QueueError> {
        self.ack_settled_with(&[], ids, dead).await
    }

    /// [`StreamAcker::ack_settled`] for entries of several streams at once (a batch of tasks
    /// of several priorities): `others` are entries of other ackers' streams, acknowledged in
    /// the same transaction, each on its own stream.
    pub async fn ack_settled_with(
        &self,
        others: &[(&StreamAcker, Vec<String>)],
        ids: &[String],
        dead: &[DeadItem],
    ) -> Result<(), QueueError> {
        if ids.is_empty() && dead.is_empty() && others.iter().all(|(_, ids)| ids.is_empty()) {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in dead {
            self.push_dead_letter(
                &mut pipe,
                &[
                    ("kind", "item".into()),
                    ("job_id", d.job_id.to_string()),
                    ("item_id", d.item_id.to_string()),
                    ("attempts", d.attempts.to_string()),
                    ("reason", d.reason.clone()),
                ],
            );
        }
        self.push_ack(&mut pipe, ids);
        for (acker, ids) in others {
            acker.push_ack(&mut pipe, ids);
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Moves an entry to the dead-letter stream with its reason and acknowledges it, in one
    /// transaction.
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        fields: &EntryFields,
        reason: &str,
    ) -> Result<(), QueueError> {
        let payload: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.push_dead_letter(
            &mut pipe,
            &[
                ("kind", "entry".into()),
                ("stream", self.stream.clone()),
                ("entry_id", entry_id.to_owned()),
                ("reason", reason.to_owned()),
                ("payload", serde_json::Value::Object(payload).to_string()),
            ],
        );
        self.push_ack(&mut pipe, &[entry_id.to_owned()]);
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }
}
