//! Reading and pruning the dead-letter stream: items that ended FAILED (with the job, the
//! attempts and the reason) and stream entries that could not be decoded.

use super::{Keys, QueueError};
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;

/// A dead letter: an item that ended FAILED (`kind` "item"), or a stream entry that could not
/// be decoded (`kind` "entry").
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead letter's own stream id, `MILLISECONDS-SEQUENCE`.
    #[schema(pattern = "^[0-9]{1,19}(-[0-9]{1,19})?$", example = "1700000000000-0")]
    pub id: String,
    /// "item" (an item that ended FAILED) or "entry" (a stream entry that did not decode).
    pub kind: String,
    pub job_id: Option<String>,
    pub item_id: Option<String>,
    pub attempts: Option<u32>,
    /// Why it ended here.
    pub reason: String,
    /// For entries: the stream and entry id they came from, and their fields.
    pub stream: Option<String>,
    pub entry_id: Option<String>,
    pub payload: Option<String>,
    /// When it was written, in milliseconds since the Unix epoch.
    pub at_ms: Option<i64>,
}

impl From<StreamId> for DeadLetter {
    fn from(entry: StreamId) -> Self {
        let field = |name: &str| -> Option<String> {
            match entry.map.get(name) {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(redis::Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            }
        };
        Self {
            kind: field("kind").unwrap_or_else(|| "entry".into()),
            job_id: field("job_id"),
            item_id: field("item_id"),
            attempts: field("attempts").and_then(|a| a.parse().ok()),
            reason: field("reason").unwrap_or_default(),
            stream: field("stream"),
            entry_id: field("entry_id"),
            payload: field("payload"),
            at_ms: field("at_ms").and_then(|a| a.parse().ok()),
            id: entry.id,
        }
    }
}

#[derive(Clone)]
pub struct DeadLetters {
    conn: ConnectionManager,
    key: String,
}

/// Most dead letters one scan reads (the stream is capped near 100,000).
const SCAN_LIMIT: usize = 100_000;

impl DeadLetters {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        Self {
            conn,
            key: keys.dead_letters(),
        }
    }

    /// Newest first; `before` is the previous page's last id (exclusive).
    pub async fn list(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.conn.clone();
        let end = before
            .map(|b| format!("({b}"))
            .unwrap_or_else(|| "+".into());
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.into_iter().map(DeadLetter::from).collect())
    }

    /// Every dead letter (up to the stream's cap), oldest first.
    pub async fn all(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(SCAN_LIMIT)
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.into_iter().map(DeadLetter::from).collect())
    }

    /// Removes dead letters by id; returns how many were removed.
    pub async fn remove(&self, ids: &[String]) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XDEL")
            .arg(&self.key)
            .arg(ids)
            .query_async(&mut conn)
            .await?)
    }

    /// Removes every dead letter written before `cutoff_ms` (ms since the Unix epoch: a
    /// dead letter's id begins with the time it was written); returns how many.
    pub async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MINID")
            .arg(cutoff_ms.max(0))
            .query_async(&mut conn)
            .await?)
    }

    pub async fn count(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut conn)
            .await?)
    }
}
