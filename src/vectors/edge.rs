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
//!
//! The version gate of every write is a filter per point — its id and "version absent or at
//! most N" — joined in one `should`: a conditional upsert leaves the existing points the filter
//! does not match, a filtered set-payload or delete touches only those it matches.

use super::{
    MetadataUpdate, PointPage, SearchHit, VectorError, VectorPoint, VectorStore, payload, point_id,
};
use crate::config::VectorSettings;
use crate::domain::{ContextId, FilterValue, ItemId, MetadataFilter};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, ConditionalInsertOperation, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME,
    Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldCondition,
    FieldIndexOperations, Filter, HasIdCondition, IsEmptyCondition, JsonPath, Match, NamedQuery,
    OperationError, Payload, PayloadFieldSchema, PayloadOps, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, Range, ScrollRequest,
    SearchRequest, SetPayloadOp, UpdateOperation, VectorInternal, VectorStructInternal,
    VectorStructPersisted, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The file qdrant-edge writes when it creates a shard: its presence means "the shard exists".
const CONFIG_FILE: &str = "edge_config.json";

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

    /// Applies updates in order and flushes them to disk.
    fn write(
        &self,
        shard: &Shard,
        operations: impl IntoIterator<Item = UpdateOperation>,
    ) -> Result<(), VectorError> {
        let _writing = lock(&self.writes);
        let mut result = Ok(());
        for operation in operations {
            if let Err(e) = shard.engine.update(operation) {
                result = Err(engine_error(e));
                break;
            }
        }
        shard.engine.flush();
        result
    }

    /// Removes the shard's directory (the shard is closed first).
    fn remove(&self) -> Result<(), VectorError> {
        let _writing = lock(&self.writes);
        let mut slot = lock(&self.shard);
        *slot = None;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VectorError::Backend(format!(
                "removing {}: {e}",
                self.dir.display()
            ))),
        }
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
        for (field, schema) in [
            (payload::CONTEXT_ID, PayloadSchemaType::Keyword),
            (payload::VERSION, PayloadSchemaType::Integer),
        ] {
            let index = CreateIndex {
                field_name: path(field)?,
                field_schema: Some(PayloadFieldSchema::FieldType(schema)),
            };
            engine
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(index),
                ))
                .map_err(engine_error)?;
        }
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

    fn collection(&self) -> &str {
        &self.inner.collection
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
            let gate = version_gate(points.iter().map(|p| (&p.item_id, p.version)));
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
            let operation = UpdateOperation::PointOperation(
                PointOperations::UpsertPointsConditional(ConditionalInsertOperation {
                    points_op: PointInsertOperations::PointsList(points),
                    condition: gate,
                    update_mode: None,
                }),
            );
            inner.write(&shard, [operation])
        })
        .await
    }

    async fn set_metadata(&self, updates: Vec<MetadataUpdate>) -> Result<(), VectorError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let operations = updates.into_iter().map(|update| {
                // A point holding a higher version keeps its payload; the same version is
                // the same metadata in SQL, so writing it again repairs a drifted payload.
                let gate = version_gate([(&update.item_id, update.version)]);
                UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                    payload: Payload(payload::of_metadata(update.version, &update.metadata)),
                    points: None,
                    filter: Some(gate),
                    key: None,
                }))
            });
            inner.write(&shard, operations.collect::<Vec<_>>())
        })
        .await
    }

    async fn delete(&self, items: &[(ItemId, i64)]) -> Result<(), VectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let gate = version_gate(items.iter().map(|(item, version)| (item, *version)));
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let operation =
                UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(gate));
            inner.write(&shard, [operation])
        })
        .await
    }

    async fn search(
        &self,
        context: &ContextId,
        vector: Vec<f32>,
        k: usize,
        filter: &MetadataFilter,
    ) -> Result<Vec<SearchHit>, VectorError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let filter = search_filter(context, filter)?;
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            shard.check_len("the query vector", &vector)?;
            let request = SearchRequest {
                query: QueryEnum::Nearest(NamedQuery::default_dense(vector)),
                filter: Some(filter),
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
                    let fields = scored.payload.map(|p| p.0).unwrap_or_default();
                    payload::hit(&fields, scored.score)
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
                    let fields = record.payload.map(|p| p.0).unwrap_or_default();
                    payload::point(&fields, dense(&fields, record.vector)?)
                })
                .collect()
        })
        .await
    }

    async fn scroll(
        &self,
        from: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<PointPage, VectorError> {
        self.blocking(move |inner| {
            let shard = inner.shard(None)?;
            let request = ScrollRequest {
                offset: from.map(PointId::Uuid),
                limit: Some(limit.max(1)),
                filter: None,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            };
            let (records, next) = shard.engine.scroll(request).map_err(engine_error)?;
            let points = records
                .into_iter()
                .map(|record| {
                    let id = uuid_of(record.id)?;
                    let fields = record.payload.map(|p| p.0).unwrap_or_default();
                    payload::record(id, &fields, shard.dimension)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let next = next.map(uuid_of).transpose()?;
            Ok(PointPage { points, next })
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

    async fn drop_collection(&self) -> Result<(), VectorError> {
        self.blocking(|inner| inner.remove()).await
    }
}

/// Matches the points of these items that hold at most the given version (or no version).
fn version_gate<'a>(items: impl IntoIterator<Item = (&'a ItemId, i64)>) -> Filter {
    let per_point = items
        .into_iter()
        .map(|(item, version)| {
            let id: HasIdCondition = std::iter::once(edge_id(item)).collect();
            let at_most = Range {
                lt: None,
                gt: None,
                gte: None,
                lte: Some(OrderedFloat(version as f64)),
            };
            let version_key = path(payload::VERSION).expect("a valid path");
            let older = Filter {
                should: Some(vec![
                    Condition::IsEmpty(IsEmptyCondition::from(version_key.clone())),
                    Condition::Field(FieldCondition::new_range(version_key, at_most)),
                ]),
                ..Filter::default()
            };
            Condition::Filter(Filter {
                must: Some(vec![Condition::HasId(id), Condition::Filter(older)]),
                ..Filter::default()
            })
        })
        .collect();
    Filter {
        should: Some(per_point),
        ..Filter::default()
    }
}

/// The points of one context whose metadata passes `filter`.
fn search_filter(context: &ContextId, filter: &MetadataFilter) -> Result<Filter, VectorError> {
    let mut must = vec![Condition::Field(FieldCondition::new_match(
        path(payload::CONTEXT_ID)?,
        Match::from(context.as_str().to_owned()),
    ))];
    for field in &filter.0 {
        let key = path(&payload::metadata_path(&field.key))?;
        let any_of = field
            .values
            .iter()
            .map(|value| {
                let matching = match value {
                    FilterValue::Keyword(s) => Match::from(s.clone()),
                    FilterValue::Integer(i) => Match::from(*i),
                    FilterValue::Bool(b) => Match::from(*b),
                };
                Condition::Field(FieldCondition::new_match(key.clone(), matching))
            })
            .collect();
        must.push(Condition::Filter(Filter {
            should: Some(any_of),
            ..Filter::default()
        }));
    }
    Ok(Filter {
        must: Some(must),
        ..Filter::default()
    })
}

/// Locks a mutex, recovering it if a panicking engine call poisoned it: the data behind our
/// mutexes (`()` and an `Option<Arc<_>>`) cannot be left half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn engine_error(error: OperationError) -> VectorError {
    VectorError::Backend(error.to_string())
}

fn path(field: &str) -> Result<JsonPath, VectorError> {
    field
        .parse()
        .map_err(|()| VectorError::Backend(format!("invalid payload path {field:?}")))
}

fn edge_id(item: &ItemId) -> PointId {
    PointId::Uuid(point_id(item))
}

fn uuid_of(id: PointId) -> Result<uuid::Uuid, VectorError> {
    match id {
        PointId::Uuid(uuid) => Ok(uuid),
        PointId::NumId(n) => Err(VectorError::Backend(format!(
            "point {n} has a numeric id; embedq writes UUIDs only"
        ))),
    }
}

fn to_persisted(point: VectorPoint) -> PointStructPersisted {
    let fields = payload::of(&point);
    PointStructPersisted {
        id: edge_id(&point.item_id),
        vector: VectorStructPersisted::Single(point.vector),
        payload: Some(Payload(fields)),
    }
}

/// The default dense vector of a stored point.
fn dense(
    fields: &Map<String, Value>,
    vector: Option<VectorStructInternal>,
) -> Result<Vec<f32>, VectorError> {
    match vector {
        Some(VectorStructInternal::Single(vector)) => Some(vector),
        Some(VectorStructInternal::Named(mut named)) => match named.remove(DEFAULT_VECTOR_NAME) {
            Some(VectorInternal::Dense(vector)) => Some(vector),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| {
        let item = fields
            .get(payload::ITEM_ID)
            .and_then(Value::as_str)
            .unwrap_or("?");
        VectorError::Backend(format!("point of item {item} has no dense vector"))
    })
}
