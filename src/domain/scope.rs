//! What a job covers. Each scope maps to one keyset-paged query over the items table.

use super::{ContextId, ItemId};
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
