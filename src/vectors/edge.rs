//! The embedded backend: Qdrant's engine (qdrant-edge) runs in-process on one shard directory,
//! `{vectors.path}/{vectors.collection}`, so no server is needed. The WAL holds a file lock:
//! one process per directory. The engine is synchronous, so every call runs on tokio's
//! blocking pool.
//!
//! Writes are serialised and each is followed by a flush of the WAL and every segment before
//! it returns. qdrant-edge 0.7.2 does not replay its WAL when it loads a shard, so a write is
//! durable only once its segments are flushed; and its `flush` panics if another write holds
//! the WAL, which the write lock rules out. Searches filter on the keyword-indexed payload
//! field `context_id` and run brute force over plain segments: HNSW is built only by
//! `EdgeShard::optimize`, which this store does not call.

use super::{SearchHit, VectorError, VectorPoint, VectorStore, point_id};
use crate::config::VectorSettings;
use crate::domain::{ContentHash, ContextId, ItemId};
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder,
    EdgeShard, EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter, JsonPath,
    Match, NamedQuery, OperationError, Payload, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, SearchRequest,
    UpdateOperation, VectorInternal, VectorStructInternal, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The file qdrant-edge writes when it creates a shard: its presence means "the shard exists".
const CONFIG_FILE: &str = "edge_config.json";
/// The payload field searches filter on.
const CONTEXT_FIELD: &str = "context_id";

/// The [`VectorStore`] over an embedded qdrant-edge shard.
pub struct EdgeVectorStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    collection: String,
    /// The shard once created or loaded; `None` until the first call that needs it.
    shard: Mutex<Option<Arc<Shard>>>,
    /// Held across update + flush (see the module docs).
    writes: Mutex<()>,
}

struct Shard {
    engine: EdgeShard,
    dimension: usize,
}

impl EdgeVectorStore {
    /// Prepares the store; touches no file. The shard is loaded or created by the first call
    /// that needs it, normally [`VectorStore::ensure_collection`].
    pub fn open(settings: &VectorSettings) -> Result<Self, VectorError> {
        if settings.path.is_empty() || settings.collection.is_empty() {
            return Err(VectorError::Backend(
                "vectors.path and vectors.collection must not be empty".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: Path::new(&settings.path).join(&settings.collection),
                collection: settings.collection.clone(),
                shard: Mutex::new(None),
                writes: Mutex::new(()),
            }),
        })
    }

    /// Runs `f` on the blocking pool: the engine does file I/O and takes blocking locks.
    async fn blocking<T, F>(&self, f: F) -> Result<T, VectorError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, VectorError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| VectorError::Backend(format!("qdrant-edge call failed: {e}")))?
    }
}

impl Inner {
    /// The shard: already open, loaded from disk, or (with `create_with`) created.
    fn shard(&self, create_with: Option<usize>) -> Result<Arc<Shard>, VectorError> {
        let mut slot = lock(&self.shard);
        if let Some(shard) = slot.as_ref() {
            return Ok(Arc::clone(shard));
        }
        let shard = if self.dir.join(CONFIG_FILE).exists() {
            Shard::load(&self.dir)?
        } else if let Some(dimension) = create_with {
            Shard::create(&self.dir, dimension)?
        } else {
            return Err(VectorError::Backend(format!(
                "collection {:?} does not exist yet; ensure_collection creates it",
                self.collection
            )));
        };
        let shard = Arc::new(shard);
        *slot = Some(Arc::clone(&shard));
        Ok(shard)
    }

    /// Applies one update and flushes it to disk.
    fn write(&self, shard: &Shard, operation: UpdateOperation) -> Result<(), VectorError> {
        let _writing = lock(&self.writes);
        shard.engine.update(operation).map_err(engine_error)?;
        shard.engine.flush();
        Ok(())
    }
}

impl Shard {
    fn create(dir: &Path, dimension: usize) -> Result<Self, VectorError> {
        if dimension == 0 {
            return Err(VectorError::Backend(
                "vector dimension must be positive".into(),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| VectorError::Backend(format!("creating {}: {e}", dir.display())))?;
        let vector = EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build();
        let config = EdgeConfigBuilder::new()
            .vector(DEFAULT_VECTOR_NAME, vector)
            .build();
        let engine = EdgeShard::new(dir, config).map_err(engine_error)?;
        let index = CreateIndex {
            field_name: context_field()?,
            field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
        };
        engine
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(index),
            ))
            .map_err(engine_error)?;
        engine.flush();
        Ok(Self { engine, dimension })
    }

    fn load(dir: &Path) -> Result<Self, VectorError> {
        let engine = EdgeShard::load(dir, None).map_err(engine_error)?;
        let dimension = engine
            .config()
            .vectors
            .get(DEFAULT_VECTOR_NAME)
            .map(|params| params.size)
            .ok_or_else(|| {
                VectorError::Backend(format!(
                    "the shard in {} has no unnamed dense vector",
                    dir.display()
                ))
            })?;
        Ok(Self { engine, dimension })
    }

    fn check_len(&self, what: &str, vector: &[f32]) -> Result<(), VectorError> {
        if vector.len() == self.dimension {
            return Ok(());
        }
        Err(VectorError::Rejected(format!(
            "{what} has {} dimensions; the collection holds {}",
            vector.len(),
            self.dimension
        )))
    }
}

#[async_trait::async_trait]
impl VectorStore for EdgeVectorStore {
    fn backend(&self) -> &'static str {
        "qdrant-edge"
    }

    async fn ensure_collection(&self, dimension: usize) -> Result<(), VectorError> {
        self.blocking(move |inner| {
            let shard = inner.shard(Some(dimension))?;
            if shard.dimension != dimension {
                return Err(VectorError::DimensionMismatch {
                    collection: inner.collection.clone(),
                    expected: dimension,
                    found: shard.dimension,
                });
            }
            Ok(())
        })
        .await
    }

    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let points = points
                .into_iter()
                .map(|point| {
                    shard.check_len(
                        &format!("the vector of item {}", point.item_id),
                        &point.vector,
                    )?;
                    Ok(to_persisted(point))
                })
                .collect::<Result<Vec<_>, VectorError>>()?;
            let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points),
            ));
            inner.write(&shard, operation)
        })
        .await
    }

    async fn search(
        &self,
        context: &ContextId,
        vector: Vec<f32>,
        k: usize,
    ) -> Result<Vec<SearchHit>, VectorError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let context = context.as_str().to_owned();
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            shard.check_len("the query vector", &vector)?;
            let condition = FieldCondition::new_match(context_field()?, Match::from(context));
            let request = SearchRequest {
                query: QueryEnum::Nearest(NamedQuery::default_dense(vector)),
                filter: Some(Filter::new_must(Condition::Field(condition))),
                params: None,
                limit: k,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: Some(WithVector::Bool(false)),
                score_threshold: None,
            };
            let found = shard.engine.search(request).map_err(engine_error)?;
            found
                .into_iter()
                .map(|scored| {
                    let payload = scored.payload.map(|p| p.0).unwrap_or_default();
                    Ok(SearchHit {
                        item_id: parsed(&payload, "item_id", ItemId::parse)?,
                        context_id: parsed(&payload, "context_id", ContextId::parse)?,
                        content_hash: ContentHash::from_stored(
                            text(&payload, "content_hash")?.to_owned(),
                        ),
                        score: scored.score,
                    })
                })
                .collect()
        })
        .await
    }

    async fn get(&self, items: &[ItemId]) -> Result<Vec<VectorPoint>, VectorError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids = items.iter().map(edge_id).collect::<Vec<_>>();
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let records = shard
                .engine
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(true)),
                )
                .map_err(engine_error)?;
            records
                .into_iter()
                .map(|record| {
                    let payload = record.payload.map(|p| p.0).unwrap_or_default();
                    from_stored(&payload, record.vector)
                })
                .collect()
        })
        .await
    }

    async fn count(&self) -> Result<u64, VectorError> {
        self.blocking(|inner| {
            let shard = inner.shard(None)?;
            let request = CountRequest {
                filter: None,
                exact: true,
            };
            let count = shard.engine.count(request).map_err(engine_error)?;
            Ok(count as u64)
        })
        .await
    }

    async fn delete(&self, items: &[ItemId]) -> Result<(), VectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let ids = items.iter().map(edge_id).collect::<Vec<_>>();
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let operation = UpdateOperation::PointOperation(PointOperations::DeletePoints { ids });
            inner.write(&shard, operation)
        })
        .await
    }
}

/// Locks a mutex, recovering it if a panicking engine call poisoned it: the data behind our
/// mutexes (`()` and an `Option<Arc<_>>`) cannot be left half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn engine_error(error: OperationError) -> VectorError {
    VectorError::Backend(error.to_string())
}

fn context_field() -> Result<JsonPath, VectorError> {
    CONTEXT_FIELD
        .parse()
        .map_err(|()| VectorError::Backend(format!("invalid payload path {CONTEXT_FIELD:?}")))
}

fn edge_id(item: &ItemId) -> PointId {
    PointId::Uuid(point_id(item))
}

fn to_persisted(point: VectorPoint) -> PointStructPersisted {
    let mut payload = Map::new();
    payload.insert("item_id".into(), point.item_id.as_str().into());
    payload.insert("context_id".into(), point.context_id.as_str().into());
    payload.insert("content_hash".into(), point.content_hash.as_str().into());
    payload.insert("model".into(), point.model.into());
    PointStructPersisted {
        id: edge_id(&point.item_id),
        vector: VectorStructPersisted::Single(point.vector),
        payload: Some(Payload(payload)),
    }
}

/// Rebuilds a [`VectorPoint`] from a stored point's payload and its default dense vector.
fn from_stored(
    payload: &Map<String, Value>,
    vector: Option<VectorStructInternal>,
) -> Result<VectorPoint, VectorError> {
    let item = text(payload, "item_id")?;
    let vector = match vector {
        Some(VectorStructInternal::Single(vector)) => Some(vector),
        Some(VectorStructInternal::Named(mut named)) => match named.remove(DEFAULT_VECTOR_NAME) {
            Some(VectorInternal::Dense(vector)) => Some(vector),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| VectorError::Backend(format!("point of item {item} has no dense vector")))?;
    Ok(VectorPoint {
        item_id: parsed(payload, "item_id", ItemId::parse)?,
        context_id: parsed(payload, "context_id", ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(payload, "content_hash")?.to_owned()),
        model: text(payload, "model")?.to_owned(),
        vector,
    })
}

/// A payload field parsed into its domain type.
fn parsed<T>(
    payload: &Map<String, Value>,
    key: &str,
    parse: impl FnOnce(String) -> Result<T, crate::domain::ParseError>,
) -> Result<T, VectorError> {
    parse(text(payload, key)?.to_owned())
        .map_err(|e| VectorError::Backend(format!("stored point's {key}: {e}")))
}

fn text<'a>(payload: &'a Map<String, Value>, key: &str) -> Result<&'a str, VectorError> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| VectorError::Backend(format!("stored point lacks payload field {key:?}")))
}
