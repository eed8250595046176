//! Packing inputs into requests within the provider's limits, counting tokens, not items:
//! OpenAI allows at most 2,048 inputs, 8,192 tokens per input and 300,000 tokens per request.

/// The limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_inputs: usize,
    pub max_tokens_per_input: usize,
    pub max_tokens_per_request: usize,
}

/// Inputs grouped into requests, by index into the caller's list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packed {
    /// Each request: indices of its inputs and its token total.
    pub requests: Vec<(Vec<usize>, usize)>,
    /// Indices of inputs over the per-input limit, with their token counts.
    pub oversized: Vec<(usize, usize)>,
}

/// Packs inputs (given by their token counts) in order, greedily.
pub fn pack(token_counts: &[usize], limits: RequestLimits) -> Packed {
    let mut packed = Packed::default();
    let mut current: Vec<usize> = Vec::new();
    let mut current_tokens = 0usize;
    for (i, &tokens) in token_counts.iter().enumerate() {
        if tokens > limits.max_tokens_per_input {
            packed.oversized.push((i, tokens));
            continue;
        }
        let cost = tokens.max(1);
        if !current.is_empty()
            && (current.len() >= limits.max_inputs
                || current_tokens + cost > limits.max_tokens_per_request)
        {
            packed
                .requests
                .push((std::mem::take(&mut current), current_tokens));
            current_tokens = 0;
        }
        current.push(i);
        current_tokens += cost;
    }
    if !current.is_empty() {
        packed.requests.push((current, current_tokens));
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: RequestLimits = RequestLimits {
        max_inputs: 2048,
        max_tokens_per_input: 8192,
        max_tokens_per_request: 300_000,
    };

    #[test]
    fn respects_input_count() {
        let p = pack(&vec![10; 5000], OPENAI);
        let sizes: Vec<usize> = p.requests.iter().map(|(r, _)| r.len()).collect();
        assert_eq!(sizes, [2048, 2048, 904]);
    }

    #[test]
    fn respects_tokens_per_request() {
        let p = pack(&vec![8000; 100], OPENAI);
        assert!(p.requests.iter().all(|(_, t)| *t <= 300_000));
        assert_eq!(p.requests[0].0.len(), 37);
        let total: usize = p.requests.iter().map(|(r, _)| r.len()).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn sets_oversized_inputs_apart() {
        let p = pack(&[5, 9000, 7], OPENAI);
        assert_eq!(p.oversized, [(1, 9000)]);
        assert_eq!(p.requests, [(vec![0, 2], 12)]);
    }
}
