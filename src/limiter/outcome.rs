//! The one classification of a provider's answer into a load signal.

use crate::providers::{Embedded, ProviderError, RateLimitHints};
use std::time::Duration;

/// What a call made under a permit says about the provider's load.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// Answered: the provider has room; its headers say how much budget is left.
    Success(RateLimitHints),
    /// A 429: everyone waits `retry_after` (or a default), and concurrency halves.
    RateLimited {
        retry_after: Option<Duration>,
        hints: RateLimitHints,
    },
    /// A 5xx, a time-out, a reset or a bad body: the provider is struggling; concurrency halves.
    Overloaded,
    /// No connection could be made: the outage circuit holds everyone.
    Unreachable,
    /// The provider answered, refusing the input or the caller (400, 401, 403, 404): it can be
    /// reached, and the answer says nothing about load.
    Refused,
    /// The permit was given back without a call.
    Unused,
}

impl CallOutcome {
    /// Classifies the result of one call.
    pub fn of(result: &Result<Embedded, ProviderError>) -> Self {
        match result {
            Ok(embedded) => Self::Success(embedded.hints),
            Err(ProviderError::Transient {
                rate_limited: true,
                retry_after,
                hints,
                ..
            }) => Self::RateLimited {
                retry_after: *retry_after,
                hints: *hints,
            },
            Err(ProviderError::Transient {
                unreachable: true, ..
            }) => Self::Unreachable,
            Err(ProviderError::Transient { .. }) => Self::Overloaded,
            Err(ProviderError::InvalidInput { .. } | ProviderError::Fatal { .. }) => Self::Refused,
        }
    }

    /// The label of `embedq_api_requests_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Success(_) => "ok",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded => "transient",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Unused => "unused",
        }
    }

    /// The provider answered something (so an outage, if there was one, is over).
    pub fn reached_provider(&self) -> bool {
        matches!(
            self,
            Self::Success(_) | Self::RateLimited { .. } | Self::Overloaded | Self::Refused
        )
    }

    /// A sign of overload: concurrency goes down.
    pub fn is_back_pressure(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Overloaded | Self::Unreachable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(rate_limited: bool, unreachable: bool) -> Result<Embedded, ProviderError> {
        Err(ProviderError::Transient {
            reason: "x".into(),
            retry_after: Some(Duration::from_millis(5)),
            rate_limited,
            unreachable,
            hints: RateLimitHints::default(),
        })
    }

    #[test]
    fn every_answer_has_one_class() {
        let ok = Ok(Embedded {
            vectors: vec![],
            hints: RateLimitHints::default(),
            usage_tokens: None,
        });
        assert!(matches!(CallOutcome::of(&ok), CallOutcome::Success(_)));
        assert_eq!(
            CallOutcome::of(&transient(true, false)),
            CallOutcome::RateLimited {
                retry_after: Some(Duration::from_millis(5)),
                hints: RateLimitHints::default()
            }
        );
        assert_eq!(
            CallOutcome::of(&transient(false, true)),
            CallOutcome::Unreachable
        );
        assert_eq!(
            CallOutcome::of(&transient(false, false)),
            CallOutcome::Overloaded
        );
        let refused = Err(ProviderError::Fatal {
            reason: "401".into(),
        });
        assert_eq!(CallOutcome::of(&refused), CallOutcome::Refused);
        assert!(CallOutcome::Refused.reached_provider());
        assert!(!CallOutcome::Refused.is_back_pressure());
        assert!(!CallOutcome::Unreachable.reached_provider());
        assert!(CallOutcome::Unreachable.is_back_pressure());
    }
}
