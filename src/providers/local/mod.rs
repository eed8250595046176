//! An embedding provider that runs in-process: sentence-transformers' all-MiniLM-L6-v2 (384-d)
//! on candle's pure-Rust CPU backend, so the embedded deployment needs no API key, no network
//! and no extra server.
//!
//! It reproduces `SentenceTransformer("all-MiniLM-L6-v2").encode(..., normalize_embeddings=True)`:
//! the model's own WordPiece tokenizer (`tokenizer.json`) with `[CLS] … [SEP]`, padding to the
//! longest input of the batch (the shipped file pads to a fixed 128, which is overridden) and
//! truncation at 256 tokens (the model's `max_seq_length`; longer inputs are cut, never
//! refused); all-zero token type ids; the BERT forward ([`encoder`], candle's tensors); mean pooling weighted
//! by the attention mask; L2 normalisation. `tests/local_model.rs` holds it to an independent
//! numpy implementation (`scripts/minilm_reference.py`) to 1e-5.
//!
//! The model files are read from a directory (see [`super::model_files`]); if they are missing,
//! [`LocalEmbedder::load`] fails with [`ProviderError::Fatal`] saying to run
//! `embedq fetch-model`. Nothing is ever downloaded here.
//!
//! # One lane, passes sized by tokens
//!
//! Inference is CPU-bound and runs on one dedicated thread, the [`lane`]: whatever the number
//! of workers, one forward pass runs at a time, on a rayon thread pool that belongs to the
//! embedder and has `threads` threads (0 = one per available CPU). Callers tokenize their
//! inputs off the async runtime (`spawn_blocking`), hand the token ids to the lane and wait for
//! the vectors. The lane sorts what is waiting by length and cuts passes at
//! [`DEFAULT_PASS_TOKENS`] padded tokens ([`passes`]), so padding is small and a pass's memory
//! is bounded whatever the inputs.
//!
//! Every pass runs inside [`rayon::ThreadPool::install`], and candle 0.11's CPU backend does
//! its parallel work through rayon's *current* pool, so the setting governs the matrix
//! multiplications (candle calls `gemm` with `Parallelism::Rayon(n)`, `n` from
//! `candle_core::utils::get_num_threads()`: `RAYON_NUM_THREADS`, else the physical cores) and
//! softmax. Element-wise operations on large tensors (GELU, residual additions) run on
//! candle's own process-wide "barrier pool", sized at first use by `CANDLE_NUM_THREADS`.
//! [`prepare_process`] sets both variables to the embedder's thread count and caps the
//! allocator's memory held between passes; the binary calls it before it starts any thread
//! (setting the environment later is unsound).
//! [`LocalEmbedder::load`] logs the figures in force.

mod encoder;
mod lane;
mod passes;
mod process;

use super::model_files::{self, CONFIG_FILE, FETCH_COMMAND, MODEL_FILE, TOKENIZER_FILE};
use super::{Embedded, Embedder, InputKind, ProviderError, RateLimitHints, RequestLimits};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use encoder::{Config, Encoder};
use lane::InferenceLane;
pub use lane::LaneStats;
use passes::PassLimits;
pub use process::prepare_process;
use std::path::Path;
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The model name recorded with every vector.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Length of the vectors.
pub const DIMENSION: usize = 384;
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
pub const MAX_SEQ_LENGTH: usize = 256;
/// Inputs per request a worker sends.
pub const MAX_BATCH: usize = 64;
/// Padded tokens (rows × longest input) one forward pass may hold by default.
pub const DEFAULT_PASS_TOKENS: usize = 2048;
/// Inputs one forward pass may hold.
const MAX_PASS_ROWS: usize = 256;

/// all-MiniLM-L6-v2 in-process. Cheap to share: clones of the inner state are reference counted.
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    lane: InferenceLane,
    /// Adds `[CLS]`/`[SEP]`, truncates at [`MAX_SEQ_LENGTH`], no padding: what a pass takes.
    pass_tokenizer: Tokenizer,
    /// No padding, no truncation, no special tokens: for counting and cutting text.
    plain_tokenizer: Tokenizer,
    threads: usize,
}

/// What the lane runs: the BERT weights and how to pad.
pub(crate) struct ModelCore {
    model: Encoder,
    pad_id: u32,
    device: Device,
}

impl LocalEmbedder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `model_dir`, prepares
    /// a pool of `threads` inference threads (0 = one per available CPU) and starts the lane,
    /// with passes of at most [`DEFAULT_PASS_TOKENS`] padded tokens.
    pub fn load(model_dir: &Path, threads: usize) -> Result<LocalEmbedder, ProviderError> {
        Self::load_with(model_dir, threads, DEFAULT_PASS_TOKENS)
    }

    /// [`LocalEmbedder::load`] with passes of at most `pass_tokens` padded tokens.
    ///
    /// Missing files or files that do not make a BERT model are [`ProviderError::Fatal`]: an
    /// operator must act (`embedq fetch-model`). The weights' checksum is not computed here (it
    /// costs a fraction of a second); [`model_files::check`] does that.
    pub fn load_with(
        model_dir: &Path,
        threads: usize,
        pass_tokens: usize,
    ) -> Result<LocalEmbedder, ProviderError> {
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
        let model = Encoder::load(vb, &config).map_err(|e| unusable(MODEL_FILE, &e))?;

        let file_tokenizer = Tokenizer::from_file(model_dir.join(TOKENIZER_FILE))
            .map_err(|e| unusable(TOKENIZER_FILE, &e))?;
        // The file's pad token pads the passes; the lane pads, not the tokenizer.
        let pad_id = file_tokenizer.get_padding().map_or(0, |p| p.pad_id);
        let mut plain_tokenizer = file_tokenizer.clone();
        plain_tokenizer.with_padding(None);
        plain_tokenizer
            .with_truncation(None)
            .map_err(|e| unusable(TOKENIZER_FILE, &e))?;
        let mut pass_tokenizer = file_tokenizer;
        pass_tokenizer.with_padding(None);
        pass_tokenizer
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
        let limits = PassLimits {
            max_rows: MAX_PASS_ROWS,
            max_padded_tokens: pass_tokens.max(MAX_SEQ_LENGTH),
        };
        let core = Arc::new(ModelCore {
            model,
            pad_id,
            device,
        });
        let lane = InferenceLane::start(core, pool, limits)
            .map_err(|e| fatal(format!("cannot start the inference lane: {e}")))?;

        tracing::info!(
            model_dir = %model_dir.display(),
            threads,
            pass_tokens = limits.max_padded_tokens,
            gemm_split = candle_core::utils::get_num_threads(),
            candle_elementwise_threads = candle_elementwise_threads(),
            "loaded the local embedding model {MODEL_NAME}"
        );
        Ok(LocalEmbedder {
            inner: Arc::new(Inner {
                lane,
                pass_tokenizer,
                plain_tokenizer,
                threads,
            }),
        })
    }

    /// The number of inference threads in use (`threads` as given, or the CPU count for 0).
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// What the inference lane has done since the model was loaded.
    pub fn lane_stats(&self) -> LaneStats {
        self.inner.lane.stats()
    }

    /// Embeds `inputs` on the calling thread (blocking; [`Embedder::embed`] is the async
    /// version).
    pub fn embed_blocking(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let ids = self.inner.tokenize(inputs)?;
        self.inner.lane.embed_blocking(ids)
    }
}

impl Inner {
    /// Token ids of each input, `[CLS] … [SEP]`, truncated at [`MAX_SEQ_LENGTH`].
    fn tokenize(&self, inputs: &[String]) -> Result<Vec<Vec<u32>>, ProviderError> {
        inputs
            .iter()
            .map(|text| {
                self.pass_tokenizer
                    .encode(text.as_str(), true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| transient(format!("tokenizing failed: {e}")))
            })
            .collect()
    }
}

impl ModelCore {
    /// One forward pass over `rows` (token ids, unpadded): pad to the longest, BERT, masked
    /// mean pooling, L2 normalisation. Vectors in the order of `rows`.
    pub(crate) fn forward_rows(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let seq_len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * seq_len);
        let mut mask = Vec::with_capacity(rows.len() * seq_len);
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, seq_len - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, seq_len - row.len()));
        }
        self.forward(ids, mask, &lengths, seq_len)
            .map_err(|e| transient(format!("local model inference failed: {e}")))
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        lengths: &[usize],
        seq_len: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = lengths.len();
        let ids = Tensor::from_vec(ids, (rows, seq_len), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, seq_len), &self.device)?;
        // (rows, seq_len, 384)
        let hidden = self.model.forward(&ids, lengths)?;
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
                usage_tokens: None,
            });
        }
        let inner = Arc::clone(&self.inner);
        let inputs = inputs.to_vec();
        let ids = tokio::task::spawn_blocking(move || inner.tokenize(&inputs))
            .await
            .map_err(|e| transient(format!("the local model's tokenizing task failed: {e}")))??;
        let vectors = self.inner.lane.embed(ids).await?;
        // No quota to reconcile: embedq's own count (WordPiece) is the provider's.
        Ok(Embedded {
            vectors,
            hints: RateLimitHints::default(),
            usage_tokens: None,
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
