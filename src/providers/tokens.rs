//! Token counting with the provider's own encoding (tiktoken), so requests are packed by real
//! token counts rather than by item counts.

use crate::config::Tokenizer;
use tiktoken_rs::CoreBPE;

#[derive(Clone, Copy)]
pub struct TokenCounter {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter")
    }
}

impl TokenCounter {
    /// `cl100k_base` (text-embedding-3-*, ada-002) or `o200k_base`.
    pub fn new(encoding: Tokenizer) -> Self {
        let bpe = match encoding {
            Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        Self { bpe }
    }

    pub fn count(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }

    pub fn truncate(&self, text: &str, max_tokens: usize) -> String {
        let tokens = self.bpe.encode_ordinary(text);
        if tokens.len() <= max_tokens {
            return text.to_owned();
        }
        // Cutting between tokens can split a UTF-8 character; step back until it decodes.
        let mut end = max_tokens;
        while end > 0 {
            if let Ok(s) = self.bpe.decode(&tokens[..end]) {
                return s;
            }
            end -= 1;
        }
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_truncates() {
        let t = TokenCounter::new(Tokenizer::Cl100kBase);
        assert_eq!(t.count("hello world"), 2);
        let long = "word ".repeat(100);
        let cut = t.truncate(&long, 10);
        assert_eq!(t.count(&cut), 10);
        assert_eq!(t.truncate("short", 10), "short");
    }
}
