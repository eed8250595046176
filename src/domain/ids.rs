//! Identifiers. Context and item ids are chosen by the producer (its own primary keys), so they
//! are checked for length and alphabet; job ids are UUIDv7, time-ordered for keyset listing.

use super::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

const MAX_ID_LEN: usize = 128;

fn check_external_id(kind: &str, raw: &str) -> Result<(), ParseError> {
    if raw.is_empty() {
        return Err(ParseError(format!("{kind} id must not be empty")));
    }
    if raw.len() > MAX_ID_LEN {
        return Err(ParseError(format!(
            "{kind} id is {} bytes long; the limit is {MAX_ID_LEN}",
            raw.len()
        )));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(ParseError(format!(
            "{kind} id {:?} contains {bad:?}; allowed are ASCII letters, digits and - _ . :",
            truncate_for_message(raw)
        )));
    }
    Ok(())
}

/// Shortens a caller's input before echoing it in an error message.
fn truncate_for_message(raw: &str) -> String {
    raw.chars().take(40).collect()
}

macro_rules! external_id {
    ($name:ident, $kind:literal, $description:literal, $pattern:literal, $check:expr) => {
        #[doc = $description]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
        #[serde(transparent)]
        #[schema(description = $description, pattern = $pattern, example = "doc-1")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: impl Into<String>) -> Result<Self, ParseError> {
                let raw = raw.into();
                let check: fn(&str) -> Result<(), ParseError> = $check;
                check(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

external_id!(
    ContextId,
    "context",
    "A context id: 1 to 128 ASCII letters, digits, `-`, `_`, `.` or `:`.",
    "^[A-Za-z0-9._:-]{1,128}$",
    |raw| check_external_id("context", raw)
);
external_id!(
    DocumentId,
    "document",
    "A document id: 1 to 120 ASCII letters, digits, `-`, `_`, `.` or `:`; its chunks are the items `{document id}#{n}`.",
    "^[A-Za-z0-9._:-]{1,120}$",
    |raw| {
        check_external_id("document", raw)?;
        if raw.len() > DocumentId::MAX_LEN {
            return Err(ParseError(format!(
                "document id is {} bytes long; the limit is {}",
                raw.len(),
                DocumentId::MAX_LEN
            )));
        }
        Ok(())
    }
);
external_id!(
    ItemId,
    "item",
    "An item id: 1 to 128 ASCII letters, digits, `-`, `_`, `.` or `:`; a document's chunk is `{document id}#{n}`.",
    "^[A-Za-z0-9._:-]{1,120}(#[0-9]{1,7})?$|^[A-Za-z0-9._:-]{121,128}$",
    |raw| match raw.split_once('#') {
        None => check_external_id("item", raw),
        Some((document, n)) => {
            DocumentId::parse(document)?;
            if n.is_empty() || n.len() > 7 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError(format!(
                    "item id {:?}: after # comes a chunk number (1 to 7 digits)",
                    truncate_for_message(raw)
                )));
            }
            Ok(())
        }
    }
);

impl DocumentId {
    pub const MAX_LEN: usize = 120;

    /// The item id of this document's chunk `n`.
    pub fn chunk(&self, n: usize) -> ItemId {
        ItemId(format!("{}#{n}", self.0))
    }

    /// The least and the first-past item ids of this document's chunks (`#` is 0x23, `$`
    /// 0x24): every chunk id `{id}#{n}` sorts in [low, high).
    pub fn chunk_range(&self) -> (String, String) {
        (format!("{}#", self.0), format!("{}$", self.0))
    }
}

impl ItemId {
    /// Whether this is a document's chunk (`{document id}#{n}`), made by document ingestion
    /// only.
    pub fn is_chunk(&self) -> bool {
        self.0.contains('#')
    }
}

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(raw).map(Self).map_err(|_| {
            ParseError(format!(
                "job id {:?} is not a UUID",
                truncate_for_message(raw)
            ))
        })
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_checked() {
        assert!(ItemId::parse("doc-1:part_2.a").is_ok());
        assert!(ItemId::parse("").is_err());
        assert!(ItemId::parse("a b").is_err());
        assert!(ItemId::parse("é").is_err());
        assert!(ItemId::parse("x".repeat(129)).is_err());
        assert!(ContextId::parse("x".repeat(128)).is_ok());
        assert!(ItemId::parse("doc-1#12").unwrap().is_chunk());
        assert!(ItemId::parse("doc-1#").is_err());
        assert!(ItemId::parse("doc-1#x").is_err());
        assert!(ItemId::parse("a#1#2").is_err());
        assert!(ItemId::parse(format!("{}#1", "x".repeat(121))).is_err());
        assert!(ContextId::parse("a#1").is_err());
        let doc = DocumentId::parse("manual.v2").unwrap();
        assert_eq!(doc.chunk(3).as_str(), "manual.v2#3");
        let (low, high) = doc.chunk_range();
        assert!(low.as_str() < "manual.v2#9999999" && "manual.v2#9999999" < high.as_str());
        assert!(!("manual.v2.x" >= low.as_str() && "manual.v2.x" < high.as_str()));
    }

    #[test]
    fn job_ids_round_trip() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()).unwrap(), id);
        assert!(JobId::parse("nope").is_err());
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<ItemId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<ItemId>("\"not ok\"").is_err());
    }
}
