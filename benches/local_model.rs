//! The local model (all-MiniLM-L6-v2 on candle) against what this machine can do, printed
//! (no assertions on time):
//!
//! 1. **The ceiling**: a plain f32 matmul of the model's feed-forward shape (8,192 × 384 by
//!    384 × 1,536), through candle on a pool of the same size as the embedder's, in GFLOP/s.
//! 2. **In-process**, four workers asking at once (as the pipeline's default four embedding
//!    workers do, 64 inputs a request) through the inference lane, for the demo corpus and for
//!    2,000 items of 400 characters: items/s, tokens/s, the GFLOP/s achieved — from the
//!    model's dimensions (`config.json`) and the tokens the passes processed, attention
//!    included — counted on the real tokens alone ("useful") and with attention over the
//!    padded lengths ("computed"; the dense layers never see padding), as a fraction of the
//!    matmul's; how much padding the passes held; and the process's peak RSS during the run.
//! 3. **End to end**: the release `embedq serve` (the binary users run, default settings:
//!    SQLite, qdrant-edge, the local model) embedding the same 2,000 items: items/s, the
//!    daemon's CPU per item and its peak RSS. `EMBEDQ_BENCH_BINARY` points this part at another
//!    build (an older commit's, for a before/after); `BENCH_SKIP_DAEMON=1` skips it, and
//!    `BENCH_SKIP_IN_PROCESS=1` skips part 2.
//!
//! `cargo bench --bench local_model`. Needs the model files in `$EMBEDQ_MODEL_DIR` or
//! `data/models/all-minilm-l6-v2` (`cargo run -- fetch-model`), and Redis for part 3.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

mod common;

use candle_core::{Device, Tensor};
use common::{cpu_ms, rss_mib};
use embedq::providers::{LaneStats, LocalEmbedder, model_files};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, release_binary};
use support::redis_url;

const WORKERS: usize = 4;
const REQUEST: usize = 64;
const LONG_ITEMS: usize = 2000;
const LONG_CHARS: usize = 400;

fn model_dir() -> PathBuf {
    match std::env::var_os("EMBEDQ_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-minilm-l6-v2"),
    }
}

/// The model's shape, from its `config.json`.
struct Shape {
    layers: f64,
    hidden: f64,
    intermediate: f64,
}

impl Shape {
    fn read(dir: &Path) -> Shape {
        let text = std::fs::read_to_string(dir.join("config.json")).expect("read config.json");
        let c: Value = serde_json::from_str(&text).expect("parse config.json");
        let get = |k: &str| {
            c[k].as_f64()
                .unwrap_or_else(|| panic!("config.json lacks {k}"))
        };
        Shape {
            layers: get("num_hidden_layers"),
            hidden: get("hidden_size"),
            intermediate: get("intermediate_size"),
        }
    }

    /// FLOPs of the encoder for `tokens` token positions and `pairs` query-key pairs (Σ rows ×
    /// length², per head): per layer, Q, K, V and the output projection (4 · 2h² per token), the
    /// feed-forward (2 · 2hi per token), and attention's QKᵀ and AV (2 · 2h per pair, the heads
    /// together spanning h).
    fn flops(&self, tokens: f64, pairs: f64) -> f64 {
        let (h, i) = (self.hidden, self.intermediate);
        self.layers * (tokens * (8.0 * h * h + 4.0 * h * i) + pairs * 4.0 * h)
    }
}

fn demo_corpus() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/corpus.jsonl"))
            .expect("read demo/corpus.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            v["content"].as_str().expect("content").to_owned()
        })
        .collect()
}

/// `n` distinct items of `chars` characters, English words drawn from the demo corpus.
fn long_items(n: usize, chars: usize) -> Vec<String> {
    let words: Vec<String> = demo_corpus()
        .iter()
        .flat_map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    (0..n)
        .map(|i| {
            let mut out = format!("item {i}:");
            let mut k = i.wrapping_mul(7919);
            while out.len() < chars {
                out.push(' ');
                out.push_str(&words[k % words.len()]);
                k = k.wrapping_mul(31).wrapping_add(17);
            }
            let mut end = chars;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out
        })
        .collect()
}

/// GFLOP/s of a plain f32 matmul of the feed-forward's shape on a pool of `threads` threads:
/// the best of several runs.
fn matmul_gflops(threads: usize, shape: &Shape) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a pool");
    let (m, k, n) = (
        8192usize,
        shape.hidden as usize,
        shape.intermediate as usize,
    );
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).expect("a");
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).expect("b");
    pool.install(|| {
        let _ = a.matmul(&b).expect("warm-up");
        (0..8)
            .map(|_| {
                let t = Instant::now();
                let c = a.matmul(&b).expect("matmul");
                let secs = t.elapsed().as_secs_f64();
                drop(c);
                2.0 * (m * k * n) as f64 / secs / 1e9
            })
            .fold(0.0, f64::max)
    })
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// What one in-process run measured, printed once the ceiling is known.
struct Run {
    name: &'static str,
    items: usize,
    secs: f64,
    tokens: f64,
    padded: f64,
    passes: u64,
    useful: f64,
    computed: f64,
    peak_rss_mib: f64,
}

impl Run {
    fn print(&self, ceiling: f64) {
        println!(
            "[{}] {} items in {:.2} s: {:.1} items/s, {:.0} tokens/s ({:.1} tokens/item, \
             padding +{:.1}%, {} passes); {:.1} GFLOP/s useful ({:.0}% of the matmul), \
             {:.1} GFLOP/s computed ({:.0}%); peak RSS {:.0} MiB",
            self.name,
            self.items,
            self.secs,
            self.items as f64 / self.secs,
            self.tokens / self.secs,
            self.tokens / self.items as f64,
            (self.padded / self.tokens - 1.0) * 100.0,
            self.passes,
            self.useful,
            self.useful / ceiling * 100.0,
            self.computed,
            self.computed / ceiling * 100.0,
            self.peak_rss_mib,
        );
    }
}

/// Four workers, 64 inputs a request, all asking at once.
fn in_process(
    name: &'static str,
    embedder: &LocalEmbedder,
    items: &[String],
    shape: &Shape,
) -> Run {
    let before: LaneStats = embedder.lane_stats();
    reset_peak_rss();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let start = next.fetch_add(REQUEST, Ordering::Relaxed);
                    if start >= items.len() {
                        return;
                    }
                    let chunk = &items[start..(start + REQUEST).min(items.len())];
                    let vectors = embedder.embed_blocking(chunk).expect("embedding failed");
                    assert_eq!(vectors.len(), chunk.len());
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let after = embedder.lane_stats();
    let passes = after.passes - before.passes;
    let tokens = (after.tokens - before.tokens) as f64;
    let padded = (after.padded_tokens - before.padded_tokens) as f64;
    let pairs = (after.attention_positions - before.attention_positions) as f64;
    assert_eq!(
        after.inputs - before.inputs,
        items.len() as u64,
        "every input embedded once"
    );
    // Useful work: the real tokens, and attention over real lengths only (Σ len²).
    let real_pairs: f64 = items
        .iter()
        .map(|t| {
            let n = embedder_len(embedder, t) as f64;
            n * n
        })
        .sum();
    let useful = shape.flops(tokens, real_pairs) / secs / 1e9;
    // What the passes computed: the dense layers see only the real tokens; attention runs
    // over each pass's padded square.
    let computed = shape.flops(tokens, pairs) / secs / 1e9;
    Run {
        name,
        items: items.len(),
        secs,
        tokens,
        padded,
        passes,
        useful,
        computed,
        peak_rss_mib: rss_mib(std::process::id(), "VmHWM:"),
    }
}

/// Tokens of `text` as a pass holds it: with `[CLS]` and `[SEP]`, at most 256.
fn embedder_len(embedder: &LocalEmbedder, text: &str) -> usize {
    use embedq::providers::Embedder;
    (embedder.count_tokens(text) + 2).min(256)
}

/// The release daemon, default settings but for where it keeps its files, on `items`.
fn end_to_end(items: &[String]) {
    let binary = release_binary();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
        let env: Vec<(String, String)> = vec![
            (
                "EMBEDQ__DATABASE__URL".into(),
                format!("sqlite://{}/embedq.db", dir.path().display()),
            ),
            ("EMBEDQ__REDIS__URL".into(), redis_url()),
            ("EMBEDQ__REDIS__PREFIX".into(), prefix.clone()),
            (
                "EMBEDQ__VECTORS__PATH".into(),
                dir.path().join("vectors").display().to_string(),
            ),
            ("EMBEDQ__EMBEDDING__PROVIDER".into(), "local".into()),
            (
                "EMBEDQ__EMBEDDING__MODEL_DIR".into(),
                model_dir().display().to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let daemon = Daemon::start_binary(binary.clone(), env);
        let base = format!("http://127.0.0.1:{}", daemon.port);
        let http = reqwest::Client::new();
        for (n, chunk) in items.chunks(1000).enumerate() {
            let body: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"id": format!("it-{:06}", n * 1000 + i), "content": c}))
                .collect();
            let r = http
                .post(format!("{base}/v1/contexts/bench/items"))
                .json(&json!({"items": body}))
                .send()
                .await
                .expect("seed");
            assert_eq!(r.status().as_u16(), 200, "seeding");
        }
        let cpu_before = cpu_ms(daemon.pid());
        let started = Instant::now();
        let id = common::create_job(&http, &base, "bench").await;
        let (job, _) = common::follow(&http, &base, &id).await;
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_ms(daemon.pid()) - cpu_before;
        assert_eq!(job["completed"].as_u64(), Some(items.len() as u64), "{job}");
        println!(
            "[daemon] {} ({}): {} items of {LONG_CHARS} characters in {secs:.1} s: {:.1} items/s \
             end to end, {:.1} ms CPU per item, peak RSS {:.0} MiB",
            binary.display(),
            version(&binary),
            items.len(),
            items.len() as f64 / secs,
            cpu / items.len() as f64,
            rss_mib(daemon.pid(), "VmHWM:"),
        );
        drop(daemon);
        tokio::time::sleep(Duration::from_millis(100)).await;
        support::delete_prefix(&redis_url(), &prefix).await;
    });
}

fn version(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
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
    let threads = embedq::providers::local_model_threads(0);
    // As the binary does before any thread starts: candle's GEMM split and element-wise pool
    // on the embedder's cores.
    // SAFETY: no other thread runs yet.
    unsafe { embedq::providers::prepare_process_for_local_model(0) };
    let shape = Shape::read(&dir);
    // The ceiling is measured before and after the model's runs and the higher one is used:
    // this machine's speed drifts, and the ratio must not flatter the model.
    let first = matmul_gflops(threads, &shape);

    let long = long_items(LONG_ITEMS, LONG_CHARS);
    if std::env::var_os("BENCH_SKIP_IN_PROCESS").is_none() {
        let embedder = LocalEmbedder::load(&dir, 0).expect("load the local model");
        let demo = demo_corpus();
        // Warm-up: the first pass of each size pays for allocation.
        embedder.embed_blocking(&demo[..REQUEST]).expect("warm-up");
        let runs = [
            in_process("demo corpus", &embedder, &demo, &shape),
            in_process("400-character items", &embedder, &long, &shape),
        ];
        let second = matmul_gflops(threads, &shape);
        let ceiling = first.max(second);
        println!(
            "[matmul] f32 8192x{h}x{i} on {threads} threads: {first:.1} GFLOP/s before the runs, \
             {second:.1} after (best of 8 each); the higher, {ceiling:.1}, is the ceiling",
            h = shape.hidden,
            i = shape.intermediate
        );
        for run in runs {
            run.print(ceiling);
        }
    }

    if std::env::var_os("BENCH_SKIP_DAEMON").is_none() {
        end_to_end(&long);
    }
}
