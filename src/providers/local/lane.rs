//! The local model's one inference lane: a dedicated thread that runs one forward pass at a
//! time, whatever the number of embedding workers asking.
//!
//! Workers hand it their inputs already tokenized and wait for the vectors; the lane takes
//! every ask waiting when it is free (a window), cuts the window's inputs into passes by length
//! and padded tokens ([`super::passes`]), runs them one after another on the embedder's thread
//! pool, and answers each ask — in the order its inputs were given — as soon as its last input
//! is done. Four workers asking at once therefore share passes instead of running four
//! interleaved passes whose activations are all alive together.
//!
//! The thread ends when the last handle to the lane is dropped. A panic inside a pass fails
//! the asks of that pass with a transient error; the lane goes on.

use super::passes::{PassLimits, padded_tokens, plan_passes};
use super::{ModelCore, transient};
use crate::providers::ProviderError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Inputs a window gathers at most before its passes start.
const WINDOW_INPUTS: usize = 1024;

type Answer = Result<Vec<Vec<f32>>, ProviderError>;

/// One worker's inputs, as token ids with `[CLS]` and `[SEP]`, and where to send the vectors.
struct Ask {
    inputs: Vec<Vec<u32>>,
    reply: Reply,
}

/// Where an answer goes: an async caller awaits it, a blocking caller (any thread, a runtime's
/// included) waits on a plain channel.
enum Reply {
    Async(oneshot::Sender<Answer>),
    Blocking(mpsc::SyncSender<Answer>),
}

impl Reply {
    fn send(self, answer: Answer) {
        // A caller that gave up no longer needs the answer.
        let _ = match self {
            Reply::Async(tx) => tx.send(answer).map_err(|_| ()),
            Reply::Blocking(tx) => tx.send(answer).map_err(|_| ()),
        };
    }
}

/// What the lane has done since it started: the figures behind the local model's bench.
#[derive(Debug, Default)]
pub struct LaneCounters {
    passes: AtomicU64,
    inputs: AtomicU64,
    tokens: AtomicU64,
    padded_tokens: AtomicU64,
    attention_positions: AtomicU64,
}

/// A snapshot of [`LaneCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Forward passes run.
    pub passes: u64,
    /// Inputs embedded.
    pub inputs: u64,
    /// Real tokens (special tokens included), before padding.
    pub tokens: u64,
    /// Tokens the passes computed, padding included: Σ rows × longest.
    pub padded_tokens: u64,
    /// Σ rows × longest²: the query–key pairs attention computed, per head.
    pub attention_positions: u64,
}

impl LaneCounters {
    pub(crate) fn snapshot(&self) -> LaneStats {
        LaneStats {
            passes: self.passes.load(Ordering::Relaxed),
            inputs: self.inputs.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed),
            padded_tokens: self.padded_tokens.load(Ordering::Relaxed),
            attention_positions: self.attention_positions.load(Ordering::Relaxed),
        }
    }
}

/// The door to the lane: cheap to share, one thread behind it.
pub(crate) struct InferenceLane {
    asks: mpsc::Sender<Ask>,
    counters: Arc<LaneCounters>,
}

impl InferenceLane {
    /// Starts the lane's thread. It owns the model and the thread pool the passes run on.
    pub(crate) fn start(
        model: Arc<ModelCore>,
        pool: rayon::ThreadPool,
        limits: PassLimits,
    ) -> std::io::Result<InferenceLane> {
        let (asks, waiting) = mpsc::channel::<Ask>();
        let counters = Arc::new(LaneCounters::default());
        let lane_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("embedq-inference".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut window = vec![first];
                    let mut inputs = window[0].inputs.len();
                    while inputs < WINDOW_INPUTS {
                        match waiting.try_recv() {
                            Ok(ask) => {
                                inputs += ask.inputs.len();
                                window.push(ask);
                            }
                            Err(_) => break,
                        }
                    }
                    pool.install(|| serve_window(&model, window, limits, &lane_counters));
                }
            })?;
        Ok(InferenceLane { asks, counters })
    }

    /// The vectors of `inputs`, in the same order.
    pub(crate) async fn embed(&self, inputs: Vec<Vec<u32>>) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue(inputs, Reply::Async(reply));
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// [`InferenceLane::embed`], waiting on the calling thread.
    pub(crate) fn embed_blocking(&self, inputs: Vec<Vec<u32>>) -> Answer {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue(inputs, Reply::Blocking(reply));
        answer.recv().unwrap_or_else(|_| Err(stopped()))
    }

    fn queue(&self, inputs: Vec<Vec<u32>>, reply: Reply) {
        if inputs.is_empty() {
            reply.send(Ok(Vec::new()));
        } else if let Err(mpsc::SendError(ask)) = self.asks.send(Ask { inputs, reply }) {
            ask.reply.send(Err(stopped()));
        }
    }

    pub(crate) fn stats(&self) -> LaneStats {
        self.counters.snapshot()
    }
}

/// The error for an ask whose answer never came.
fn stopped() -> ProviderError {
    transient("the local model's inference lane stopped".into())
}

/// An ask being served: its vectors as they come, and how many are still missing.
struct Serving {
    reply: Option<Reply>,
    vectors: Vec<Option<Vec<f32>>>,
    missing: usize,
}

fn serve_window(model: &ModelCore, window: Vec<Ask>, limits: PassLimits, counters: &LaneCounters) {
    let mut serving = Vec::with_capacity(window.len());
    let mut owners = Vec::new();
    let mut inputs = Vec::new();
    for (a, ask) in window.into_iter().enumerate() {
        serving.push(Serving {
            reply: Some(ask.reply),
            vectors: vec![None; ask.inputs.len()],
            missing: ask.inputs.len(),
        });
        for (i, ids) in ask.inputs.into_iter().enumerate() {
            owners.push((a, i));
            inputs.push(ids);
        }
    }
    let lengths: Vec<usize> = inputs.iter().map(Vec::len).collect();

    for pass in plan_passes(&lengths, limits) {
        // An ask already failed by an earlier pass needs nothing more.
        let pass: Vec<usize> = pass
            .into_iter()
            .filter(|&e| serving[owners[e].0].reply.is_some())
            .collect();
        if pass.is_empty() {
            continue;
        }
        let rows: Vec<&[u32]> = pass.iter().map(|&e| inputs[e].as_slice()).collect();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.forward_rows(&rows)))
                .unwrap_or_else(|_| {
                    Err(transient("the local model panicked during a pass".into()))
                });
        count_pass(counters, &lengths, &pass);
        match outcome {
            Ok(vectors) => {
                for (&e, vector) in pass.iter().zip(vectors) {
                    let (a, i) = owners[e];
                    let ask = &mut serving[a];
                    ask.vectors[i] = Some(vector);
                    ask.missing -= 1;
                    if ask.missing == 0 {
                        answer(ask);
                    }
                }
            }
            Err(e) => {
                for &e_index in &pass {
                    if let Some(reply) = serving[owners[e_index].0].reply.take() {
                        reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn answer(ask: &mut Serving) {
    let Some(reply) = ask.reply.take() else {
        return;
    };
    let vectors: Option<Vec<Vec<f32>>> = std::mem::take(&mut ask.vectors).into_iter().collect();
    reply.send(vectors.ok_or_else(stopped));
}

fn count_pass(counters: &LaneCounters, lengths: &[usize], pass: &[usize]) {
    let longest = pass.iter().map(|&i| lengths[i]).max().unwrap_or(0) as u64;
    let rows = pass.len() as u64;
    let tokens: usize = pass.iter().map(|&i| lengths[i]).sum();
    counters.passes.fetch_add(1, Ordering::Relaxed);
    counters.inputs.fetch_add(rows, Ordering::Relaxed);
    counters.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    counters
        .padded_tokens
        .fetch_add(padded_tokens(lengths, pass) as u64, Ordering::Relaxed);
    counters
        .attention_positions
        .fetch_add(rows * longest * longest, Ordering::Relaxed);
}
