//! The server backend: a Qdrant server reached over gRPC (qdrant-client), for deployments that
//! share one vector database between processes or machines.
//!
//! Writes pass `wait=true`, so they return once the server has applied them and they are
//! visible to search. Searches filter on the keyword-indexed payload field `context_id`. The
//! version gate of every write is one filter (per point: its id, and "version absent or at
//! most N", joined in a `should`): the upsert's `update_filter`, the points selector of a
//! set-payload or a delete.
//! Transport failures and busy or time-out answers are [`VectorError::Unavailable`] (worth
//! retrying); every other error is [`VectorError::Backend`]. The conversions between our types
//! and the gRPC messages are small pure functions, unit-tested below without a server. The API
//! key goes to the client builder only: it is never logged or formatted.

use super::{
    MetadataUpdate, PointPage, SearchHit, VectorError, VectorPoint, VectorStore, payload, point_id,
};
use crate::config::{Secret, VectorSettings};
use crate::domain::{ContextId, FilterValue, ItemId, MetadataFilter};
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::points_update_operation::{Operation, SetPayload};
use qdrant_client::qdrant::vector_output::Vector as OutputVector;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfig;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetCollectionInfoResponse, GetPointsBuilder,
    PointId, PointStruct, PointsUpdateOperation, Query, QueryPointsBuilder, Range, RetrievedPoint,
    ScoredPoint, ScrollPointsBuilder, UpdateBatchPointsBuilder, UpsertPointsBuilder, Value,
    VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use std::collections::HashMap;

/// The [`VectorStore`] over a Qdrant server. Deliberately not `Debug`: the client holds the
/// API key.
pub struct QdrantServerStore {
    client: Qdrant,
    collection: String,
}

impl QdrantServerStore {
    /// Builds the client. No request is sent: the connection opens on the first call (normally
    /// [`VectorStore::ensure_collection`]), so an unreachable server shows up there as
    /// [`VectorError::Unavailable`].
    pub async fn connect(
        settings: &VectorSettings,
        api_key: Option<&Secret>,
    ) -> Result<Self, VectorError> {
        let timeout = settings.timeout;
        let client = Qdrant::from_url(&settings.url)
            .api_key(api_key.map(|key| key.expose().to_owned()))
            .timeout(timeout)
            .connect_timeout(timeout)
            // The check runs a blocking request and prints to stdout; skip it.
            .skip_compatibility_check()
            .build()
            .map_err(map_error)?;
        Ok(Self {
            client,
            collection: settings.collection.clone(),
        })
    }
}

#[async_trait::async_trait]
impl VectorStore for QdrantServerStore {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    async fn ensure_collection(&self, dimension: usize) -> Result<(), VectorError> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(map_error)?;
        if exists {
            let info = self
                .client
                .collection_info(&self.collection)
                .await
                .map_err(map_error)?;
            check_dimension(&self.collection, dimension, &info)?;
        } else {
            let vectors = VectorParamsBuilder::new(dimension as u64, Distance::Cosine);
            self.client
                .create_collection(
                    CreateCollectionBuilder::new(&self.collection).vectors_config(vectors),
                )
                .await
                .map_err(map_error)?;
        }
        // Creating an index that exists is accepted, so collections made before the version
        // index get it too.
        for (field, kind) in [
            (payload::CONTEXT_ID, FieldType::Keyword),
            (payload::VERSION, FieldType::Integer),
        ] {
            let index =
                CreateFieldIndexCollectionBuilder::new(&self.collection, field, kind).wait(true);
            self.client
                .create_field_index(index)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }

    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let gate = version_gate(points.iter().map(|p| (&p.item_id, p.version)));
        let points = points.into_iter().map(to_point_struct).collect::<Vec<_>>();
        self.client
            .upsert_points(
                UpsertPointsBuilder::new(&self.collection, points)
                    .update_filter(gate)
                    .wait(true),
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn set_metadata(&self, updates: Vec<MetadataUpdate>) -> Result<(), VectorError> {
        if updates.is_empty() {
            return Ok(());
        }
        let operations = updates
            .iter()
            .map(|update| PointsUpdateOperation {
                operation: Some(Operation::SetPayload(SetPayload {
                    payload: Payload::from(payload::of_metadata(update.version, &update.metadata))
                        .into(),
                    // Only a point holding at most this version takes the update (the same
                    // version is the same metadata, so a drifted payload is repaired).
                    points_selector: Some(version_gate([(&update.item_id, update.version)]).into()),
                    ..Default::default()
                })),
            })
            .collect::<Vec<_>>();
        self.client
            .update_points_batch(
                UpdateBatchPointsBuilder::new(&self.collection, operations).wait(true),
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn delete(&self, items: &[(ItemId, i64)]) -> Result<(), VectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let gate = version_gate(items.iter().map(|(item, version)| (item, *version)));
        let request = DeletePointsBuilder::new(&self.collection)
            .points(gate)
            .wait(true);
        self.client
            .delete_points(request)
            .await
            .map_err(map_error)?;
        Ok(())
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
        let request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(vector))
            .filter(search_filter(context, filter))
            .limit(k as u64)
            .with_payload(true);
        let response = self.client.query(request).await.map_err(map_error)?;
        response.result.iter().map(hit_from_scored).collect()
    }

    async fn get(&self, items: &[ItemId]) -> Result<Vec<VectorPoint>, VectorError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = GetPointsBuilder::new(&self.collection, point_ids(items))
            .with_payload(true)
            .with_vectors(true);
        let response = self.client.get_points(request).await.map_err(map_error)?;
        response.result.iter().map(point_from_retrieved).collect()
    }

    async fn scroll(
        &self,
        from: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<PointPage, VectorError> {
        let mut request = ScrollPointsBuilder::new(&self.collection)
            .limit(u32::try_from(limit.max(1)).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(false);
        if let Some(from) = from {
            request = request.offset(PointId::from(from.to_string()));
        }
        let response = self.client.scroll(request).await.map_err(map_error)?;
        let points = response
            .result
            .iter()
            .map(|point| {
                let id = uuid_of(point.id.as_ref())?;
                payload::record(id, &json_payload(&point.payload), 0)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = response
            .next_page_offset
            .as_ref()
            .map(|id| uuid_of(Some(id)))
            .transpose()?;
        Ok(PointPage { points, next })
    }

    async fn count(&self) -> Result<u64, VectorError> {
        let request = CountPointsBuilder::new(&self.collection).exact(true);
        let response = self.client.count(request).await.map_err(map_error)?;
        response
            .result
            .map(|result| result.count)
            .ok_or_else(|| VectorError::Backend("count answer without a result".into()))
    }

    async fn drop_collection(&self) -> Result<(), VectorError> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(map_error)?;
        if exists {
            self.client
                .delete_collection(&self.collection)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }
}

/// The gRPC point id of an item: its UUIDv5 as a string.
fn server_point_id(item: &ItemId) -> PointId {
    PointId::from(point_id(item).to_string())
}

fn point_ids(items: &[ItemId]) -> Vec<PointId> {
    items.iter().map(server_point_id).collect()
}

fn uuid_of(id: Option<&PointId>) -> Result<uuid::Uuid, VectorError> {
    match id.and_then(|id| id.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(text)) => uuid::Uuid::parse_str(text)
            .map_err(|e| VectorError::Backend(format!("point id {text:?}: {e}"))),
        Some(PointIdOptions::Num(n)) => Err(VectorError::Backend(format!(
            "point {n} has a numeric id; embedq writes UUIDs only"
        ))),
        None => Err(VectorError::Backend("a point without an id".into())),
    }
}

/// A gRPC payload as JSON, for the shared payload readers.
fn json_payload(fields: &HashMap<String, Value>) -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from(Payload::from(fields.clone()))
}

fn to_point_struct(point: VectorPoint) -> PointStruct {
    let fields = Payload::from(payload::of(&point));
    PointStruct::new(server_point_id(&point.item_id), point.vector, fields)
}

/// Matches the points of these items that hold at most the given version (or no version).
fn version_gate<'a>(items: impl IntoIterator<Item = (&'a ItemId, i64)>) -> Filter {
    Filter::should(items.into_iter().map(|(item, version)| {
        let older = Filter::should([
            Condition::is_empty(payload::VERSION),
            Condition::range(
                payload::VERSION,
                Range {
                    lte: Some(version as f64),
                    ..Default::default()
                },
            ),
        ]);
        Condition::from(Filter::must([
            Condition::has_id([server_point_id(item)]),
            Condition::from(older),
        ]))
    }))
}

/// The points of one context whose metadata passes `filter`.
fn search_filter(context: &ContextId, filter: &MetadataFilter) -> Filter {
    let mut must = vec![Condition::matches(
        payload::CONTEXT_ID,
        context.as_str().to_owned(),
    )];
    for field in &filter.0 {
        let key = payload::metadata_path(&field.key);
        let any_of = field.values.iter().map(|value| match value {
            FilterValue::Keyword(s) => Condition::matches(key.clone(), s.clone()),
            FilterValue::Integer(i) => Condition::matches(key.clone(), *i),
            FilterValue::Bool(b) => Condition::matches(key.clone(), *b),
        });
        must.push(Condition::from(Filter::should(any_of)));
    }
    Filter::must(must)
}

fn hit_from_scored(scored: &ScoredPoint) -> Result<SearchHit, VectorError> {
    payload::hit(&json_payload(&scored.payload), scored.score)
}

fn point_from_retrieved(point: &RetrievedPoint) -> Result<VectorPoint, VectorError> {
    let fields = json_payload(&point.payload);
    let vector = match point.vectors.as_ref().and_then(|v| v.get_vector()) {
        Some(OutputVector::Dense(dense)) => dense.data,
        _ => {
            let item = fields
                .get(payload::ITEM_ID)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            return Err(VectorError::Backend(format!(
                "point of item {item} has no unnamed dense vector"
            )));
        }
    };
    payload::point(&fields, vector)
}

/// The size of the collection's unnamed dense vector, compared with the model's.
fn check_dimension(
    collection: &str,
    expected: usize,
    info: &GetCollectionInfoResponse,
) -> Result<(), VectorError> {
    let config = info
        .result
        .as_ref()
        .and_then(|info| info.config.as_ref())
        .and_then(|config| config.params.as_ref())
        .and_then(|params| params.vectors_config.as_ref())
        .and_then(|vectors| vectors.config.as_ref());
    let Some(VectorsConfig::Params(params)) = config else {
        return Err(VectorError::Backend(format!(
            "collection {collection:?} has no unnamed dense vector"
        )));
    };
    let found = usize::try_from(params.size).unwrap_or(usize::MAX);
    if found != expected {
        return Err(VectorError::DimensionMismatch {
            collection: collection.to_owned(),
            expected,
            found,
        });
    }
    Ok(())
}

// gRPC status codes (stable across gRPC implementations).
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const INVALID_ARGUMENT: i32 = 3;
const ABORTED: i32 = 10;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

/// Whether a gRPC status is worth retrying. qdrant-client reports a failed connection as
/// INTERNAL "Failed to connect to …", so that one message counts as transient too.
fn is_transient_status(code: i32, message: &str) -> bool {
    match code {
        CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE => {
            true
        }
        INTERNAL => message.starts_with("Failed to connect"),
        _ => false,
    }
}

/// The error of a gRPC answer with status `code`.
fn status_error(code: i32, name: &str, message: &str) -> VectorError {
    let text = format!("qdrant: {name}: {message}");
    if is_transient_status(code, message) {
        VectorError::Unavailable(text)
    } else if code == INVALID_ARGUMENT {
        VectorError::Rejected(text)
    } else {
        VectorError::Backend(text)
    }
}

fn map_error(error: QdrantError) -> VectorError {
    match &error {
        QdrantError::ResponseError { status } => status_error(
            i32::from(status.code()),
            &format!("{:?}", status.code()),
            status.message(),
        ),
        QdrantError::ResourceExhaustedError { .. } | QdrantError::Io(_) => {
            VectorError::Unavailable(format!("qdrant: {error}"))
        }
        _ => VectorError::Backend(format!("qdrant: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContentHash, Metadata};
    use qdrant_client::qdrant::vectors_output::VectorsOptions;
    use qdrant_client::qdrant::{
        CollectionConfig, CollectionInfo, CollectionParams, DenseVector, VectorOutput,
        VectorParamsMap, Vectors, VectorsConfig as VectorsConfigMessage, VectorsOutput,
    };

    fn point() -> VectorPoint {
        VectorPoint {
            item_id: ItemId::parse("doc-1").unwrap(),
            context_id: ContextId::parse("ctx-a").unwrap(),
            content_hash: ContentHash::from_stored("abc123".into()),
            model: "m1".into(),
            generation: 1,
            version: 3,
            metadata: Metadata::parse(serde_json::json!({"tenant": "acme", "n": [1, 2]}), 100)
                .unwrap(),
            vector: vec![0.6, 0.8],
        }
    }

    fn text<'a>(payload: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
        payload.get(key).and_then(Value::as_str).map(String::as_str)
    }

    fn payload_of(point: &VectorPoint) -> HashMap<String, Value> {
        to_point_struct(point.clone()).payload
    }

    #[test]
    fn point_struct_carries_id_vector_and_payload() {
        let p = point();
        let built = to_point_struct(p.clone());
        let expected_id = point_id(&p.item_id).to_string();
        assert_eq!(
            built.id.and_then(|id| id.point_id_options),
            Some(PointIdOptions::Uuid(expected_id))
        );
        assert_eq!(built.vectors, Some(Vectors::from(vec![0.6, 0.8])));
        let payload = &built.payload;
        assert_eq!(payload.len(), 8);
        assert_eq!(text(payload, "item_id"), Some("doc-1"));
        assert_eq!(text(payload, "context_id"), Some("ctx-a"));
        assert_eq!(text(payload, "content_hash"), Some("abc123"));
        assert_eq!(text(payload, "model"), Some("m1"));
        assert_eq!(payload["version"].as_integer(), Some(3));
        assert_eq!(payload["dimension"].as_integer(), Some(2));
    }

    #[test]
    fn retrieved_point_round_trips() {
        let p = point();
        let retrieved = RetrievedPoint {
            id: Some(server_point_id(&p.item_id)),
            payload: payload_of(&p),
            vectors: Some(VectorsOutput {
                vectors_options: Some(VectorsOptions::Vector(VectorOutput {
                    vector: Some(OutputVector::Dense(DenseVector {
                        data: p.vector.clone(),
                    })),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        assert_eq!(point_from_retrieved(&retrieved).unwrap(), p);
    }

    #[test]
    fn retrieved_point_without_vector_or_payload_is_an_error() {
        let p = point();
        let no_vector = RetrievedPoint {
            payload: payload_of(&p),
            ..Default::default()
        };
        assert!(matches!(
            point_from_retrieved(&no_vector),
            Err(VectorError::Backend(_))
        ));
        let mut bad_payload = payload_of(&p);
        bad_payload.insert("context_id".into(), Value::from(7_i64));
        let retrieved = RetrievedPoint {
            payload: bad_payload,
            ..Default::default()
        };
        assert!(matches!(
            point_from_retrieved(&retrieved),
            Err(VectorError::Backend(_))
        ));
    }

    #[test]
    fn scored_point_becomes_a_hit() {
        let p = point();
        let scored = ScoredPoint {
            payload: payload_of(&p),
            score: 0.93,
            ..Default::default()
        };
        let hit = hit_from_scored(&scored).unwrap();
        assert_eq!(
            hit,
            SearchHit {
                item_id: ItemId::parse("doc-1").unwrap(),
                context_id: ContextId::parse("ctx-a").unwrap(),
                content_hash: ContentHash::from_stored("abc123".into()),
                generation: 1,
                version: 3,
                score: 0.93,
            }
        );
        assert!(hit_from_scored(&ScoredPoint::default()).is_err());
    }

    #[test]
    fn search_filter_is_the_context_and_each_field_any_of() {
        let metadata = MetadataFilter::parse(serde_json::json!({"tenant": ["a", "b"]})).unwrap();
        let filter = search_filter(&ContextId::parse("ctx-a").unwrap(), &metadata);
        assert_eq!(filter.must.len(), 2);
        assert!(filter.should.is_empty() && filter.must_not.is_empty());
        assert_eq!(
            filter.must[0],
            Condition::matches("context_id", "ctx-a".to_owned())
        );
        assert_eq!(
            filter.must[1],
            Condition::from(Filter::should([
                Condition::matches("metadata.tenant", "a".to_owned()),
                Condition::matches("metadata.tenant", "b".to_owned()),
            ]))
        );
    }

    #[test]
    fn the_version_gate_names_each_point_with_its_version() {
        let item = ItemId::parse("doc-1").unwrap();
        let gate = version_gate([(&item, 4)]);
        assert_eq!(gate.should.len(), 1);
        let text = format!("{gate:?}");
        assert!(text.contains(&point_id(&item).to_string()), "{text}");
        assert!(text.contains("lte: Some(4.0)"), "{text}");
    }

    fn info_with(config: Option<VectorsConfig>) -> GetCollectionInfoResponse {
        GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        vectors_config: Some(VectorsConfigMessage { config }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn dimension_is_read_from_collection_info() {
        let params = VectorParamsBuilder::new(3, Distance::Cosine).build();
        let info = info_with(Some(VectorsConfig::Params(params)));
        assert!(check_dimension("c", 3, &info).is_ok());
        match check_dimension("c", 4, &info) {
            Err(VectorError::DimensionMismatch {
                collection,
                expected,
                found,
            }) => assert_eq!((collection.as_str(), expected, found), ("c", 4, 3)),
            other => panic!("expected a dimension mismatch, got {other:?}"),
        }
        let named = info_with(Some(VectorsConfig::ParamsMap(VectorParamsMap::default())));
        assert!(matches!(
            check_dimension("c", 3, &named),
            Err(VectorError::Backend(_))
        ));
        assert!(matches!(
            check_dimension("c", 3, &GetCollectionInfoResponse::default()),
            Err(VectorError::Backend(_))
        ));
    }

    #[test]
    fn transport_errors_are_transient() {
        assert!(is_transient_status(UNAVAILABLE, "connection refused"));
        assert!(is_transient_status(DEADLINE_EXCEEDED, "timeout"));
        assert!(is_transient_status(
            INTERNAL,
            "Failed to connect to http://x:6334/"
        ));
        assert!(!is_transient_status(INTERNAL, "segment error"));
        assert!(!is_transient_status(3, "wrong vector dimension")); // INVALID_ARGUMENT
        assert!(!is_transient_status(5, "collection not found")); // NOT_FOUND

        let io = QdrantError::Io(std::io::Error::other("reset"));
        assert!(map_error(io).is_transient());
        let conversion = QdrantError::ConversionError("bad".into());
        assert!(matches!(map_error(conversion), VectorError::Backend(_)));
        let invalid = status_error(
            INVALID_ARGUMENT,
            "InvalidArgument",
            "wrong vector dimension",
        );
        assert!(matches!(invalid, VectorError::Rejected(_)) && !invalid.is_transient());
        assert!(status_error(UNAVAILABLE, "Unavailable", "down").is_transient());
    }

    #[tokio::test]
    async fn connect_sends_nothing_and_keeps_the_key_out_of_errors() {
        let mut settings = crate::config::Settings::defaults().vectors;
        settings.url = "http://127.0.0.1:1".into();
        settings.timeout = std::time::Duration::from_millis(500);
        let key = Secret::new("super-secret-key");
        let store = QdrantServerStore::connect(&settings, Some(&key))
            .await
            .unwrap();
        let error = store.count().await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(!error.to_string().contains("super-secret-key"));
    }
}
