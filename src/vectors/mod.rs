//! Where vectors live. [`VectorStore`] is the one interface the pipeline writes through and
//! search reads through, with two backends: an embedded Qdrant engine (qdrant-edge, files in
//! the data directory, the default) and a Qdrant server over gRPC (qdrant-client). One store
//! value is one collection: a model migration opens a second one for the new generation.
//!
//! Point ids derive from the item id (UUIDv5), so writing an item again overwrites its point.
//! Every point's payload carries its provenance (see [`payload`]): the item, its context, the
//! content hash, model, dimension and generation the vector was made with, the item's version
//! and its metadata. Every write is **gated by that version**: an upsert or a metadata update
//! leaves a point that already holds a higher version, and a delete removes a point only up to
//! the version it names. Item versions only grow, so whatever order concurrent writers reach
//! the store in, it ends holding the newest — the write that loses a race is dropped.

mod edge;
pub mod payload;
mod qdrant_server;

pub use edge::EdgeVectorStore;
pub use qdrant_server::QdrantServerStore;

use crate::config::{Secret, VectorBackend, VectorSettings};
use crate::domain::{ContentHash, ContextId, ItemId, Metadata, MetadataFilter};
use std::sync::Arc;

/// One item's vector with the payload stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    pub item_id: ItemId,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    pub model: String,
    /// The generation (collection) of the model the vector belongs to.
    pub generation: i64,
    /// The item's version when the point was written (0 for points written before versions).
    pub version: i64,
    pub metadata: Metadata,
    pub vector: Vec<f32>,
}

/// A stored point's payload, without its vector: what reconciliation compares with SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRecord {
    pub point_id: uuid::Uuid,
    pub item_id: ItemId,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    pub model: String,
    pub dimension: usize,
    pub generation: i64,
    pub version: i64,
}

/// New metadata for an item's point, at the item's version.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataUpdate {
    pub item_id: ItemId,
    pub version: i64,
    pub metadata: Metadata,
}

/// A nearest neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub item_id: ItemId,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    pub generation: i64,
    pub version: i64,
    pub score: f32,
}

/// A page of stored points in point-id order, and where the next page starts.
#[derive(Debug, Clone, Default)]
pub struct PointPage {
    pub points: Vec<PointRecord>,
    pub next: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum VectorError {
    /// The store cannot be reached or is busy: worth retrying.
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the point itself (a wrong dimension, an invalid payload): writing it
    /// again cannot help.
    #[error("the vector store refused the point: {0}")]
    Rejected(String),
    /// The collection exists with another dimension: a start-up error, never retried.
    #[error(
        "collection {collection:?} holds vectors of dimension {found}, but the model produces {expected}; \
         use another vectors.collection or re-create it"
    )]
    DimensionMismatch {
        collection: String,
        expected: usize,
        found: usize,
    },
    /// Any other error of the engine or the server. It may pass (a busy disk, a restarting
    /// node), so a write that meets it is tried again, within the attempt limit.
    #[error("vector store: {0}")]
    Backend(String),
}

impl VectorError {
    /// Whether writing the same points again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Backend(_))
    }
}

/// The namespace of point ids: UUIDv5(namespace, item id).
const POINT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1f_4f5e_8c1b_4d2e_9b7a_3e0c_5d4f_2a10);

/// The point id of an item: stable, so a repeated upsert overwrites the same point.
pub fn point_id(item: &ItemId) -> uuid::Uuid {
    uuid::Uuid::new_v5(&POINT_NAMESPACE, item.as_str().as_bytes())
}

#[async_trait::async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Short name for logs and readiness: "qdrant-edge" or "qdrant".
    fn backend(&self) -> &'static str;

    /// The collection this store reads and writes.
    fn collection(&self) -> &str;

    /// Creates the collection with `dimension` (cosine distance) if it is missing; fails with
    /// [`VectorError::DimensionMismatch`] if it exists with another dimension.
    async fn ensure_collection(&self, dimension: usize) -> Result<(), VectorError>;

    /// Upserts the points and returns once they are durable and visible to search. A point
    /// whose stored copy holds a higher version is left as it is.
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError>;

    /// Replaces the metadata (and the version) in the payload of the points that hold at most
    /// this version (the same version is the same metadata, so rewriting it repairs a payload
    /// that drifted); missing points are ignored. The vector is untouched.
    async fn set_metadata(&self, updates: Vec<MetadataUpdate>) -> Result<(), VectorError>;

    /// Removes the points of these items that hold at most the given version (or none); a
    /// point written since at a higher version stays.
    async fn delete(&self, items: &[(ItemId, i64)]) -> Result<(), VectorError>;

    /// The `k` nearest points of one context to `vector` whose metadata passes `filter`, best
    /// first.
    async fn search(
        &self,
        context: &ContextId,
        vector: Vec<f32>,
        k: usize,
        filter: &MetadataFilter,
    ) -> Result<Vec<SearchHit>, VectorError>;

    /// The stored points of these items (missing ones are left out), with their vectors.
    async fn get(&self, items: &[ItemId]) -> Result<Vec<VectorPoint>, VectorError>;

    /// Up to `limit` points in point-id order, from `from` (inclusive) or the first.
    async fn scroll(
        &self,
        from: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<PointPage, VectorError>;

    /// How many points the collection holds.
    async fn count(&self) -> Result<u64, VectorError>;

    /// Removes the whole collection (a dropped generation). Missing is not an error.
    async fn drop_collection(&self) -> Result<(), VectorError>;
}

/// Makes sure the collection holds vectors of `dimension`. An empty collection of another
/// dimension (a first start with the wrong `embedding.dimension`, fixed) is made again; a
/// populated one is an error (changing the dimension of stored vectors is a model change).
pub async fn prepare(store: &dyn VectorStore, dimension: usize) -> Result<(), VectorError> {
    match store.ensure_collection(dimension).await {
        Err(VectorError::DimensionMismatch { found, .. }) if store.count().await? == 0 => {
            tracing::info!(
                collection = store.collection(),
                from = found,
                to = dimension,
                "the empty collection is made again for the configured dimension"
            );
            store.drop_collection().await?;
            store.ensure_collection(dimension).await
        }
        other => other,
    }
}

/// Opens the configured backend. `api_key` (from `EMBEDQ_QDRANT_API_KEY`) is used by the
/// server backend only.
pub async fn open(
    settings: &VectorSettings,
    api_key: Option<&Secret>,
) -> Result<Arc<dyn VectorStore>, VectorError> {
    match settings.backend {
        VectorBackend::Qdrant => Ok(Arc::new(
            QdrantServerStore::connect(settings, api_key).await?,
        )),
        VectorBackend::Edge => Ok(Arc::new(EdgeVectorStore::open(settings)?)),
    }
}
