//! What travels on the Redis streams, and how it is encoded there.
//!
//! Every message is a stream entry with a schema version field `v` and one payload field. A
//! message that does not decode is a [`Malformed`] entry: the intake dead-letters it with the
//! reason and acknowledges it, and never passes it on.

mod job_message;
mod settlement;
mod task_message;

pub use job_message::JobMessage;
pub use settlement::{ItemOutcome, OutcomeKind, Settlement};
pub use task_message::{TaskItem, TaskMessage};

use std::collections::HashMap;

/// The schema version written in every entry's `v` field.
pub const SCHEMA_VERSION: &str = "1";

/// Why a stream entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed entry: {0}")]
pub struct Malformed(pub String);

/// A stream entry's fields, as raw bytes.
pub type EntryFields = HashMap<String, Vec<u8>>;

/// A message that can be written to and read from a stream entry.
pub trait StreamMessage: Sized + Send + 'static {
    /// What the message is called in logs and dead letters.
    const KIND: &'static str;

    fn encode(&self) -> Vec<(&'static str, String)>;

    fn decode(fields: &EntryFields) -> Result<Self, Malformed>;
}

/// Reads a UTF-8 field, checking the schema version on the way.
pub(crate) fn text_field<'a>(fields: &'a EntryFields, name: &str) -> Result<&'a str, Malformed> {
    match fields.get("v").map(|v| v.as_slice()) {
        Some(v) if v == SCHEMA_VERSION.as_bytes() => {}
        Some(v) => {
            return Err(Malformed(format!(
                "unsupported schema version {:?}",
                String::from_utf8_lossy(v)
            )));
        }
        None => return Err(Malformed("missing field \"v\" (schema version)".into())),
    }
    let raw = fields
        .get(name)
        .ok_or_else(|| Malformed(format!("missing field {name:?}")))?;
    std::str::from_utf8(raw).map_err(|_| Malformed(format!("field {name:?} is not UTF-8")))
}
