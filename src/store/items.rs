//! Contexts and items: bulk upsert that tells created, changed and unchanged apart, and lookups.

use super::placeholders;
use super::records::{ITEM_COLUMNS, ItemRecord};
use super::{Store, StoreError};
use crate::domain::{ContentHash, ContextId, ItemContent, ItemId, now_millis};
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;

/// An item as a producer sends it.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub id: ItemId,
    pub content: ItemContent,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UpsertCounts {
    /// New items.
    pub created: u64,
    /// Items whose content changed (now PENDING).
    pub changed: u64,
    /// Items sent with the content they had.
    pub unchanged: u64,
}

/// Rows per INSERT statement: 6 parameters each stays far below both engines' limits.
const INSERT_CHUNK: usize = 500;

impl Store {
    /// Creates the context if needed and upserts its items in one transaction. New content
    /// (by hash) makes the item PENDING with fresh attempts; the same content leaves the item as
    /// it is. An id that belongs to another context refuses the whole request.
    pub async fn upsert_items(
        &self,
        context: &ContextId,
        items: &[NewItem],
    ) -> Result<UpsertCounts, StoreError> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;

        let mut existing: HashMap<String, (String, String)> = HashMap::with_capacity(items.len());
        for chunk in items.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id, context_id, content_hash FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for item in chunk {
                q = q.bind(item.id.as_str().to_owned());
            }
            for row in q.fetch_all(&mut *tx).await? {
                let id: String = row.try_get("id")?;
                existing.insert(
                    id,
                    (row.try_get("context_id")?, row.try_get("content_hash")?),
                );
            }
        }

        let mut counts = UpsertCounts::default();
        let mut to_write: Vec<(&NewItem, ContentHash)> = Vec::new();
        for item in items {
            let hash = item.content.hash();
            match existing.get(item.id.as_str()) {
                Some((owner, _)) if owner != context.as_str() => {
                    return Err(StoreError::ItemInOtherContext {
                        item: item.id.to_string(),
                        owner: owner.clone(),
                        requested: context.to_string(),
                    });
                }
                Some((_, stored)) if stored == hash.as_str() => counts.unchanged += 1,
                Some(_) => {
                    counts.changed += 1;
                    to_write.push((item, hash));
                }
                None => {
                    counts.created += 1;
                    to_write.push((item, hash));
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
            // The WHERE keeps a concurrent request for another context, or with the same
            // content, from changing a row this request did not see.
            let sql = format!(
                "INSERT INTO items (id, context_id, content, content_hash, created_at, \
                 updated_at, status, attempts) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET content = excluded.content, \
                 content_hash = excluded.content_hash, status = 'PENDING', attempts = 0, \
                 last_error = NULL, updated_at = excluded.updated_at \
                 WHERE items.context_id = excluded.context_id \
                 AND items.content_hash <> excluded.content_hash",
                placeholders::tuples_with(chunk.len(), 6, "'PENDING', 0")
            );
            let mut q = sqlx::query(&sql);
            for (item, hash) in chunk {
                q = q
                    .bind(item.id.as_str().to_owned())
                    .bind(context.as_str().to_owned())
                    .bind(item.content.as_str().to_owned())
                    .bind(hash.as_str().to_owned())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }

        tx.commit().await?;
        Ok(counts)
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
