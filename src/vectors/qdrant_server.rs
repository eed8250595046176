//! The server backend: a Qdrant server reached over gRPC (qdrant-client), for deployments that
//! share one vector database between processes or machines.
//!
//! Writes pass `wait=true`, so they return once the server has applied them and they are
//! visible to search. Searches filter on the keyword-indexed payload field `context_id`.
//! Transport failures and busy or time-out answers are [`VectorError::Unavailable`] (worth
//! retrying); every other error is [`VectorError::Backend`]. The conversions between our types
//! and the gRPC messages are small pure functions, unit-tested below without a server. The API
//! key goes to the client builder only: it is never logged or formatted.

use super::{SearchHit, VectorError, VectorPoint, VectorStore, point_id};
use crate::config::{Secret, VectorSettings};
use crate::domain::{ContentHash, ContextId, ItemId};
use qdrant_client::qdrant::vector_output::Vector as OutputVector;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfig;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetCollectionInfoResponse, GetPointsBuilder,
    PointId, PointStruct, PointsIdsList, Query, QueryPointsBuilder, RetrievedPoint, ScoredPoint,
    UpsertPointsBuilder, Value, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use std::collections::HashMap;

/// The payload field searches filter on.
const CONTEXT_FIELD: &str = "context_id";

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
            return check_dimension(&self.collection, dimension, &info);
        }
        let vectors = VectorParamsBuilder::new(dimension as u64, Distance::Cosine);
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&self.collection).vectors_config(vectors),
            )
            .await
            .map_err(map_error)?;
        let index = CreateFieldIndexCollectionBuilder::new(
            &self.collection,
            CONTEXT_FIELD,
            FieldType::Keyword,
        )
        .wait(true);
        self.client
            .create_field_index(index)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points.into_iter().map(to_point_struct).collect::<Vec<_>>();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(map_error)?;
        Ok(())
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
        let request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(vector))
            .filter(context_filter(context))
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

    async fn count(&self) -> Result<u64, VectorError> {
        let request = CountPointsBuilder::new(&self.collection).exact(true);
        let response = self.client.count(request).await.map_err(map_error)?;
        response
            .result
            .map(|result| result.count)
            .ok_or_else(|| VectorError::Backend("count answer without a result".into()))
    }

    async fn delete(&self, items: &[ItemId]) -> Result<(), VectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let request = DeletePointsBuilder::new(&self.collection)
            .points(PointsIdsList {
                ids: point_ids(items),
            })
            .wait(true);
        self.client
            .delete_points(request)
            .await
            .map_err(map_error)?;
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

fn to_point_struct(point: VectorPoint) -> PointStruct {
    let mut payload = Payload::new();
    payload.insert("item_id", point.item_id.as_str());
    payload.insert("context_id", point.context_id.as_str());
    payload.insert("content_hash", point.content_hash.as_str());
    payload.insert("model", point.model);
    PointStruct::new(server_point_id(&point.item_id), point.vector, payload)
}

fn context_filter(context: &ContextId) -> Filter {
    Filter::must([Condition::matches(
        CONTEXT_FIELD,
        context.as_str().to_owned(),
    )])
}

fn hit_from_scored(scored: &ScoredPoint) -> Result<SearchHit, VectorError> {
    Ok(SearchHit {
        item_id: parsed(&scored.payload, "item_id", ItemId::parse)?,
        context_id: parsed(&scored.payload, "context_id", ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(&scored.payload, "content_hash")?.to_owned()),
        score: scored.score,
    })
}

fn point_from_retrieved(point: &RetrievedPoint) -> Result<VectorPoint, VectorError> {
    let item = text(&point.payload, "item_id")?;
    let vector = match point.vectors.as_ref().and_then(|v| v.get_vector()) {
        Some(OutputVector::Dense(dense)) => dense.data,
        _ => {
            return Err(VectorError::Backend(format!(
                "point of item {item} has no unnamed dense vector"
            )));
        }
    };
    Ok(VectorPoint {
        item_id: parsed(&point.payload, "item_id", ItemId::parse)?,
        context_id: parsed(&point.payload, "context_id", ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(&point.payload, "content_hash")?.to_owned()),
        model: text(&point.payload, "model")?.to_owned(),
        vector,
    })
}

/// A payload field parsed into its domain type.
fn parsed<T>(
    payload: &HashMap<String, Value>,
    key: &str,
    parse: impl FnOnce(String) -> Result<T, crate::domain::ParseError>,
) -> Result<T, VectorError> {
    parse(text(payload, key)?.to_owned())
        .map_err(|e| VectorError::Backend(format!("stored point's {key}: {e}")))
}

fn text<'a>(payload: &'a HashMap<String, Value>, key: &str) -> Result<&'a str, VectorError> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .map(String::as_str)
        .ok_or_else(|| VectorError::Backend(format!("stored point lacks payload field {key:?}")))
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
    use qdrant_client::qdrant::point_id::PointIdOptions;
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
            vector: vec![0.6, 0.8],
        }
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
        assert_eq!(payload.len(), 4);
        assert_eq!(text(payload, "item_id").unwrap(), "doc-1");
        assert_eq!(text(payload, "context_id").unwrap(), "ctx-a");
        assert_eq!(text(payload, "content_hash").unwrap(), "abc123");
        assert_eq!(text(payload, "model").unwrap(), "m1");
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
                score: 0.93,
            }
        );
        assert!(hit_from_scored(&ScoredPoint::default()).is_err());
    }

    #[test]
    fn context_filter_is_one_must_match() {
        let filter = context_filter(&ContextId::parse("ctx-a").unwrap());
        assert_eq!(filter.must.len(), 1);
        assert!(filter.should.is_empty() && filter.must_not.is_empty());
        assert_eq!(
            filter.must[0],
            Condition::matches("context_id", "ctx-a".to_owned())
        );
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
