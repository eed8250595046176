//! An item's metadata — the backend's own fields (tenant, document type, language), a JSON
//! object stored with the item and written into its point's payload — and the filter a search
//! applies to it. Both are parsed once at the edge: a [`Metadata`] is always an object within
//! the size limit, kept in one canonical form (keys sorted at every level) so that "changed" is
//! a comparison of text; a [`MetadataFilter`] is a bounded list of `key = one of values`.

use super::ParseError;
use serde_json::{Map, Value};

/// A JSON object of the item's own fields, canonical (keys sorted at every level).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(Map<String, Value>);

/// Deepest nesting accepted in metadata (an object inside an object … counts each level).
const MAX_DEPTH: usize = 8;

impl Metadata {
    /// Parses metadata sent by a producer: a JSON object whose canonical text is at most
    /// `max_bytes`, nested at most eight levels, with no NUL character anywhere (PostgreSQL's
    /// text cannot hold it).
    pub fn parse(raw: Value, max_bytes: usize) -> Result<Self, ParseError> {
        let Value::Object(fields) = raw else {
            return Err(ParseError("must be a JSON object".into()));
        };
        let canonical = canonical(Value::Object(fields), 1)?;
        let Value::Object(fields) = canonical else {
            unreachable!("an object stays an object")
        };
        let metadata = Self(fields);
        let size = metadata.to_text().len();
        if size > max_bytes {
            return Err(ParseError(format!(
                "is {size} bytes as JSON; the limit is {max_bytes} (limits.max_metadata_bytes)"
            )));
        }
        Ok(metadata)
    }

    /// Metadata read back from the store (written by [`Metadata::to_text`]).
    pub fn from_stored(text: Option<&str>) -> Result<Self, ParseError> {
        match text {
            None | Some("") => Ok(Self::default()),
            Some(text) => match serde_json::from_str(text) {
                Ok(Value::Object(fields)) => Ok(Self(fields)),
                Ok(_) => Err(ParseError("stored metadata is not an object".into())),
                Err(e) => Err(ParseError(format!("stored metadata: {e}"))),
            },
        }
    }

    /// The canonical JSON text, as stored in SQL and compared.
    pub fn to_text(&self) -> String {
        serde_json::to_string(&self.0).expect("a JSON map always serialises")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// The value with keys sorted at every level; refuses NUL and deep nesting.
fn canonical(value: Value, depth: usize) -> Result<Value, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError(format!(
            "is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let no_nul = |s: &str| {
        if s.contains('\0') {
            Err(ParseError(
                "must not contain the NUL character (U+0000)".into(),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match value {
        Value::String(s) => {
            no_nul(&s)?;
            Value::String(s)
        }
        Value::Array(values) => Value::Array(
            values
                .into_iter()
                .map(|v| canonical(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => {
            let mut sorted: Vec<(String, Value)> = fields.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::with_capacity(sorted.len());
            for (key, v) in sorted {
                no_nul(&key)?;
                out.insert(key, canonical(v, depth + 1)?);
            }
            Value::Object(out)
        }
        other => other,
    })
}

/// A value a filter compares a metadata field with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

/// One condition: the field `key` (a top-level metadata key) equals one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFilter {
    pub key: String,
    pub values: Vec<FilterValue>,
}

/// Every condition must hold (an empty filter matches every point).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataFilter(pub Vec<FieldFilter>);

const MAX_FILTER_FIELDS: usize = 16;
const MAX_FILTER_VALUES: usize = 64;

impl MetadataFilter {
    /// Parses `{"tenant": "acme", "year": [2024, 2025], "public": true}`: each key a top-level
    /// metadata field (letters, digits, `_` and `-`, at most 64), each value a string, an
    /// integer or a boolean, or a non-empty list of them (any of which may match).
    pub fn parse(raw: Value) -> Result<Self, ParseError> {
        let Value::Object(fields) = raw else {
            return Err(ParseError(
                "must be an object of metadata fields to values".into(),
            ));
        };
        if fields.len() > MAX_FILTER_FIELDS {
            return Err(ParseError(format!(
                "has {} fields; the limit is {MAX_FILTER_FIELDS}",
                fields.len()
            )));
        }
        let mut conditions = Vec::with_capacity(fields.len());
        for (key, value) in fields {
            let shown: String = key.chars().take(40).collect();
            if key.is_empty()
                || key.len() > 64
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ParseError(format!(
                    "field {shown:?}: a key is 1 to 64 letters, digits, '_' or '-'"
                )));
            }
            let values = match value {
                Value::Array(values) if values.is_empty() => {
                    return Err(ParseError(format!(
                        "field {shown:?}: the list of values is empty"
                    )));
                }
                Value::Array(values) if values.len() > MAX_FILTER_VALUES => {
                    return Err(ParseError(format!(
                        "field {shown:?}: {} values; the limit is {MAX_FILTER_VALUES}",
                        values.len()
                    )));
                }
                Value::Array(values) => values,
                one => vec![one],
            };
            let values = values
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(FilterValue::Keyword(s)),
                    Value::Bool(b) => Ok(FilterValue::Bool(b)),
                    Value::Number(n) => n.as_i64().map(FilterValue::Integer).ok_or_else(|| {
                        ParseError(format!("field {shown:?}: numbers must be integers"))
                    }),
                    _ => Err(ParseError(format!(
                        "field {shown:?}: values are strings, integers or booleans"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            conditions.push(FieldFilter { key, values });
        }
        Ok(Self(conditions))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `metadata` passes the filter (the same rule the vector stores apply).
    pub fn matches(&self, metadata: &Metadata) -> bool {
        self.0.iter().all(|condition| {
            let Some(found) = metadata.as_map().get(&condition.key) else {
                return false;
            };
            let candidates: Vec<&Value> = match found {
                Value::Array(values) => values.iter().collect(),
                one => vec![one],
            };
            candidates.iter().any(|v| {
                condition.values.iter().any(|want| match (want, v) {
                    (FilterValue::Keyword(s), Value::String(t)) => s == t,
                    (FilterValue::Integer(i), Value::Number(n)) => n.as_i64() == Some(*i),
                    (FilterValue::Bool(b), Value::Bool(c)) => b == c,
                    _ => false,
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_canonical_and_bounded() {
        let a = Metadata::parse(json!({"b": 1, "a": {"d": 2, "c": 3}}), 100).unwrap();
        let b = Metadata::parse(json!({"a": {"c": 3, "d": 2}, "b": 1}), 100).unwrap();
        assert_eq!(a.to_text(), b.to_text());
        assert_eq!(a.to_text(), r#"{"a":{"c":3,"d":2},"b":1}"#);
        assert_eq!(Metadata::from_stored(Some(&a.to_text())).unwrap(), a);
        assert!(Metadata::parse(json!([1]), 100).is_err());
        assert!(Metadata::parse(json!({"k": "x".repeat(100)}), 100).is_err());
        assert!(Metadata::parse(json!({"k": "a\u{0}b"}), 100).is_err());
        let deep = (0..10).fold(json!(1), |v, _| json!({ "x": v }));
        assert!(Metadata::parse(deep, 1000).is_err());
    }

    #[test]
    fn filters_parse_and_match() {
        let filter =
            MetadataFilter::parse(json!({"tenant": "acme", "year": [2024, 2025]})).unwrap();
        let m = |v| Metadata::parse(v, 1000).unwrap();
        assert!(filter.matches(&m(json!({"tenant": "acme", "year": 2025}))));
        assert!(!filter.matches(&m(json!({"tenant": "acme", "year": 2023}))));
        assert!(!filter.matches(&m(json!({"year": 2024}))));
        assert!(filter.matches(&m(json!({"tenant": ["x", "acme"], "year": 2024}))));
        assert!(MetadataFilter::parse(json!({"a.b": 1})).is_err());
        assert!(MetadataFilter::parse(json!({"a": 1.5})).is_err());
        assert!(MetadataFilter::parse(json!({"a": []})).is_err());
        assert!(MetadataFilter::parse(json!({"a": {"b": 1}})).is_err());
        assert!(MetadataFilter::parse(json!("x")).is_err());
        assert!(MetadataFilter::default().matches(&Metadata::default()));
    }
}
