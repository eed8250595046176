//! How many tokens one request may carry so that the shared budget stays smooth.
//!
//! The token bucket lets a request larger than the bucket through and goes into debt for it
//! (so the long-run rate is exact), but everyone then waits for the debt: one request of
//! 200,000 tokens under a quota of 1,000,000 tokens a minute holds every daemon for 12 s, and
//! an interactive edit queued behind it waits as long. So a request carries at most a quarter
//! of one burst of the token budget — permits come four times a burst, and an edit waits a
//! quarter of a second of budget for its request at most — unless the request budget is the
//! smaller one, when a request must carry one request's share of the minute's tokens for the
//! request budget not to be what limits.

/// The most tokens a request should carry under these budgets: the larger of a quarter of the
/// token bucket's size (`tokens_per_minute × burst_seconds / 60 / 4`) and one request's share
/// of the minute's tokens (`tokens_per_minute / requests_per_minute`), and at least 1.
pub fn max_request_tokens(
    requests_per_minute: u64,
    tokens_per_minute: u64,
    burst_seconds: f64,
) -> usize {
    let tpm = tokens_per_minute as f64;
    let burst = tpm * burst_seconds.max(0.0) / 60.0 / 4.0;
    let share = tpm / requests_per_minute.max(1) as f64;
    burst.max(share).max(1.0).min(usize::MAX as f64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_burst_of_tokens_unless_the_request_budget_needs_more() {
        // The default quota: 1M tokens a minute, one second of burst.
        assert_eq!(max_request_tokens(3_000, 1_000_000, 1.0), 4_166);
        // 60 requests a minute and 1.5M tokens: a request a second carries a second's tokens.
        assert_eq!(max_request_tokens(60, 1_500_000, 1.0), 25_000);
        // 10 requests a minute: each must carry a tenth of the minute's tokens.
        assert_eq!(max_request_tokens(10, 600_000, 1.0), 60_000);
        // Four seconds of burst: a second's tokens.
        assert_eq!(max_request_tokens(3_000, 600_000, 4.0), 10_000);
        assert_eq!(max_request_tokens(0, 0, 0.0), 1);
    }
}
