//! Embedding providers behind one interface, [`Embedder`]: the pipeline packs inputs by the
//! provider's limits, calls `embed`, and acts on the class of any error — transient (retry with
//! backoff), invalid input (that item fails, never retried) or fatal (pause intake, burn no
//! attempts).

mod local;
pub mod model_files;
mod openai;
mod packing;
mod rate_limit_headers;
mod tokens;

pub use local::prepare_process as prepare_process_for_local_model;
pub use local::resolve_threads as local_model_threads;
pub use local::{DEFAULT_PASS_TOKENS, LaneStats, LocalEmbedder};
pub use openai::OpenAiEmbedder;
pub use packing::{Packed, RequestLimits, pack};
pub use rate_limit_headers::{RateLimitHints, parse_openai_duration, parse_retry_after};
pub use tokens::TokenCounter;

use std::time::Duration;

/// What the inputs of a request are: stored items, or a search query. Asymmetric models embed
/// them differently (`embedding.input_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Document,
    Query,
}

/// Vectors for a request's inputs, in input order, and what the provider said of its budget.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub hints: RateLimitHints,
    /// The tokens the provider says the request used (`usage.total_tokens`), when it says:
    /// the rate budget is charged this, not embedq's own count.
    pub usage_tokens: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: 429 rate limits, 408, 409, 5xx, time-outs, resets, bad bodies.
    #[error("transient provider error: {reason}")]
    Transient {
        reason: String,
        /// The wait the provider asked for (`retry-after-ms`, `Retry-After`).
        retry_after: Option<Duration>,
        /// True for a 429 rate limit: every worker should slow down.
        rate_limited: bool,
        /// True when the request never reached the provider (no connection could be made):
        /// the provider is unreachable, and no attempt was used.
        unreachable: bool,
        hints: RateLimitHints,
    },
    /// The provider refused the inputs themselves (400): retrying cannot help.
    #[error("the provider rejected the input: {reason}")]
    InvalidInput { reason: String },
    /// Nothing will work until an operator acts: bad key (401), forbidden (403), unknown model
    /// (404), exhausted quota.
    #[error("provider unusable: {reason}")]
    Fatal { reason: String },
}

impl ProviderError {
    /// The request never reached the provider: no connection could be made.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Transient {
                unreachable: true,
                ..
            }
        )
    }

    /// A 429 rate limit: everyone slows down; the inputs are not at fault.
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            Self::Transient {
                rate_limited: true,
                ..
            }
        )
    }
}

#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// The model name recorded with every vector.
    fn model(&self) -> &str;

    /// Length of the vectors.
    fn dimension(&self) -> usize;

    /// What one request may hold.
    fn limits(&self) -> RequestLimits;

    /// Tokens of the document `text` as the provider counts them (with any document prefix).
    fn count_tokens(&self, text: &str) -> usize;

    /// The longest start of the document `text` that counts at most `max_tokens` tokens.
    fn truncate(&self, text: &str, max_tokens: usize) -> String;

    /// Embeds `inputs` (already packed within [`Embedder::limits`]) as `kind`.
    async fn embed(&self, inputs: &[String], kind: InputKind) -> Result<Embedded, ProviderError>;
}
