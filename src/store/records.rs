//! Rows as the store returns them, already parsed into domain types.

use super::StoreError;
use crate::domain::{
    ContentHash, ContextId, ItemId, ItemStatus, JobId, JobKind, JobScope, JobState, Metadata,
    Priority, Tenant,
};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// One item, as `GET /v1/items/{id}` shows it (without its content).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ItemRecord {
    pub id: ItemId,
    pub context_id: ContextId,
    pub status: ItemStatus,
    /// Attempts of the current content so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Hex SHA-256 of the current content.
    pub content_hash: ContentHash,
    /// The model of the stored vector, if any.
    pub embedded_model: Option<String>,
    /// The content hash the stored vector was made from.
    pub embedded_hash: Option<ContentHash>,
    /// Raised by every change of content or metadata; the stored point carries the version
    /// it was written at.
    pub version: i64,
    /// The item's own fields, as given (an empty object when none were).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

pub(super) const ITEM_COLUMNS: &str = "id, context_id, status, attempts, last_error, content_hash, \
     embedded_model, embedded_hash, version, metadata, created_at, updated_at";

impl ItemRecord {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let status: String = row.try_get("status")?;
        let id: String = row.try_get("id")?;
        let context: String = row.try_get("context_id")?;
        let corrupt = |e: crate::domain::ParseError| StoreError::Corrupt(e.0);
        Ok(Self {
            id: ItemId::parse(id).map_err(corrupt)?,
            context_id: ContextId::parse(context).map_err(corrupt)?,
            status: ItemStatus::parse(&status).map_err(corrupt)?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            content_hash: ContentHash::from_stored(row.try_get("content_hash")?),
            embedded_model: row.try_get("embedded_model")?,
            embedded_hash: row
                .try_get::<Option<String>, _>("embedded_hash")?
                .map(ContentHash::from_stored),
            version: row.try_get("version")?,
            metadata: Metadata::from_stored(
                row.try_get::<Option<String>, _>("metadata")?.as_deref(),
            )
            .map_err(corrupt)?
            .to_value(),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// One job with its counters (times in milliseconds since the Unix epoch).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub scope: JobScope,
    /// The embedding model the job uses.
    pub model: String,
    pub state: JobState,
    /// Which work is taken first: interactive, then normal, then bulk.
    pub priority: Priority,
    /// Whose work it is: jobs of one priority take turns by tenant, then by job.
    #[schema(value_type = Option<String>)]
    pub tenant: Option<Tenant>,
    /// Items in the scope (final once `planned` is true).
    pub total: i64,
    /// Items embedded by this job.
    pub completed: i64,
    /// Items that ended FAILED (each with its reason).
    pub failed: i64,
    /// Items already up to date.
    pub skipped: i64,
    /// Items deleted before the job reached them: `total = completed + failed + skipped +
    /// deleted` once the job ends.
    pub deleted: i64,
    /// Tokens the provider billed for the job's requests so far (its `usage`, else embedq's
    /// count): every request paid for, retried ones included.
    pub tokens: i64,
    /// Where planning stands (internal).
    pub planning_cursor: Option<String>,
    pub planned_at: Option<i64>,
    pub idempotency_key: Option<String>,
    /// Why the job failed as a whole, if it did.
    pub error: Option<String>,
    /// What the job found and did beyond its counters (a reconcile job's findings).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub(super) const JOB_COLUMNS: &str = "id, kind, scope, model, state, priority, tenant, total, completed, failed, \
     skipped, deleted, tokens, planning_cursor, planned_at, idempotency_key, error, result, created_at, \
     updated_at, started_at, finished_at";

impl JobRecord {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let id: String = row.try_get("id")?;
        let scope: String = row.try_get("scope")?;
        let state: String = row.try_get("state")?;
        Ok(Self {
            id: JobId::parse(&id).map_err(|e| StoreError::Corrupt(e.0))?,
            kind: JobKind::parse(&row.try_get::<String, _>("kind")?)
                .map_err(|e| StoreError::Corrupt(e.0))?,
            scope: serde_json::from_str(&scope)
                .map_err(|e| StoreError::Corrupt(format!("job {id} scope: {e}")))?,
            model: row.try_get("model")?,
            state: JobState::parse(&state).map_err(|e| StoreError::Corrupt(e.0))?,
            priority: Priority::parse(&row.try_get::<String, _>("priority")?)
                .map_err(|e| StoreError::Corrupt(e.0))?,
            tenant: row
                .try_get::<Option<String>, _>("tenant")?
                .map(Tenant::parse)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.0))?,
            total: row.try_get("total")?,
            completed: row.try_get("completed")?,
            failed: row.try_get("failed")?,
            skipped: row.try_get("skipped")?,
            deleted: row.try_get("deleted")?,
            tokens: row.try_get("tokens")?,
            planning_cursor: row.try_get("planning_cursor")?,
            planned_at: row.try_get("planned_at")?,
            idempotency_key: row.try_get("idempotency_key")?,
            error: row.try_get("error")?,
            result: row
                .try_get::<Option<String>, _>("result")?
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("job {id} result: {e}")))?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    /// Items with a final outcome.
    pub fn done(&self) -> i64 {
        self.completed + self.failed + self.skipped + self.deleted
    }
}
