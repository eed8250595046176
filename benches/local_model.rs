//! Throughput of the in-process provider (all-MiniLM-L6-v2 on candle): sentences per second
//! for batches of 64 twenty-word sentences, with 1 inference thread and with all cores.
//!
//! `cargo bench --bench local_model` (release build). Needs the model files in
//! `$EMBEDQ_MODEL_DIR` or `data/models/all-minilm-l6-v2` (`cargo run -- fetch-model`).
//! Set `BENCH_BATCHES` to time more than the default 12 batches.

use embedq::providers::LocalEmbedder;
use embedq::providers::model_files;
use std::path::{Path, PathBuf};
use std::time::Instant;

const BATCH: usize = 64;
const WORDS: usize = 20;
const WARM_UP_BATCHES: usize = 2;
const DEFAULT_BATCHES: usize = 12;

const VOCABULARY: [&str; 32] = [
    "the",
    "queue",
    "keeps",
    "every",
    "item",
    "in",
    "sync",
    "with",
    "its",
    "vector",
    "while",
    "workers",
    "retry",
    "failed",
    "requests",
    "after",
    "a",
    "short",
    "backoff",
    "and",
    "nothing",
    "is",
    "lost",
    "when",
    "redis",
    "restarts",
    "during",
    "bulk",
    "regeneration",
    "of",
    "large",
    "contexts",
];

fn model_dir() -> PathBuf {
    match std::env::var_os("EMBEDQ_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-minilm-l6-v2"),
    }
}

/// Batch `b`: 64 distinct sentences of 20 words each.
fn batch(b: usize) -> Vec<String> {
    (0..BATCH)
        .map(|i| {
            let seed = b * BATCH + i;
            (0..WORDS)
                .map(|w| VOCABULARY[(seed * 7 + w * 13 + seed / 3 * w) % VOCABULARY.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn run(dir: &Path, threads: usize, batches: usize) {
    let started = Instant::now();
    let embedder = match LocalEmbedder::load(dir, threads) {
        Ok(embedder) => embedder,
        Err(e) => panic!("cannot load the local model: {e}"),
    };
    let load = started.elapsed();
    for b in 0..WARM_UP_BATCHES {
        if let Err(e) = embedder.embed_blocking(&batch(b)) {
            panic!("warm-up failed: {e}");
        }
    }
    let inputs: Vec<Vec<String>> = (0..batches).map(|b| batch(WARM_UP_BATCHES + b)).collect();
    let started = Instant::now();
    for input in &inputs {
        if let Err(e) = embedder.embed_blocking(input) {
            panic!("embedding failed: {e}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sentences = (batches * BATCH) as f64;
    println!(
        "local_model threads={threads} (using {used}): {rate:8.1} sentences/s, {per_batch:6.1} ms \
         per batch of {BATCH} x {WORDS}-word sentences, {batches} batches after {WARM_UP_BATCHES} \
         warm-up (load {load_ms:.0} ms)",
        used = embedder.threads(),
        rate = sentences / elapsed,
        per_batch = elapsed * 1000.0 / batches as f64,
        load_ms = load.as_secs_f64() * 1000.0,
    );
}

fn main() {
    let dir = model_dir();
    let missing = model_files::missing_files(&dir);
    if !missing.is_empty() {
        eprintln!(
            "the local model's files are missing in {} ({}): run `cargo run -- fetch-model`",
            dir.display(),
            missing.join(", ")
        );
        std::process::exit(1);
    }
    let batches = std::env::var("BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 10)
        .unwrap_or(DEFAULT_BATCHES);
    println!(
        "candle: gemm splits matmuls in {} parts; element-wise pool of {} threads \
         (CANDLE_NUM_THREADS={})",
        candle_core::utils::get_num_threads(),
        std::env::var("CANDLE_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(candle_core::utils::get_num_threads),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
    );
    run(&dir, 1, batches);
    run(&dir, 0, batches);
}
