//! A document's chunks in SQL: the items `{document id}#{n}`, found by a range of ids (every
//! chunk id sorts between `{id}#` and `{id}$`), so no LIKE pattern is built from input.

use super::{Store, StoreError};
use crate::domain::{ContextId, DocumentId, ItemId};
use sqlx::Row;

impl Store {
    /// The chunks a document has now, each with its context, in id order.
    pub async fn document_chunks(
        &self,
        document: &DocumentId,
    ) -> Result<Vec<(ItemId, ContextId)>, StoreError> {
        let (low, high) = document.chunk_range();
        let rows =
            sqlx::query("SELECT id, context_id FROM items WHERE id >= $1 AND id < $2 ORDER BY id")
                .bind(low)
                .bind(high)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let context: String = r.try_get(1)?;
                Ok((
                    ItemId::parse(id).map_err(|e| StoreError::Corrupt(e.0))?,
                    ContextId::parse(context).map_err(|e| StoreError::Corrupt(e.0))?,
                ))
            })
            .collect()
    }

    /// How many of a document's chunks wait to be embedded (PENDING).
    pub async fn pending_document_chunks(&self, document: &DocumentId) -> Result<i64, StoreError> {
        let (low, high) = document.chunk_range();
        let row = sqlx::query(
            "SELECT COUNT(*) FROM items WHERE id >= $1 AND id < $2 AND status = 'PENDING'",
        )
        .bind(low)
        .bind(high)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}
