//! A point's payload, the same JSON object in both backends: its provenance (item, context,
//! content hash, model, dimension, generation, version) and the item's metadata under
//! `metadata`. A mixed collection can never happen silently: every point says which model,
//! dimension and generation made it.

use super::{PointRecord, SearchHit, VectorError, VectorPoint, point_id};
use crate::domain::{ContentHash, ContextId, ItemId, Metadata};
use serde_json::{Map, Value};

pub const ITEM_ID: &str = "item_id";
/// Keyword-indexed: every search filters on it.
pub const CONTEXT_ID: &str = "context_id";
pub const CONTENT_HASH: &str = "content_hash";
pub const MODEL: &str = "model";
pub const DIMENSION: &str = "dimension";
pub const GENERATION: &str = "generation";
/// Integer-indexed: every write is gated on it.
pub const VERSION: &str = "version";
/// The item's metadata object; a search filter on field `k` reads `metadata.k`.
pub const METADATA: &str = "metadata";

/// The payload path a metadata filter on `key` reads.
pub fn metadata_path(key: &str) -> String {
    format!("{METADATA}.{key}")
}

/// The payload of a point.
pub fn of(point: &VectorPoint) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert(ITEM_ID.into(), point.item_id.as_str().into());
    payload.insert(CONTEXT_ID.into(), point.context_id.as_str().into());
    payload.insert(CONTENT_HASH.into(), point.content_hash.as_str().into());
    payload.insert(MODEL.into(), point.model.clone().into());
    payload.insert(DIMENSION.into(), point.vector.len().into());
    payload.insert(GENERATION.into(), point.generation.into());
    payload.insert(VERSION.into(), point.version.into());
    payload.insert(METADATA.into(), point.metadata.to_value());
    payload
}

/// The payload fields a metadata update sets.
pub fn of_metadata(version: i64, metadata: &Metadata) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert(VERSION.into(), version.into());
    payload.insert(METADATA.into(), metadata.to_value());
    payload
}

fn text<'a>(payload: &'a Map<String, Value>, key: &str) -> Result<&'a str, VectorError> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| VectorError::Backend(format!("stored point lacks payload field {key:?}")))
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

/// An integer field; 0 when absent (points written before the field existed).
fn integer(payload: &Map<String, Value>, key: &str) -> Result<i64, VectorError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| VectorError::Backend(format!("stored point's {key} is not an integer"))),
    }
}

/// A stored point's record, from its payload. The dimension is the payload's, or the vector's
/// length for points written before the field existed (`fallback_dimension`).
pub fn record(
    id: uuid::Uuid,
    payload: &Map<String, Value>,
    fallback_dimension: usize,
) -> Result<PointRecord, VectorError> {
    let dimension = match integer(payload, DIMENSION)? {
        0 => fallback_dimension,
        n => usize::try_from(n).unwrap_or(0),
    };
    Ok(PointRecord {
        point_id: id,
        item_id: parsed(payload, ITEM_ID, ItemId::parse)?,
        context_id: parsed(payload, CONTEXT_ID, ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(payload, CONTENT_HASH)?.to_owned()),
        model: text(payload, MODEL)?.to_owned(),
        dimension,
        generation: integer(payload, GENERATION)?,
        version: integer(payload, VERSION)?,
    })
}

/// A stored point, from its payload and vector.
pub fn point(payload: &Map<String, Value>, vector: Vec<f32>) -> Result<VectorPoint, VectorError> {
    let item_id = parsed(payload, ITEM_ID, ItemId::parse)?;
    let metadata = match payload.get(METADATA) {
        None | Some(Value::Null) => Metadata::default(),
        Some(Value::Object(fields)) => Metadata::from_stored(Some(
            &serde_json::to_string(fields).expect("a JSON map always serialises"),
        ))
        .map_err(|e| VectorError::Backend(e.0))?,
        Some(_) => {
            return Err(VectorError::Backend(format!(
                "point of item {item_id}: metadata is not an object"
            )));
        }
    };
    Ok(VectorPoint {
        context_id: parsed(payload, CONTEXT_ID, ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(payload, CONTENT_HASH)?.to_owned()),
        model: text(payload, MODEL)?.to_owned(),
        generation: integer(payload, GENERATION)?,
        version: integer(payload, VERSION)?,
        metadata,
        vector,
        item_id,
    })
}

/// A search hit, from a scored point's payload.
pub fn hit(payload: &Map<String, Value>, score: f32) -> Result<SearchHit, VectorError> {
    Ok(SearchHit {
        item_id: parsed(payload, ITEM_ID, ItemId::parse)?,
        context_id: parsed(payload, CONTEXT_ID, ContextId::parse)?,
        content_hash: ContentHash::from_stored(text(payload, CONTENT_HASH)?.to_owned()),
        generation: integer(payload, GENERATION)?,
        version: integer(payload, VERSION)?,
        score,
    })
}

/// Checks that a record's point id is the one its item id derives to (a point written by
/// someone else under our payload names would not be).
pub fn is_own(record: &PointRecord) -> bool {
    point_id(&record.item_id) == record.point_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_round_trips_through_its_payload() {
        let p = VectorPoint {
            item_id: ItemId::parse("doc-1").unwrap(),
            context_id: ContextId::parse("ctx").unwrap(),
            content_hash: ContentHash::from_stored("ab".into()),
            model: "m".into(),
            generation: 2,
            version: 7,
            metadata: Metadata::parse(serde_json::json!({"tenant": "acme"}), 100).unwrap(),
            vector: vec![0.5, 0.5],
        };
        let payload = of(&p);
        assert_eq!(payload[DIMENSION], 2);
        assert_eq!(point(&payload, p.vector.clone()).unwrap(), p);
        let r = record(point_id(&p.item_id), &payload, 0).unwrap();
        assert!(is_own(&r));
        assert_eq!((r.generation, r.version, r.dimension), (2, 7, 2));
        let mut old = payload.clone();
        old.remove(VERSION);
        old.remove(DIMENSION);
        let r = record(point_id(&p.item_id), &old, 2).unwrap();
        assert_eq!((r.version, r.dimension), (0, 2));
        let mut bad = payload;
        bad.insert(VERSION.into(), "x".into());
        assert!(record(point_id(&p.item_id), &bad, 0).is_err());
    }
}
