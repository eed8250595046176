//! A job's priority: which work every daemon takes first while the provider's quota is
//! shared. Interactive work (a user's edit) goes before normal work, normal before bulk
//! (a regeneration); within one priority the planner takes jobs in turn. The priority travels
//! with every task of the job (retries and reclaimed tasks keep it), and each priority has a
//! tasks stream of its own, so a bulk backlog never stands in front of an interactive task.

use super::ParseError;
use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// A few items someone is waiting for: taken before anything else.
    Interactive,
    /// The default of a job.
    #[default]
    Normal,
    /// Large regenerations: taken when nothing else waits.
    Bulk,
}

impl Priority {
    /// Every priority, the first taken first.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Normal, Priority::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Normal => "normal",
            Self::Bulk => "bulk",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "interactive" => Ok(Self::Interactive),
            "normal" => Ok(Self::Normal),
            "bulk" => Ok(Self::Bulk),
            other => Err(ParseError(format!(
                "unknown priority {:?}; the priorities are \"interactive\", \"normal\" and \"bulk\"",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    /// Its place in [`Priority::ALL`]: 0 is taken first.
    pub fn rank(self) -> usize {
        self as usize
    }

    pub fn is_normal(&self) -> bool {
        *self == Self::Normal
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_ranks_in_the_order_taken() {
        for (rank, p) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(Priority::parse(p.as_str()), Ok(p));
            assert_eq!(p.rank(), rank);
        }
        assert!(Priority::Interactive < Priority::Bulk);
        assert!(
            Priority::parse("urgent")
                .unwrap_err()
                .0
                .contains("interactive")
        );
        assert_eq!(Priority::default(), Priority::Normal);
    }
}
