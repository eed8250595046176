//! Contexts and items: bulk upsert that tells created, changed, metadata-only and unchanged
//! items apart (and deletes in the same transaction), and lookups.

use super::lifecycle::{self, PayloadChange, Tombstone};
use super::placeholders;
use super::records::{ITEM_COLUMNS, ItemRecord};
use super::{Store, StoreError};
use crate::domain::{ContentHash, ContextId, ItemContent, ItemId, JobId, Metadata, now_millis};
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;

/// An item as a producer sends it.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub id: ItemId,
    pub content: ItemContent,
    /// New metadata; `None` keeps what the item has.
    pub metadata: Option<Metadata>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UpsertCounts {
    /// New items.
    pub created: u64,
    /// Items whose content changed (now PENDING).
    pub changed: u64,
    /// Items whose metadata alone changed: their points' payload is updated, nothing is
    /// embedded again.
    pub metadata_changed: u64,
    /// Items sent with the content and metadata they had.
    pub unchanged: u64,
    /// Items of the `delete` list that were deleted.
    pub deleted: u64,
    /// Ids of the `delete` list that were not items.
    pub not_found: u64,
}

/// What an upsert did, and what the vector store now owes.
#[derive(Debug, Clone, Default)]
pub struct UpsertReport {
    pub counts: UpsertCounts,
    /// Metadata-only changes, to apply to the items' points (recorded in the outbox too).
    pub payload_changes: Vec<PayloadChange>,
    /// Deleted items, whose points must go.
    pub tombstones: Vec<Tombstone>,
    /// Jobs the deletes finished.
    pub finished: Vec<JobId>,
}

/// Rows per INSERT statement: 8 parameters each stays far below both engines' limits.
const INSERT_CHUNK: usize = 400;

/// An item as stored, as far as an upsert compares it.
struct Stored {
    context: String,
    hash: String,
    metadata: Option<String>,
}

impl Store {
    /// Creates the context if needed, upserts its items and deletes the `delete` ids, in one
    /// transaction. New content (by hash) makes the item PENDING with fresh attempts and a new
    /// version; new metadata alone raises the version and records the payload update owed;
    /// the same content and metadata leave the item as it is. An id that belongs to another
    /// context refuses the whole request.
    pub async fn upsert_items(
        &self,
        context: &ContextId,
        items: &[NewItem],
        delete: &[ItemId],
    ) -> Result<UpsertReport, StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;

        let mut existing: HashMap<String, Stored> = HashMap::with_capacity(items.len());
        for chunk in items.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id, context_id, content_hash, metadata FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for item in chunk {
                q = q.bind(item.id.as_str().to_owned());
            }
            for row in q.fetch_all(&mut *tx).await? {
                existing.insert(
                    row.try_get("id")?,
                    Stored {
                        context: row.try_get("context_id")?,
                        hash: row.try_get("content_hash")?,
                        metadata: row.try_get("metadata")?,
                    },
                );
            }
        }

        let mut report = UpsertReport::default();
        let mut to_write: Vec<(&NewItem, ContentHash, Option<String>)> = Vec::new();
        let mut metadata_only: Vec<(&NewItem, ContentHash, String)> = Vec::new();
        for item in items {
            let hash = item.content.hash();
            let metadata = item.metadata.as_ref().map(Metadata::to_text);
            match existing.get(item.id.as_str()) {
                Some(stored) if stored.context != context.as_str() => {
                    return Err(StoreError::ItemInOtherContext {
                        item: item.id.to_string(),
                        owner: stored.context.clone(),
                        requested: context.to_string(),
                    });
                }
                Some(stored) if stored.hash == hash.as_str() => match metadata {
                    Some(text) if stored.metadata.as_deref().unwrap_or("{}") != text => {
                        metadata_only.push((item, hash, text));
                    }
                    _ => report.counts.unchanged += 1,
                },
                Some(_) => {
                    report.counts.changed += 1;
                    to_write.push((item, hash, metadata));
                }
                None => {
                    report.counts.created += 1;
                    to_write.push((item, hash, metadata));
                }
            }
        }

        sqlx::query(
            "INSERT INTO contexts (id, created_at, updated_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(context.as_str().to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;

        for chunk in to_write.chunks(INSERT_CHUNK) {
            // A new item continues the version of its tombstone, if the id was deleted once.
            // The WHERE keeps a concurrent request for another context, or with the same
            // content, from changing a row this request did not see.
            let sql = format!(
                "WITH v(id, context_id, content, content_hash, metadata, created_at, updated_at) \
                 AS (VALUES {}) \
                 INSERT INTO items (id, context_id, content, content_hash, metadata, created_at, \
                 updated_at, version, status, attempts) \
                 SELECT v.id, v.context_id, v.content, v.content_hash, v.metadata, \
                   CAST(v.created_at AS BIGINT), CAST(v.updated_at AS BIGINT), \
                   COALESCE((SELECT t.version FROM item_tombstones t WHERE t.id = v.id), 0) + 1, \
                   'PENDING', 0 \
                 FROM v WHERE true \
                 ON CONFLICT (id) DO UPDATE SET content = excluded.content, \
                 content_hash = excluded.content_hash, \
                 metadata = COALESCE(excluded.metadata, items.metadata), \
                 version = items.version + 1, status = 'PENDING', attempts = 0, \
                 last_error = NULL, updated_at = excluded.updated_at \
                 WHERE items.context_id = excluded.context_id \
                 AND items.content_hash <> excluded.content_hash",
                placeholders::tuples_with(chunk.len(), 7, "")
            );
            let mut q = sqlx::query(&sql);
            for (item, hash, metadata) in chunk {
                q = q
                    .bind(item.id.as_str().to_owned())
                    .bind(context.as_str().to_owned())
                    .bind(item.content.as_str().to_owned())
                    .bind(hash.as_str().to_owned())
                    .bind(metadata.clone())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }

        for chunk in metadata_only.chunks(INSERT_CHUNK) {
            let sql = format!(
                "WITH v(id, hash, metadata) AS (VALUES {}) \
                 UPDATE items SET metadata = v.metadata, version = items.version + 1, \
                   updated_at = ${n} \
                 FROM v WHERE items.id = v.id AND items.context_id = ${c} \
                   AND items.content_hash = v.hash \
                   AND (items.metadata IS NULL OR items.metadata <> v.metadata) \
                 RETURNING items.id AS id, items.version AS version",
                placeholders::tuples_with(chunk.len(), 3, ""),
                n = chunk.len() * 3 + 1,
                c = chunk.len() * 3 + 2,
            );
            let mut q = sqlx::query(&sql);
            for (item, hash, metadata) in chunk {
                q = q
                    .bind(item.id.as_str().to_owned())
                    .bind(hash.as_str().to_owned())
                    .bind(metadata.clone());
            }
            let rows = q
                .bind(now)
                .bind(context.as_str().to_owned())
                .fetch_all(&mut *tx)
                .await?;
            let asked: HashMap<&str, &NewItem> =
                chunk.iter().map(|(i, _, _)| (i.id.as_str(), *i)).collect();
            for row in rows {
                let id: String = row.try_get("id")?;
                let Some(item) = asked.get(id.as_str()) else {
                    continue;
                };
                report.counts.metadata_changed += 1;
                report.payload_changes.push(PayloadChange {
                    item_id: item.id.clone(),
                    version: row.try_get("version")?,
                    metadata: item.metadata.clone().unwrap_or_default(),
                });
            }
        }
        report.counts.unchanged += metadata_only.len() as u64 - report.counts.metadata_changed;

        for chunk in report.payload_changes.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO payload_updates (item_id, version, created_at) VALUES {} \
                 ON CONFLICT (item_id) DO UPDATE SET version = excluded.version, \
                 created_at = excluded.created_at",
                placeholders::tuples_with(chunk.len(), 3, "")
            );
            let mut q = sqlx::query(&sql);
            for change in chunk {
                q = q
                    .bind(change.item_id.as_str().to_owned())
                    .bind(change.version)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }

        if !delete.is_empty() {
            let deleted = lifecycle::delete_in(&mut tx, delete, Some(context), now).await?;
            report.counts.deleted = deleted.deleted.len() as u64;
            report.counts.not_found = deleted.missing.len() as u64;
            report.tombstones = deleted.deleted;
            report.finished = deleted.finished;
        }

        tx.commit().await?;
        Ok(report)
    }

    pub async fn get_item(&self, id: &ItemId) -> Result<Option<ItemRecord>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ItemRecord::from_row).transpose()
    }

    /// Gives FAILED items a fresh start (PENDING, no attempts, no error) so they can be
    /// requeued; returns the ids that were FAILED.
    pub async fn reset_failed_items(&self, ids: &[ItemId]) -> Result<Vec<ItemId>, StoreError> {
        let now = now_millis();
        let mut reset = Vec::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "UPDATE items SET status = 'PENDING', attempts = 0, last_error = NULL, updated_at = $1 \
                 WHERE status = 'FAILED' AND id IN ({}) RETURNING id",
                placeholders::list(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(now);
            for id in chunk {
                q = q.bind(id.as_str().to_owned());
            }
            for row in q.fetch_all(&self.pool).await? {
                let id: String = row.try_get("id")?;
                reset.push(ItemId::parse(id).map_err(|e| StoreError::Corrupt(e.0))?);
            }
        }
        Ok(reset)
    }

    pub async fn context_exists(&self, id: &ContextId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS present FROM contexts WHERE id = $1")
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The ids among `ids` that are not in the items table, in the order given.
    pub async fn missing_items(&self, ids: &[ItemId]) -> Result<Vec<ItemId>, StoreError> {
        let mut found = std::collections::HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str().to_owned());
            }
            for row in q.fetch_all(&self.pool).await? {
                found.insert(row.try_get::<String, _>("id")?);
            }
        }
        Ok(ids
            .iter()
            .filter(|id| !found.contains(id.as_str()))
            .cloned()
            .collect())
    }
}
