//! An embedding provider that runs in-process: sentence-transformers' all-MiniLM-L6-v2 (384-d)
//! on candle's pure-Rust CPU backend, so the embedded deployment needs no API key, no network
//! and no extra server.
//!
//! It reproduces `SentenceTransformer("all-MiniLM-L6-v2").encode(..., normalize_embeddings=True)`:
//! the model's own WordPiece tokenizer (`tokenizer.json`) with `[CLS] … [SEP]`, padding to the
//! longest input of the batch (the shipped file pads to a fixed 128, which is overridden) and
//! truncation at 256 tokens (the model's `max_seq_length`; longer inputs are cut, never
//! refused); all-zero token type ids; candle-transformers' BERT forward; mean pooling weighted
//! by the attention mask; L2 normalisation. `tests/local_model.rs` holds it to an independent
//! numpy implementation (`scripts/minilm_reference.py`) to 1e-5.
//!
//! The model files are read from a directory (see [`super::model_files`]); if they are missing,
//! [`LocalEmbedder::load`] fails with [`ProviderError::Fatal`] saying to run
//! `embedq fetch-model`. Nothing is ever downloaded here.
//!
//! # Threads
//!
//! Inference is CPU-bound and runs off the async runtime (`tokio::task::spawn_blocking`), on a
//! rayon thread pool that belongs to the embedder and has `threads` threads (0 = one per
//! available CPU). Every batch runs inside [`rayon::ThreadPool::install`], and candle 0.11's CPU
//! backend does its parallel work through rayon's *current* pool, so the setting governs:
//! - the matrix multiplications (nearly all of the time): candle calls `gemm` with
//!   `Parallelism::Rayon(n)`, `n` from `candle_core::utils::get_num_threads()`
//!   (`RAYON_NUM_THREADS`, else the number of physical cores); gemm splits the product into `n`
//!   parts and runs them with `into_par_iter` on the current pool, so at most `threads` of them
//!   run at once (and at most `n`);
//! - softmax, and the tokenizer's batch encoding, which also use the current rayon pool.
//!
//! One piece is outside any per-embedder setting: candle 0.11 runs element-wise operations on
//! large contiguous tensors (≥ 64 Ki elements: GELU, residual additions) on its own
//! process-wide "barrier pool", created at first use with `CANDLE_NUM_THREADS` (else
//! `RAYON_NUM_THREADS`, else the number of physical cores) threads, the calling thread
//! included. To cap those as well, start the process with `CANDLE_NUM_THREADS` set; the crate
//! does not set environment variables itself (that is unsound once other threads run).
//! [`LocalEmbedder::load`] logs both figures.

use super::model_files::{self, CONFIG_FILE, FETCH_COMMAND, MODEL_FILE, TOKENIZER_FILE};
use super::{Embedded, Embedder, InputKind, ProviderError, RateLimitHints, RequestLimits};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// The model name recorded with every vector.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Length of the vectors.
pub const DIMENSION: usize = 384;
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
pub const MAX_SEQ_LENGTH: usize = 256;
/// Inputs per forward pass (and per request).
pub const MAX_BATCH: usize = 64;

/// all-MiniLM-L6-v2 in-process. Cheap to share: clones of the inner state are reference counted.
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    /// Pads to the longest input of the batch and truncates at [`MAX_SEQ_LENGTH`].
    batch_tokenizer: Tokenizer,
    /// No padding, no truncation: for counting and cutting text.
    plain_tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    threads: usize,
    device: Device,
}

impl LocalEmbedder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `model_dir` and
    /// prepares a pool of `threads` inference threads (0 = one per available CPU).
    ///
    /// Missing files or files that do not make a BERT model are [`ProviderError::Fatal`]: an
    /// operator must act (`embedq fetch-model`). The weights' checksum is not computed here (it
    /// costs a fraction of a second); [`model_files::check`] does that.
    pub fn load(model_dir: &Path, threads: usize) -> Result<LocalEmbedder, ProviderError> {
        let missing = model_files::missing_files(model_dir);
        if !missing.is_empty() {
            return Err(fatal(format!(
                "the local model's files are missing in {}: {}; run `{FETCH_COMMAND}` to \
                 download them into that directory",
                model_dir.display(),
                missing.join(", ")
            )));
        }
        let unusable = |file: &str, e: &dyn std::fmt::Display| {
            fatal(format!(
                "cannot load {} ({e}); run `{FETCH_COMMAND}` to download the model again",
                model_dir.join(file).display()
            ))
        };

        let config_text = std::fs::read_to_string(model_dir.join(CONFIG_FILE))
            .map_err(|e| unusable(CONFIG_FILE, &e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| unusable(CONFIG_FILE, &e))?;
        if config.hidden_size != DIMENSION {
            return Err(unusable(
                CONFIG_FILE,
                &format!(
                    "hidden size {} where all-MiniLM-L6-v2 has {DIMENSION}",
                    config.hidden_size
                ),
            ));
        }

        let device = Device::Cpu;
        let weights = candle_core::safetensors::load(model_dir.join(MODEL_FILE), &device)
            .map_err(|e| unusable(MODEL_FILE, &e))?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| unusable(MODEL_FILE, &e))?;

        let file_tokenizer = Tokenizer::from_file(model_dir.join(TOKENIZER_FILE))
            .map_err(|e| unusable(TOKENIZER_FILE, &e))?;
        // Keep the file's pad token, change only the strategy (fixed 128 -> longest).
        let (pad_id, pad_token) = match file_tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => (0, "[PAD]".to_string()),
        };
        let mut plain_tokenizer = file_tokenizer.clone();
        plain_tokenizer.with_padding(None);
        plain_tokenizer
            .with_truncation(None)
            .map_err(|e| unusable(TOKENIZER_FILE, &e))?;
        let mut batch_tokenizer = file_tokenizer;
        batch_tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        batch_tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_SEQ_LENGTH,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| unusable(TOKENIZER_FILE, &e))?;

        let threads = resolve_threads(threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embedq-local-{i}"))
            .build()
            .map_err(|e| fatal(format!("cannot start {threads} inference threads: {e}")))?;

        tracing::info!(
            model_dir = %model_dir.display(),
            threads,
            gemm_split = candle_core::utils::get_num_threads(),
            candle_elementwise_threads = candle_elementwise_threads(),
            "loaded the local embedding model {MODEL_NAME}"
        );
        Ok(LocalEmbedder {
            inner: Arc::new(Inner {
                model,
                batch_tokenizer,
                plain_tokenizer,
                pool,
                threads,
                device,
            }),
        })
    }

    /// The number of inference threads in use (`threads` as given, or the CPU count for 0).
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Embeds `inputs` on the calling thread (blocking; [`Embedder::embed`] is the async
    /// version), in forward passes of at most [`MAX_BATCH`] inputs.
    pub fn embed_blocking(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.inner.embed_all(inputs)
    }
}

impl Inner {
    fn embed_all(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.pool.install(|| {
            let mut vectors = Vec::with_capacity(inputs.len());
            for batch in inputs.chunks(MAX_BATCH) {
                vectors.extend(self.embed_batch(batch)?);
            }
            Ok(vectors)
        })
    }

    /// One forward pass: tokenize, BERT, masked mean pooling, L2 normalisation.
    fn embed_batch(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<&str> = batch.iter().map(String::as_str).collect();
        let encodings = self
            .batch_tokenizer
            .encode_batch(texts, true)
            .map_err(|e| transient(format!("tokenizing failed: {e}")))?;
        let rows = encodings.len();
        let seq_len = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(rows * seq_len);
        let mut mask = Vec::with_capacity(rows * seq_len);
        for encoding in &encodings {
            if encoding.len() != seq_len {
                return Err(transient(format!(
                    "the tokenizer padded a batch unevenly ({} and {seq_len} tokens)",
                    encoding.len()
                )));
            }
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        self.forward(ids, mask, rows, seq_len)
            .map_err(|e| transient(format!("local model inference failed: {e}")))
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        rows: usize,
        seq_len: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, (rows, seq_len), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, seq_len), &self.device)?;
        let token_type_ids = ids.zeros_like()?;
        // (rows, seq_len, 384)
        let hidden = self.model.forward(&ids, &token_type_ids, Some(&mask))?;
        // Mean over the real tokens: padding positions weigh zero.
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
        let counts = weights.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        // L2 normalisation, with torch.nn.functional.normalize's floor on the norm.
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        MODEL_NAME
    }

    fn dimension(&self) -> usize {
        DIMENSION
    }

    /// At most [`MAX_BATCH`] inputs; no token limits, because inputs over 256 tokens are
    /// truncated like sentence-transformers does, never refused.
    fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_inputs: MAX_BATCH,
            max_tokens_per_input: usize::MAX / 4,
            max_tokens_per_request: usize::MAX / 4,
        }
    }

    /// WordPiece tokens of `text`, without `[CLS]` and `[SEP]`.
    fn count_tokens(&self, text: &str) -> usize {
        match self.inner.plain_tokenizer.encode(text, false) {
            Ok(encoding) => encoding.len(),
            // Not expected for any &str; a word count keeps packing going.
            Err(_) => text.split_whitespace().count(),
        }
    }

    /// The text up to the end of its `max_tokens`-th WordPiece token.
    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        if max_tokens == 0 {
            return String::new();
        }
        let Ok(encoding) = self.inner.plain_tokenizer.encode(text, false) else {
            return text.to_string();
        };
        let offsets = encoding.get_offsets();
        if offsets.len() <= max_tokens {
            return text.to_string();
        }
        let mut end = offsets[max_tokens - 1].1.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }

    async fn embed(&self, inputs: &[String], _kind: InputKind) -> Result<Embedded, ProviderError> {
        if inputs.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                hints: RateLimitHints::default(),
            });
        }
        let inner = Arc::clone(&self.inner);
        let inputs = inputs.to_vec();
        let vectors = tokio::task::spawn_blocking(move || inner.embed_all(&inputs))
            .await
            .map_err(|e| transient(format!("the local model's inference task failed: {e}")))??;
        Ok(Embedded {
            vectors,
            hints: RateLimitHints::default(),
        })
    }
}

/// `threads`, or one per CPU available to the process for 0.
pub fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The size candle 0.11 gives its process-wide element-wise pool (see the module docs).
fn candle_elementwise_threads() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(candle_core::utils::get_num_threads)
}

fn fatal(reason: String) -> ProviderError {
    ProviderError::Fatal { reason }
}

fn transient(reason: String) -> ProviderError {
    ProviderError::Transient {
        reason,
        retry_after: None,
        rate_limited: false,
        unreachable: false,
        hints: RateLimitHints::default(),
    }
}
