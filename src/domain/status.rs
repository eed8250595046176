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
