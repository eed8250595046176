//! A job's tenant: whose work it is, for fairness. Among jobs of one priority the planner and
//! the embedding pool take turns by tenant first, then by job within a tenant, so a tenant with
//! a hundred jobs gets no more of the quota than one with a single job. A job without a tenant
//! is a tenant of its own.

use super::ParseError;
use serde::{Deserialize, Serialize};

/// 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: impl Into<String>) -> Result<Self, ParseError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ParseError(format!(
                "tenant {:?} must be 1 to {} visible ASCII characters (no spaces)",
                raw.chars().take(40).collect::<String>(),
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tenant {
    type Error = ParseError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> Self {
        t.0
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_ascii_of_bounded_length() {
        assert_eq!(Tenant::parse("acme-eu/1").unwrap().as_str(), "acme-eu/1");
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(129)] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Tenant::parse("x".repeat(128)).is_ok());
        let json: Result<Tenant, _> = serde_json::from_str("\"a b\"");
        assert!(json.is_err());
    }
}
