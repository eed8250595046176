//! The states an item and a job go through, stored as upper-case text.

use super::ParseError;
use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    other => Err(ParseError(format!(
                        concat!("unknown ", stringify!($name), " {:?}"), other
                    ))),
                }
            }
        }
    };
}

text_enum!(ItemStatus {
    Pending => "PENDING",
    Processing => "PROCESSING",
    Completed => "COMPLETED",
    Failed => "FAILED",
});

text_enum!(JobState {
    Queued => "QUEUED",
    Running => "RUNNING",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Embed the items of the scope (skipping those already embedded with the same content
    /// and model).
    Embed,
    /// Compare SQL with the vector store and repair: delete points without an item, embed
    /// again the COMPLETED items whose point is missing or holds another hash or model,
    /// refresh stale payloads. Its findings are in the job's `result`.
    Reconcile,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embed => "embed",
            Self::Reconcile => "reconcile",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "embed" => Ok(Self::Embed),
            "reconcile" => Ok(Self::Reconcile),
            other => Err(ParseError(format!(
                "unknown job kind {:?}; the kinds are \"embed\" and \"reconcile\"",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

impl JobState {
    /// A job in a final state is never planned or counted again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["PENDING", "PROCESSING", "COMPLETED", "FAILED"] {
            assert_eq!(ItemStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(JobState::parse("DONE").is_err());
        assert!(JobState::Cancelled.is_final());
        assert!(!JobState::Running.is_final());
    }
}
