//! Domain types that are parsed once at the edge, so that an invalid id, an empty content or an
//! unknown scope cannot be built and never reaches the store or the queue.

mod content;
mod cron;
mod ids;
mod metadata;
mod priority;
mod scope;
mod status;
mod tenant;

pub use content::{ContentHash, ItemContent};
pub use cron::Cron;
pub use ids::{ContextId, DocumentId, ItemId, JobId};
pub use metadata::{FieldFilter, FilterValue, Metadata, MetadataFilter};
pub use priority::Priority;
pub use scope::JobScope;
pub use status::{ItemStatus, JobKind, JobState};
pub use tenant::Tenant;

/// Why an input was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Milliseconds since the Unix epoch, the one time representation stored in SQL.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
