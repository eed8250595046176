//! What a job covers. Each scope maps to one keyset-paged query over the items table.

use super::{ContextId, ItemId, ParseError};
use serde::{Deserialize, Serialize};

/// The set of items a job embeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobScope {
    /// Every item of one context.
    Context { context_id: ContextId },
    /// An explicit list of items (sorted and de-duplicated when the job is created).
    Items {
        #[schema(min_items = 1)]
        item_ids: Vec<ItemId>,
    },
    /// Every item.
    All,
    /// Items whose last attempt ended FAILED.
    Failed,
    /// Items never embedded, or embedded with a model other than the configured one.
    StaleModel,
}

impl JobScope {
    /// Parses a scope as the API and the jobs stream receive it. Unknown fields are refused for
    /// every kind: serde's `deny_unknown_fields` does not reach the variants without fields of
    /// an internally tagged enum (`{"type": "all", "extra": 1}` would pass). An explicit list
    /// must not be empty.
    pub fn from_json(raw: serde_json::Value) -> Result<Self, ParseError> {
        let fields = raw
            .as_object()
            .ok_or_else(|| ParseError("must be an object with a \"type\"".into()))?;
        let allowed: &[&str] = match fields.get("type").and_then(|t| t.as_str()) {
            Some("context") => &["type", "context_id"],
            Some("items") => &["type", "item_ids"],
            _ => &["type"],
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ParseError(format!(
                "unknown field {:?}; expected {}",
                unknown.chars().take(40).collect::<String>(),
                allowed.join(", ")
            )));
        }
        let scope: Self = serde_json::from_value(raw).map_err(|e| ParseError(e.to_string()))?;
        if matches!(&scope, Self::Items { item_ids } if item_ids.is_empty()) {
            return Err(ParseError("item_ids must not be empty".into()));
        }
        Ok(scope)
    }

    /// The priority of a job over this scope when its caller names none: a short list of
    /// items (someone edited them and waits) is interactive, anything else normal.
    pub fn default_priority(&self, interactive_max_items: usize) -> super::Priority {
        match self {
            Self::Items { item_ids } if item_ids.len() <= interactive_max_items => {
                super::Priority::Interactive
            }
            _ => super::Priority::Normal,
        }
    }

    /// Sorts and de-duplicates an explicit list of ids (the planner pages through it in order).
    pub fn normalise(&mut self) {
        if let Self::Items { item_ids } = self {
            item_ids.sort();
            item_ids.dedup();
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Context { .. } => "context",
            Self::Items { .. } => "items",
            Self::All => "all",
            Self::Failed => "failed",
            Self::StaleModel => "stale_model",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_json() {
        let s: JobScope = serde_json::from_str(r#"{"type":"context","context_id":"c1"}"#).unwrap();
        assert_eq!(s.kind(), "context");
        assert!(serde_json::from_str::<JobScope>(r#"{"type":"everything"}"#).is_err());
        assert!(
            serde_json::from_str::<JobScope>(r#"{"type":"items","item_ids":["a b"]}"#).is_err()
        );
    }
}
