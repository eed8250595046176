//! An item's text and its content hash. The hash (SHA-256 of the UTF-8 text) is what decides
//! whether an item changed and whether its stored vector is current.

use super::ParseError;
use sha2::{Digest, Sha256};
use std::fmt;

/// Non-empty text within the configured size limit, without the NUL character (PostgreSQL's
/// text cannot hold U+0000, so every backend refuses it alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemContent(String);

impl ItemContent {
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, ParseError> {
        if raw.contains('\0') {
            return Err(ParseError(
                "must not contain the NUL character (U+0000)".into(),
            ));
        }
        if raw.trim().is_empty() {
            return Err(ParseError("content must not be empty".into()));
        }
        if raw.len() > max_bytes {
            return Err(ParseError(format!(
                "content is {} bytes; the limit is {max_bytes}",
                raw.len()
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> ContentHash {
        ContentHash::of(&self.0)
    }
}

/// Hex SHA-256 of an item's content.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
pub struct ContentHash(String);

impl ContentHash {
    pub fn of(text: &str) -> Self {
        Self(hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// Wraps a hash read back from the store.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_checked() {
        assert!(ItemContent::parse("hello".into(), 10).is_ok());
        assert!(ItemContent::parse("   ".into(), 10).is_err());
        assert!(ItemContent::parse("x".repeat(11), 10).is_err());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            ContentHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
