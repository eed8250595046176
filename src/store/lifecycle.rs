//! The end of an item's life and what the vector store still owes SQL: deleting items (a
//! tombstone each, their open job memberships counted DELETED, jobs finished that reach their
//! total), the current version of items for the vector writer's checks, and two outboxes the
//! API empties at once and the reconciler retries — tombstones whose points are not removed
//! yet, and metadata changes whose payload update has not reached the vector store.

use super::placeholders;
use super::{Store, StoreError};
use crate::domain::{ContentHash, ContextId, ItemId, JobId, Metadata, now_millis};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// A deleted item and its last version: its points are removed up to that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub item_id: ItemId,
    pub version: i64,
}

/// What a delete did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub deleted: Vec<Tombstone>,
    /// Ids asked for that were not items.
    pub missing: Vec<ItemId>,
    /// Jobs that reached their total because their remaining items were deleted.
    pub finished: Vec<JobId>,
}

/// An item as the vector writer checks it just before and just after a write.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentItem {
    pub context_id: ContextId,
    pub version: i64,
    pub content_hash: ContentHash,
    pub metadata: Metadata,
}

/// New metadata of an item at a version, owed to the vector store's payload.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadChange {
    pub item_id: ItemId,
    pub version: i64,
    pub metadata: Metadata,
}

/// Ids per statement, far below both engines' parameter limits.
const CHUNK: usize = 400;

fn parse_id(raw: String) -> Result<ItemId, StoreError> {
    ItemId::parse(raw).map_err(|e| StoreError::Corrupt(e.0))
}

/// Deletes the items among `ids` (those of `context` only, when given: an item of another
/// context refuses the whole call) inside `tx`.
pub(super) async fn delete_in(
    tx: &mut sqlx::AnyConnection,
    ids: &[ItemId],
    context: Option<&ContextId>,
    now: i64,
) -> Result<DeleteReport, StoreError> {
    let mut report = DeleteReport::default();
    let mut per_job: BTreeMap<JobId, i64> = BTreeMap::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, context_id, version FROM items WHERE id IN ({})",
            placeholders::list(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.as_str().to_owned());
        }
        let mut found: HashMap<String, (String, i64)> = HashMap::new();
        for row in q.fetch_all(&mut *tx).await? {
            found.insert(
                row.try_get("id")?,
                (row.try_get("context_id")?, row.try_get("version")?),
            );
        }
        let mut here: Vec<(&ItemId, &str, i64)> = Vec::new();
        for id in chunk {
            match found.get(id.as_str()) {
                None => report.missing.push(id.clone()),
                Some((owner, _)) if context.is_some_and(|c| c.as_str() != owner) => {
                    return Err(StoreError::ItemInOtherContext {
                        item: id.to_string(),
                        owner: owner.clone(),
                        requested: context.map(ToString::to_string).unwrap_or_default(),
                    });
                }
                Some((owner, version)) => here.push((id, owner, *version + 1)),
            }
        }
        if here.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO item_tombstones (id, context_id, version, deleted_at) VALUES {} \
             ON CONFLICT (id) DO UPDATE SET context_id = excluded.context_id, \
             version = excluded.version, deleted_at = excluded.deleted_at, swept_at = NULL",
            placeholders::tuples_with(here.len(), 4, "")
        );
        let mut q = sqlx::query(&sql);
        for (id, owner, version) in &here {
            q = q
                .bind(id.as_str().to_owned())
                .bind((*owner).to_owned())
                .bind(*version)
                .bind(now);
        }
        q.execute(&mut *tx).await?;

        let list = placeholders::list(1, here.len());
        let sql = format!("DELETE FROM items WHERE id IN ({list})");
        let mut q = sqlx::query(&sql);
        for (id, _, _) in &here {
            q = q.bind(id.as_str().to_owned());
        }
        q.execute(&mut *tx).await?;

        // Open memberships in jobs still running count DELETED, once (the status writer's
        // outcome for the same item then finds its row taken).
        let sql = format!(
            "UPDATE job_items SET outcome = 'DELETED' WHERE outcome IS NULL AND item_id IN ({list}) \
             AND job_id IN (SELECT id FROM jobs WHERE state IN ('QUEUED', 'RUNNING')) \
             RETURNING job_id"
        );
        let mut q = sqlx::query(&sql);
        for (id, _, _) in &here {
            q = q.bind(id.as_str().to_owned());
        }
        for row in q.fetch_all(&mut *tx).await? {
            let job: String = row.try_get("job_id")?;
            let job = JobId::parse(&job).map_err(|e| StoreError::Corrupt(e.0))?;
            *per_job.entry(job).or_default() += 1;
        }
        sqlx::query(&format!(
            "DELETE FROM payload_updates WHERE item_id IN ({list})"
        ))
        .bind_all(here.iter().map(|(id, _, _)| id.as_str().to_owned()))
        .execute(&mut *tx)
        .await?;
        report
            .deleted
            .extend(here.into_iter().map(|(id, _, version)| Tombstone {
                item_id: id.clone(),
                version,
            }));
    }
    for (job, deleted) in per_job {
        sqlx::query("UPDATE jobs SET deleted = deleted + $2, updated_at = $3 WHERE id = $1")
            .bind(job.to_string())
            .bind(deleted)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if super::jobs::finish_if_done(tx, job, now).await? {
            report.finished.push(job);
        }
    }
    Ok(report)
}

/// Binding a list of texts in order.
trait BindAll<'q> {
    fn bind_all(self, values: impl Iterator<Item = String>) -> Self;
}

impl<'q> BindAll<'q> for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    fn bind_all(mut self, values: impl Iterator<Item = String>) -> Self {
        for v in values {
            self = self.bind(v);
        }
        self
    }
}

impl Store {
    /// Deletes these items in one transaction (see [`DeleteReport`]).
    pub async fn delete_items(
        &self,
        ids: &[ItemId],
        context: Option<&ContextId>,
    ) -> Result<DeleteReport, StoreError> {
        let mut tx = self.begin_write().await?;
        let report = delete_in(&mut tx, ids, context, now_millis()).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Deletes every item of a context, a page per transaction, then the context. `None` when
    /// there is no such context.
    pub async fn delete_context(
        &self,
        context: &ContextId,
    ) -> Result<Option<DeleteReport>, StoreError> {
        if !self.context_exists(context).await? {
            return Ok(None);
        }
        let mut total = DeleteReport::default();
        loop {
            let rows =
                sqlx::query("SELECT id FROM items WHERE context_id = $1 ORDER BY id LIMIT 500")
                    .bind(context.as_str().to_owned())
                    .fetch_all(&self.pool)
                    .await?;
            if rows.is_empty() {
                break;
            }
            let ids = rows
                .iter()
                .map(|r| parse_id(r.try_get("id")?))
                .collect::<Result<Vec<_>, _>>()?;
            let report = self.delete_items(&ids, Some(context)).await?;
            total.deleted.extend(report.deleted);
            total.finished.extend(report.finished);
        }
        // An upsert racing into the context keeps it (its items reference it).
        if let Err(e) = sqlx::query(
            "DELETE FROM contexts WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM items WHERE context_id = $1)",
        )
        .bind(context.as_str().to_owned())
        .execute(&self.pool)
        .await
        {
            tracing::warn!(context = %context, error = %e, "the emptied context stays");
        }
        Ok(Some(total))
    }

    /// The current version, content hash and metadata of those of `ids` that are items.
    pub async fn current_items(
        &self,
        ids: &[ItemId],
    ) -> Result<HashMap<ItemId, CurrentItem>, StoreError> {
        let asked: HashMap<&str, &ItemId> = ids.iter().map(|i| (i.as_str(), i)).collect();
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, context_id, version, content_hash, metadata FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let rows = sqlx::query(&sql)
                .bind_all(chunk.iter().map(|i| i.as_str().to_owned()))
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let id: String = row.try_get("id")?;
                let Some(id) = asked.get(id.as_str()) else {
                    continue;
                };
                let metadata: Option<String> = row.try_get("metadata")?;
                let metadata = Metadata::from_stored(metadata.as_deref())
                    .map_err(|e| StoreError::Corrupt(format!("metadata of item {id}: {e}")))?;
                out.insert(
                    (*id).clone(),
                    CurrentItem {
                        context_id: ContextId::parse(row.try_get::<String, _>("context_id")?)
                            .map_err(|e| StoreError::Corrupt(e.0))?,
                        version: row.try_get("version")?,
                        content_hash: ContentHash::from_stored(row.try_get("content_hash")?),
                        metadata,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The tombstone versions of those of `ids` that were deleted (and not purged yet).
    pub async fn tombstone_versions(
        &self,
        ids: &[ItemId],
    ) -> Result<HashMap<ItemId, i64>, StoreError> {
        let asked: HashMap<&str, &ItemId> = ids.iter().map(|i| (i.as_str(), i)).collect();
        let mut out = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, version FROM item_tombstones WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let rows = sqlx::query(&sql)
                .bind_all(chunk.iter().map(|i| i.as_str().to_owned()))
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let id: String = row.try_get("id")?;
                if let Some(id) = asked.get(id.as_str()) {
                    out.insert((*id).clone(), row.try_get("version")?);
                }
            }
        }
        Ok(out)
    }

    /// Tombstones whose points may still be in the vector store, deleted before `before`.
    pub async fn unswept_tombstones(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Tombstone>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version FROM item_tombstones WHERE swept_at IS NULL AND deleted_at < $1 \
             ORDER BY deleted_at LIMIT $2",
        )
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Tombstone {
                    item_id: parse_id(r.try_get("id")?)?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }

    /// Records that these tombstones' points are gone (a tombstone renewed since stays open).
    pub async fn mark_swept(&self, tombstones: &[Tombstone]) -> Result<(), StoreError> {
        let now = now_millis();
        for t in tombstones {
            sqlx::query("UPDATE item_tombstones SET swept_at = $3 WHERE id = $1 AND version = $2")
                .bind(t.item_id.as_str().to_owned())
                .bind(t.version)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Forgets swept tombstones older than `before`: no write for such an old version can
    /// still be in flight. Returns how many.
    pub async fn purge_tombstones(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM item_tombstones WHERE swept_at IS NOT NULL AND deleted_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Metadata changes recorded before `before` whose payload update is still owed, with the
    /// items' current metadata (items deleted since are dropped from the outbox).
    pub async fn owed_payload_changes(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<PayloadChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_id FROM payload_updates WHERE created_at < $1 ORDER BY created_at LIMIT $2",
        )
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let ids = rows
            .iter()
            .map(|r| parse_id(r.try_get("item_id")?))
            .collect::<Result<Vec<_>, _>>()?;
        let current = self.current_items(&ids).await?;
        let gone: Vec<&ItemId> = ids.iter().filter(|i| !current.contains_key(*i)).collect();
        for id in gone {
            sqlx::query("DELETE FROM payload_updates WHERE item_id = $1")
                .bind(id.as_str().to_owned())
                .execute(&self.pool)
                .await?;
        }
        Ok(current
            .into_iter()
            .map(|(item_id, c)| PayloadChange {
                item_id,
                version: c.version,
                metadata: c.metadata,
            })
            .collect())
    }

    /// Clears the outbox rows these applied changes cover (a newer change stays owed).
    pub async fn payload_changes_applied(
        &self,
        applied: &[PayloadChange],
    ) -> Result<(), StoreError> {
        for change in applied {
            sqlx::query("DELETE FROM payload_updates WHERE item_id = $1 AND version <= $2")
                .bind(change.item_id.as_str().to_owned())
                .bind(change.version)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
