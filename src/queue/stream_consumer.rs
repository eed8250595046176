//! The reading side of one consumer group: new entries (`XREADGROUP >`), this consumer's own
//! pending entries (`XREADGROUP 0`), and entries other consumers left idle past the visibility
//! timeout (`XAUTOCLAIM`). A vanished group (Redis restarted without persistence) is recreated
//! on the spot.

use super::QueueError;
use crate::messages::EntryFields;
use redis::Value;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use std::time::Duration;

/// One entry as read, before decoding.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub id: String,
    pub fields: EntryFields,
}

impl From<StreamId> for RawEntry {
    fn from(entry: StreamId) -> Self {
        let fields = entry
            .map
            .into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    Value::BulkString(b) => b,
                    Value::SimpleString(s) => s.into_bytes(),
                    Value::Int(i) => i.to_string().into_bytes(),
                    other => format!("{other:?}").into_bytes(),
                };
                (k, bytes)
            })
            .collect();
        Self {
            id: entry.id,
            fields,
        }
    }
}

pub struct StreamConsumer {
    conn: ConnectionManager,
    stream: String,
    group: String,
    consumer: String,
    block: Duration,
    visibility_timeout: Duration,
    /// Where the next XAUTOCLAIM scan starts; wraps to 0-0.
    reclaim_cursor: String,
}

impl StreamConsumer {
    pub fn new(
        conn: ConnectionManager,
        stream: String,
        group: String,
        consumer: String,
        block: Duration,
        visibility_timeout: Duration,
    ) -> Self {
        Self {
            conn,
            stream,
            group,
            consumer,
            block,
            visibility_timeout,
            reclaim_cursor: "0-0".into(),
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Creates the group (and the stream) if missing. From id 0: entries written while the
    /// group was missing are read too, and acknowledged entries are deleted, so none repeat.
    pub async fn ensure_group(&mut self) -> Result<(), QueueError> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `count` new entries, waiting up to the block time for the first.
    pub async fn read_new(&mut self, count: usize) -> Result<Vec<RawEntry>, QueueError> {
        let block = self.block.as_millis() as u64;
        self.read_group(">", count, Some(block)).await
    }

    /// This consumer's own pending entries with ids after `after` ("0": from the start).
    pub async fn read_own_pending_after(
        &mut self,
        after: &str,
        count: usize,
    ) -> Result<Vec<RawEntry>, QueueError> {
        self.read_group(after, count, None).await
    }

    async fn read_group(
        &mut self,
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> Result<Vec<RawEntry>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        let reply: Result<Option<StreamReadReply>, redis::RedisError> =
            cmd.query_async(&mut self.conn).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(stream = %self.stream, group = %self.group, "consumer group missing; recreating it");
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    // Pending entries deleted from the stream come back without fields.
                    .filter(|e| !e.map.is_empty())
                    .map(RawEntry::from)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Claims up to `count` entries idle longer than the visibility timeout. Entries that were
    /// deleted from the stream while pending are acknowledged away.
    pub async fn reclaim_idle(&mut self, count: usize) -> Result<Vec<RawEntry>, QueueError> {
        let reply: Result<StreamAutoClaimReply, redis::RedisError> = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.visibility_timeout.as_millis() as u64)
            .arg(&self.reclaim_cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn)
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        self.reclaim_cursor = reply.next_stream_id;
        if !reply.deleted_ids.is_empty() {
            redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&reply.deleted_ids)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(reply
            .claimed
            .into_iter()
            .filter(|e| !e.map.is_empty())
            .map(RawEntry::from)
            .collect())
    }

    /// True when the last reclaim scan reached the end of the pending list.
    pub fn reclaim_scan_complete(&self) -> bool {
        self.reclaim_cursor == "0-0"
    }
}
