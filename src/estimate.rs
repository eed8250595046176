//! What a job would cost before it runs (`POST /v1/jobs?dry_run=true`, and the dry run of a
//! model migration): the items it would embed, their tokens as the provider counts them, the
//! requests they pack into, the price at `embedding.price_per_million_tokens`, and the time at
//! the configured quota. It pages through the scope's texts a page at a time (bounded memory)
//! and applies the same rules as the pipeline: up-to-date items are skipped, over-long ones are
//! truncated or would fail.

use crate::config::{RateLimitSettings, Settings};
use crate::domain::JobScope;
use crate::providers::{Embedder, RequestLimits};
use crate::store::{Store, StoreError};
use serde::Serialize;

/// A job's cost, estimated.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// The model the items would be embedded with.
    pub model: String,
    /// Items of the scope.
    pub scope_items: u64,
    /// Items that would be embedded.
    pub items: u64,
    /// Items already embedded with their content and this model (skipped).
    pub up_to_date: u64,
    /// Items over the per-input token limit that would fail (truncation is off).
    pub too_long: u64,
    /// Tokens sent to the provider, as its tokenizer counts them.
    pub tokens: u64,
    /// Requests they pack into, within the provider's per-request limits.
    pub requests: u64,
    /// `embedding.price_per_million_tokens`.
    pub price_per_million_tokens: f64,
    /// tokens / 1,000,000 × the price.
    pub cost: f64,
    /// The time the requests and tokens take at `rate_limit` (requests and tokens per minute):
    /// whichever takes longer.
    pub seconds_at_quota: f64,
}

/// Requests a run of inputs packs into, filled in order as the pool fills them.
#[derive(Debug, Default)]
struct Packing {
    requests: u64,
    inputs: usize,
    tokens: usize,
}

impl Packing {
    fn add(&mut self, tokens: usize, limits: RequestLimits) {
        if self.inputs == 0
            || self.inputs >= limits.max_inputs
            || self.tokens + tokens > limits.max_tokens_per_request
        {
            self.requests += 1;
            self.inputs = 0;
            self.tokens = 0;
        }
        self.inputs += 1;
        self.tokens += tokens;
    }
}

/// Seconds `requests` and `tokens` take at the quota (0 when it sets no limit).
pub fn seconds_at_quota(requests: u64, tokens: u64, quota: &RateLimitSettings) -> f64 {
    let per_minute = |n: u64, limit: u64| {
        if limit == 0 {
            0.0
        } else {
            n as f64 / limit as f64 * 60.0
        }
    };
    per_minute(requests, quota.requests_per_minute).max(per_minute(tokens, quota.tokens_per_minute))
}

const PAGE: usize = 1_000;

/// Estimates a job over `scope` embedding with `embedder` (its model, tokenizer and limits).
pub async fn estimate(
    store: &Store,
    embedder: &dyn Embedder,
    scope: &JobScope,
    settings: &Settings,
) -> Result<Estimate, StoreError> {
    let model = embedder.model().to_owned();
    let limits = embedder.limits();
    let truncate = settings.embedding.truncate;
    let mut e = Estimate {
        model: model.clone(),
        scope_items: 0,
        items: 0,
        up_to_date: 0,
        too_long: 0,
        tokens: 0,
        requests: 0,
        price_per_million_tokens: settings.embedding.price_per_million_tokens,
        cost: 0.0,
        seconds_at_quota: 0.0,
    };
    let mut packing = Packing::default();
    let mut cursor: Option<String> = None;
    loop {
        let (texts, next) = store
            .scope_texts_page(scope, &model, cursor.as_deref(), PAGE)
            .await?;
        for text in &texts {
            e.scope_items += 1;
            // A job over the FAILED items tries them again whatever their state.
            if text.up_to_date && !matches!(scope, JobScope::Failed) {
                e.up_to_date += 1;
                continue;
            }
            let mut tokens = embedder.count_tokens(&text.content);
            if tokens > limits.max_tokens_per_input {
                if !truncate {
                    e.too_long += 1;
                    continue;
                }
                tokens = embedder
                    .count_tokens(&embedder.truncate(&text.content, limits.max_tokens_per_input));
            }
            let tokens = tokens.max(1);
            e.items += 1;
            e.tokens += tokens as u64;
            packing.add(tokens, limits);
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    e.requests = packing.requests;
    e.cost = e.tokens as f64 / 1_000_000.0 * e.price_per_million_tokens;
    e.seconds_at_quota = seconds_at_quota(e.requests, e.tokens, &settings.rate_limit);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_inputs: 3,
        max_tokens_per_input: 10,
        max_tokens_per_request: 12,
    };

    #[test]
    fn packing_follows_both_limits() {
        let mut p = Packing::default();
        for t in [5, 5, 1, 4, 4, 4, 10] {
            p.add(t, LIMITS);
        }
        // [5,5,1] [4,4,4] [10]
        assert_eq!(p.requests, 3);
    }

    #[test]
    fn quota_time_is_the_slower_limit() {
        let quota = RateLimitSettings {
            requests_per_minute: 60,
            tokens_per_minute: 1_000,
            burst_seconds: 1.0,
            min_concurrency: 1,
            max_concurrency: 1,
        };
        assert_eq!(seconds_at_quota(30, 100, &quota), 30.0);
        assert_eq!(seconds_at_quota(1, 2_000, &quota), 120.0);
        let unlimited = RateLimitSettings {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            ..quota
        };
        assert_eq!(seconds_at_quota(10, 10, &unlimited), 0.0);
    }
}
