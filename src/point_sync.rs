//! What SQL's lifecycle changes owe the vector store, applied: the points of deleted items
//! removed (up to each tombstone's version) and metadata-only changes written into payloads.
//! The API applies them right after its commit; whatever failed stays in SQL (unswept
//! tombstones, the `payload_updates` outbox) and the reconciler's sweep applies it later. One
//! home for both paths, so the rule cannot drift between them.

use crate::store::{PayloadChange, Store, StoreError, Tombstone};
use crate::vectors::{MetadataUpdate, VectorError, VectorStore};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
}

/// What one sweep applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub points_removed: usize,
    pub payloads_updated: usize,
    pub tombstones_purged: u64,
}

/// Applies lifecycle changes to every collection that holds the items' points.
#[derive(Clone)]
pub struct PointSync {
    store: Store,
    vectors: Arc<dyn VectorStore>,
}

/// Owed changes younger than this are left to the request that made them.
const SWEEP_AFTER: Duration = Duration::from_secs(5);
/// How long a swept tombstone is kept: far longer than any write can stay in flight (a
/// worker holds vectors for at most five minutes), so an id made again continues its version.
const TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 3600);
const SWEEP_PAGE: usize = 500;

impl PointSync {
    pub fn new(store: Store, vectors: Arc<dyn VectorStore>) -> Self {
        Self { store, vectors }
    }

    /// Removes the points of deleted items and marks their tombstones swept.
    pub async fn remove_points(&self, tombstones: &[Tombstone]) -> Result<(), SyncError> {
        if tombstones.is_empty() {
            return Ok(());
        }
        let gates: Vec<_> = tombstones
            .iter()
            .map(|t| (t.item_id.clone(), t.version))
            .collect();
        self.vectors.delete(&gates).await?;
        self.store.mark_swept(tombstones).await?;
        Ok(())
    }

    /// Writes new metadata into the items' points and clears the outbox rows it covers.
    pub async fn apply_payloads(&self, changes: &[PayloadChange]) -> Result<(), SyncError> {
        if changes.is_empty() {
            return Ok(());
        }
        let updates = changes
            .iter()
            .map(|c| MetadataUpdate {
                item_id: c.item_id.clone(),
                version: c.version,
                metadata: c.metadata.clone(),
            })
            .collect();
        self.vectors.set_metadata(updates).await?;
        self.store.payload_changes_applied(changes).await?;
        Ok(())
    }

    /// Applies what the API could not: unswept tombstones and owed payload updates older than
    /// a few seconds, a page of each; then forgets old swept tombstones.
    pub async fn sweep(&self) -> Result<SweepReport, SyncError> {
        let now = crate::domain::now_millis();
        let before = now - SWEEP_AFTER.as_millis() as i64;
        let mut report = SweepReport::default();
        let tombstones = self.store.unswept_tombstones(before, SWEEP_PAGE).await?;
        self.remove_points(&tombstones).await?;
        report.points_removed = tombstones.len();
        let changes = self.store.owed_payload_changes(before, SWEEP_PAGE).await?;
        self.apply_payloads(&changes).await?;
        report.payloads_updated = changes.len();
        report.tombstones_purged = self
            .store
            .purge_tombstones(now - TOMBSTONE_RETENTION.as_millis() as i64)
            .await?;
        Ok(report)
    }
}
