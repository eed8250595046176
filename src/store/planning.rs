//! The planner's queries: keyset pages of a job's scope, and the job's planning progress.
//!
//! Every page query is `... WHERE <scope> AND id > cursor ORDER BY id LIMIT n`, served by the
//! primary key or a matching index, so a page costs the same at item 10 and at item 10 million.

use super::placeholders;
use super::{Store, StoreError};
use crate::domain::{ItemId, JobId, JobScope, now_millis};
use sqlx::Row;

/// Membership rows per INSERT: 2 parameters each.
const MEMBERSHIP_CHUNK: usize = 1000;

/// An item to put in a task, with the attempts it has used so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub id: ItemId,
    pub attempts: i64,
}

/// A page of the scope and the cursor after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePage {
    pub items: Vec<PlannedItem>,
    /// Where the next page starts; `None` when the scope is exhausted.
    pub next_cursor: Option<String>,
}

/// An item of a scope with what a dry run needs to count its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeText {
    pub id: ItemId,
    pub content: String,
    /// COMPLETED with its current content and the model asked about: a job would skip it.
    pub up_to_date: bool,
}

/// A COMPLETED item as a reconcile job compares it with its point.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedItem {
    pub id: ItemId,
    pub content_hash: crate::domain::ContentHash,
    pub version: i64,
    pub metadata: crate::domain::Metadata,
}

impl Store {
    /// The next page of COMPLETED items after `after` (exclusive), by id.
    pub async fn completed_page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<CompletedItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, content_hash, version, metadata FROM items \
             WHERE status = 'COMPLETED' AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.to_owned())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id = ItemId::parse(r.try_get::<String, _>("id")?)
                    .map_err(|e| StoreError::Corrupt(e.0))?;
                let metadata: Option<String> = r.try_get("metadata")?;
                Ok(CompletedItem {
                    metadata: crate::domain::Metadata::from_stored(metadata.as_deref())
                        .map_err(|e| StoreError::Corrupt(format!("metadata of item {id}: {e}")))?,
                    content_hash: crate::domain::ContentHash::from_stored(
                        r.try_get("content_hash")?,
                    ),
                    version: r.try_get("version")?,
                    id,
                })
            })
            .collect()
    }

    /// The rows of the next page of `scope` after `cursor` (exclusive), with `columns`, and the
    /// cursor after them. The one definition of each scope's page.
    async fn scope_rows(
        &self,
        scope: &JobScope,
        model: &str,
        cursor: Option<&str>,
        limit: usize,
        columns: &str,
    ) -> Result<(Vec<sqlx::any::AnyRow>, Option<String>), StoreError> {
        let after = cursor.unwrap_or("").to_owned();
        let lim = limit as i64;
        let rows = match scope {
            JobScope::Context { context_id } => {
                sqlx::query(&format!(
                    "SELECT {columns} FROM items WHERE context_id = $1 AND id > $2 \
                     ORDER BY id LIMIT $3"
                ))
                .bind(context_id.as_str().to_owned())
                .bind(after)
                .bind(lim)
                .fetch_all(&self.pool)
                .await?
            }
            JobScope::All => {
                sqlx::query(&format!(
                    "SELECT {columns} FROM items WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(lim)
                .fetch_all(&self.pool)
                .await?
            }
            JobScope::Failed => {
                sqlx::query(&format!(
                    "SELECT {columns} FROM items WHERE status = 'FAILED' AND id > $1 \
                     ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(lim)
                .fetch_all(&self.pool)
                .await?
            }
            JobScope::StaleModel => {
                sqlx::query(&format!(
                    "SELECT {columns} FROM items \
                     WHERE (embedded_model IS NULL OR embedded_model <> $1) AND id > $2 \
                     ORDER BY id LIMIT $3"
                ))
                .bind(model.to_owned())
                .bind(after)
                .bind(lim)
                .fetch_all(&self.pool)
                .await?
            }
            JobScope::Items { item_ids } => {
                // The list is sorted and bounded when the job is created; page through it.
                let start = item_ids.partition_point(|id| id.as_str() <= after.as_str());
                let window = &item_ids[start..(start + limit).min(item_ids.len())];
                let Some(last) = window.last() else {
                    return Ok((Vec::new(), None));
                };
                let sql = format!(
                    "SELECT {columns} FROM items WHERE id IN ({}) ORDER BY id",
                    placeholders::list(1, window.len())
                );
                let mut q = sqlx::query(&sql);
                for id in window {
                    q = q.bind(id.as_str().to_owned());
                }
                let rows = q.fetch_all(&self.pool).await?;
                return Ok((rows, Some(last.as_str().to_owned())));
            }
        };
        let next = match rows.last() {
            Some(row) => Some(row.try_get::<String, _>("id")?),
            None => None,
        };
        Ok((rows, next))
    }

    /// The next page of `scope` after `cursor` (exclusive).
    pub async fn scope_page(
        &self,
        scope: &JobScope,
        model: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScopePage, StoreError> {
        let (rows, next_cursor) = self
            .scope_rows(scope, model, cursor, limit, "id, attempts")
            .await?;
        Ok(ScopePage {
            items: rows_to_items(&rows)?,
            next_cursor,
        })
    }

    /// The next page of `scope` with each item's text and whether a job would skip it.
    pub async fn scope_texts_page(
        &self,
        scope: &JobScope,
        model: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ScopeText>, Option<String>), StoreError> {
        let (rows, next) = self
            .scope_rows(
                scope,
                model,
                cursor,
                limit,
                "id, content, status, content_hash, embedded_model, embedded_hash",
            )
            .await?;
        let texts = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let status: String = r.try_get("status")?;
                let hash: String = r.try_get("content_hash")?;
                let embedded_model: Option<String> = r.try_get("embedded_model")?;
                let embedded_hash: Option<String> = r.try_get("embedded_hash")?;
                Ok(ScopeText {
                    id: ItemId::parse(id).map_err(|e| StoreError::Corrupt(e.0))?,
                    content: r.try_get("content")?,
                    up_to_date: status == "COMPLETED"
                        && embedded_model.as_deref() == Some(model)
                        && embedded_hash.as_deref() == Some(hash.as_str()),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((texts, next))
    }

    /// QUEUED becomes RUNNING when planning starts (any other state is left alone), and the
    /// job's Redis state is recorded as living in `epoch`.
    pub async fn mark_job_running(&self, id: JobId, epoch: &str) -> Result<(), StoreError> {
        let now = now_millis();
        sqlx::query(
            "UPDATE jobs SET state = CASE WHEN state = 'QUEUED' THEN 'RUNNING' ELSE state END, \
             started_at = COALESCE(started_at, $2), epoch = $3, updated_at = $2 \
             WHERE id = $1 AND state IN ('QUEUED', 'RUNNING')",
        )
        .bind(id.to_string())
        .bind(now)
        .bind(epoch.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that these items belong to the job, before their tasks are written (so SQL
    /// holds at least what Redis holds). Writing a page's rows twice is harmless.
    pub async fn insert_membership(
        &self,
        job: JobId,
        items: &[PlannedItem],
    ) -> Result<(), StoreError> {
        for chunk in items.chunks(MEMBERSHIP_CHUNK) {
            let sql = format!(
                "INSERT INTO job_items (job_id, item_id) VALUES {} \
                 ON CONFLICT (job_id, item_id) DO NOTHING",
                placeholders::tuples_with(chunk.len(), 2, "")
            );
            let mut q = sqlx::query(&sql);
            for item in chunk {
                q = q.bind(job.to_string()).bind(item.id.as_str().to_owned());
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Mirrors the planning progress (cursor and items planned so far). Absolute values, so
    /// writing the same progress twice is harmless.
    pub async fn record_planning(
        &self,
        id: JobId,
        cursor: &str,
        planned: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET planning_cursor = $2, total = $3, updated_at = $4 \
             WHERE id = $1 AND planned_at IS NULL",
        )
        .bind(id.to_string())
        .bind(cursor.to_owned())
        .bind(planned)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Fixes the job's total. A job whose items are all accounted for (or that has none)
    /// ends here; otherwise the status writer (or a delete) ends it.
    pub async fn finish_planning(&self, id: JobId, planned: i64) -> Result<(), StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET total = $2, planned_at = $3, updated_at = $3 \
             WHERE id = $1 AND planned_at IS NULL",
        )
        .bind(id.to_string())
        .bind(planned)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::jobs::finish_if_done(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn rows_to_items(rows: &[sqlx::any::AnyRow]) -> Result<Vec<PlannedItem>, StoreError> {
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok(PlannedItem {
                id: ItemId::parse(id).map_err(|e| StoreError::Corrupt(e.0))?,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect()
}
