//! How the inference lane cuts the inputs waiting for it into forward passes.
//!
//! A pass pads every input to its longest, and its memory grows with rows × longest (the
//! activations) and rows × longest² (the attention scores). So the waiting inputs are sorted by
//! length — each pass then holds inputs of similar length and pads little — and a pass is cut
//! when one more input would take its padded tokens over the cap. Memory is bounded whatever
//! the items' sizes, and short inputs still go many to a pass.

/// What one forward pass may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassLimits {
    /// Inputs in one pass.
    pub max_rows: usize,
    /// Rows × the longest input's tokens (special tokens included). A single input longer
    /// than this still runs, alone.
    pub max_padded_tokens: usize,
}

/// Groups inputs, given by their token lengths, into passes: each pass lists indices into
/// `lengths`, shortest first. Every index is in exactly one pass.
pub(crate) fn plan_passes(lengths: &[usize], limits: PassLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let max_rows = limits.max_rows.max(1);
    let mut passes = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending: the input joining is the pass's longest.
        let longest = lengths[i].max(1);
        let rows = current.len() + 1;
        if !current.is_empty() && (rows > max_rows || rows * longest > limits.max_padded_tokens) {
            passes.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        passes.push(current);
    }
    passes
}

/// Padded tokens of a pass: rows × its longest input.
pub(crate) fn padded_tokens(lengths: &[usize], pass: &[usize]) -> usize {
    pass.len() * pass.iter().map(|&i| lengths[i]).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PassLimits = PassLimits {
        max_rows: 128,
        max_padded_tokens: 4096,
    };

    fn lengths(n: usize) -> Vec<usize> {
        // A mix of short and long inputs, in no order.
        (0..n).map(|i| 3 + (i * 37) % 254).collect()
    }

    #[test]
    fn every_input_is_in_exactly_one_pass() {
        let lengths = lengths(1000);
        let passes = plan_passes(&lengths, LIMITS);
        let mut seen: Vec<usize> = passes.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn passes_stay_within_their_limits() {
        let lengths = lengths(1000);
        for pass in plan_passes(&lengths, LIMITS) {
            assert!(pass.len() <= LIMITS.max_rows);
            assert!(padded_tokens(&lengths, &pass) <= LIMITS.max_padded_tokens);
        }
        let short = vec![4; 1000];
        let passes = plan_passes(&short, LIMITS);
        assert!(passes.iter().all(|p| p.len() <= 128));
        assert_eq!(passes.len(), 1000usize.div_ceil(128));
    }

    #[test]
    fn an_input_over_the_cap_runs_alone() {
        let passes = plan_passes(&[10, 5000, 12], LIMITS);
        assert_eq!(passes, [vec![0, 2], vec![1]]);
    }

    #[test]
    fn sorting_keeps_padding_small() {
        let lengths = lengths(1000);
        let real: usize = lengths.iter().sum();
        let padded: usize = plan_passes(&lengths, LIMITS)
            .iter()
            .map(|p| padded_tokens(&lengths, p))
            .sum();
        // In arrival order, 64 at a time, nearly every pass pads to ~256.
        let unsorted: usize = (0..1000)
            .collect::<Vec<_>>()
            .chunks(64)
            .map(|c| padded_tokens(&lengths, c))
            .sum();
        assert!(
            padded * 100 <= real * 105,
            "sorted passes pad {padded} for {real} real tokens"
        );
        assert!(unsorted > real * 3 / 2, "{unsorted} vs {real}");
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(plan_passes(&[], LIMITS).is_empty());
    }
}
