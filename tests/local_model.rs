//! The in-process provider (all-MiniLM-L6-v2 on candle) against sentence-transformers' numbers
//! and an independent numpy implementation (`scripts/minilm_reference.py`, whose output is
//! `tests/data/minilm_reference.json`).
//!
//! Uses the model files in `$EMBEDQ_MODEL_DIR` or `data/models/all-minilm-l6-v2`, fetching them
//! there first (as `embedq fetch-model` does) when they are missing. If they cannot be had these
//! tests fail, on purpose: they never skip.

use embedq::providers::model_files::{self, ModelFilesError};
use embedq::providers::{Embedder, LocalEmbedder, ProviderError};
use std::path::Path;
use std::sync::OnceLock;

const PAIR: (&str, &str) = ("A man is eating food.", "A man is eating a piece of bread.");
const REFERENCE_SENTENCE: &str = "embedq keeps vector embeddings in sync, off the request path.";

#[path = "support/local_model.rs"]
mod local_model_files;

use local_model_files::required_model_dir;

fn embedder() -> &'static LocalEmbedder {
    static EMBEDDER: OnceLock<LocalEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| match LocalEmbedder::load(&required_model_dir(), 0) {
        Ok(embedder) => embedder,
        Err(e) => panic!("cannot load the local model: {e}"),
    })
}

fn embed(inputs: &[&str]) -> Vec<Vec<f32>> {
    let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
    let vectors = embedder()
        .embed_blocking(&inputs)
        .expect("embedding failed");
    assert_eq!(vectors.len(), inputs.len());
    for v in &vectors {
        assert_unit(v);
    }
    vectors
}

fn assert_unit(v: &[f32]) {
    assert_eq!(v.len(), 384);
    assert!(v.iter().all(|x| x.is_finite()));
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() <= 1e-5, "norm {norm}");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pair_cosine_matches_sentence_transformers() {
    let v = embed(&[PAIR.0, PAIR.1]);
    let c = cosine(&v[0], &v[1]);
    println!("cosine{PAIR:?} = {c:.6}");
    assert!(
        (c - 0.755).abs() <= 0.002,
        "cosine {c}, sentence-transformers gives 0.755"
    );
}

#[test]
fn reference_sentence_matches_the_numpy_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let text = std::fs::read_to_string(&path).expect("read the reference");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("parse the reference");
    assert_eq!(reference["sentence"], REFERENCE_SENTENCE);
    let expected: Vec<f32> = reference["vector"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect();
    assert_eq!(expected.len(), 384);

    let v = embed(&[REFERENCE_SENTENCE]);
    let diff = max_abs_diff(&v[0], &expected);
    println!("max |candle - numpy| = {diff:e}");
    assert!(diff <= 1e-5, "max abs difference {diff}");
}

#[test]
fn batching_and_padding_do_not_change_results() {
    let alone = embed(&[REFERENCE_SENTENCE]).remove(0);
    let longer = "A much longer sentence that will force the tokenizer to pad the reference \
                  sentence, because the batch is padded to its longest input and every token \
                  of padding must be masked out of the attention and the mean pooling.";
    let batch = embed(&["Short.", REFERENCE_SENTENCE, longer, "Hi", PAIR.0]);
    let diff = max_abs_diff(&alone, &batch[1]);
    println!("max |alone - in batch| = {diff:e}");
    assert!(diff <= 1e-5, "batched result differs by {diff}");
    // The other inputs are not disturbed by each other either.
    let short_alone = embed(&["Short."]).remove(0);
    assert!(max_abs_diff(&short_alone, &batch[0]) <= 1e-5);
    let longer_alone = embed(&[longer]).remove(0);
    assert!(max_abs_diff(&longer_alone, &batch[2]) <= 1e-5);
}

#[test]
fn more_than_one_batch_keeps_input_order() {
    // 150 inputs: three forward passes of at most 64.
    let inputs: Vec<String> = (0..150).map(|i| format!("item number {i}")).collect();
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let all = embed(&refs);
    for i in [0usize, 63, 64, 127, 128, 149] {
        let alone = embed(&[refs[i]]).remove(0);
        assert!(max_abs_diff(&alone, &all[i]) <= 1e-5, "input {i}");
    }
}

#[test]
fn long_input_is_truncated_not_refused() {
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
    ];
    let text: String = (0..1000)
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let e = embedder();
    assert_eq!(e.count_tokens(&text), 1000);
    let long = embed(&[&text]).remove(0);
    // 256 tokens including [CLS] and [SEP]: the first 254 tokens of the text.
    let cut = e.truncate(&text, 254);
    assert_eq!(e.count_tokens(&cut), 254);
    let short = embed(&[&cut]).remove(0);
    let diff = max_abs_diff(&long, &short);
    assert!(
        diff <= 1e-5,
        "truncation differs from sentence-transformers' by {diff}"
    );
}

#[test]
fn trait_surface() {
    let e = embedder();
    assert_eq!(e.model(), "all-MiniLM-L6-v2");
    assert_eq!(e.dimension(), 384);
    let limits = e.limits();
    assert_eq!(limits.max_inputs, 64);
    assert_eq!(limits.max_tokens_per_input, usize::MAX / 4);
    assert_eq!(limits.max_tokens_per_request, usize::MAX / 4);
    assert!(e.threads() >= 1);
    // No [CLS]/[SEP] in the count; WordPiece splits unknown words.
    assert_eq!(e.count_tokens("hello world"), 2);
    assert_eq!(e.count_tokens(""), 0);
    assert!(e.count_tokens("embeddings") > 1);
    assert_eq!(e.truncate("hello big world", 2), "hello big");
    assert_eq!(e.truncate("hello world", 5), "hello world");
    assert_eq!(e.truncate("hello world", 0), "");
    assert_eq!(e.truncate("héllo wörld again", 2), "héllo wörld");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_embed_runs_off_the_runtime() {
    let e = embedder();
    let inputs = vec![PAIR.0.to_string(), String::new(), PAIR.1.to_string()];
    let out = e
        .embed(&inputs, embedq::providers::InputKind::Document)
        .await
        .expect("embed");
    assert_eq!(out.vectors.len(), 3);
    for v in &out.vectors {
        assert_unit(v);
    }
    let blocking = e.embed_blocking(&inputs).expect("embed");
    // Other tests share the lane: the pass may differ, the vector only within 1e-5.
    assert!(max_abs_diff(&out.vectors[0], &blocking[0]) <= 1e-5);
    assert!(
        e.embed(&[], embedq::providers::InputKind::Document)
            .await
            .expect("empty")
            .vectors
            .is_empty()
    );
}

/// Requests of varied lengths: `workers` × `requests` of 20 inputs each.
fn varied_requests(workers: usize, requests: usize) -> Vec<Vec<String>> {
    (0..workers * requests)
        .map(|r| {
            (0..20)
                .map(|i| {
                    let words = 1 + (r * 31 + i * 17) % 90;
                    (0..words)
                        .map(|w| ["queue", "vector", "item", "sync", "retry"][(r + i + w) % 5])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_at_once_get_what_one_worker_alone_gets() {
    // An embedder of its own: the lane's counters see this test's inputs only.
    static OWN: OnceLock<LocalEmbedder> = OnceLock::new();
    let e = OWN.get_or_init(|| LocalEmbedder::load(&required_model_dir(), 0).expect("load"));
    let requests = varied_requests(4, 3);
    // One worker alone: one request after the other, each input checked against itself
    // embedded on its own (so a mix-up inside a request cannot hide in the reference).
    let alone: Vec<Vec<Vec<f32>>> = requests
        .iter()
        .map(|r| e.embed_blocking(r).expect("embed alone"))
        .collect();
    for (r, request) in requests.iter().enumerate().step_by(5) {
        for (i, text) in request.iter().enumerate().step_by(7) {
            let single = e
                .embed_blocking(std::slice::from_ref(text))
                .expect("embed one");
            assert!(
                max_abs_diff(&single[0], &alone[r][i]) <= 1e-5,
                "request {r} input {i}: not its own vector"
            );
        }
    }
    let before = e.lane_stats();
    // Four workers at once, three requests each, through the async path the pipeline uses.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mine: Vec<(usize, Vec<String>)> = (0..3)
            .map(|k| (w * 3 + k, requests[w * 3 + k].clone()))
            .collect();
        let barrier = barrier.clone();
        workers.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut out = Vec::new();
            for (index, inputs) in mine {
                let embedded = e
                    .embed(&inputs, embedq::providers::InputKind::Document)
                    .await
                    .expect("embed at once");
                out.push((index, embedded.vectors));
            }
            out
        }));
    }
    let mut compared = 0;
    for worker in workers {
        for (index, vectors) in worker.await.expect("worker") {
            assert_eq!(vectors.len(), alone[index].len());
            for (i, (v, a)) in vectors.iter().zip(&alone[index]).enumerate() {
                let diff = max_abs_diff(v, a);
                assert!(diff <= 1e-5, "request {index} input {i} differs by {diff}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 4 * 3 * 20);
    let after = e.lane_stats();
    assert_eq!(
        after.inputs - before.inputs,
        240,
        "every input embedded once"
    );
}

#[test]
fn passes_capped_by_padded_tokens_give_the_same_vectors() {
    let requests = varied_requests(1, 2);
    let inputs: Vec<String> = requests.concat();
    let capped = LocalEmbedder::load_with(&required_model_dir(), 1, 256).expect("load");
    let small = capped.embed_blocking(&inputs).expect("embed capped");
    let stats = capped.lane_stats();
    assert_eq!(stats.inputs, inputs.len() as u64);
    assert!(
        stats.padded_tokens <= stats.passes * 256,
        "a pass went over 256 padded tokens: {stats:?}"
    );
    assert!(stats.passes > 1, "{stats:?}");
    let default = embed(&inputs.iter().map(String::as_str).collect::<Vec<_>>());
    for (i, (a, b)) in small.iter().zip(&default).enumerate() {
        assert!(max_abs_diff(a, b) <= 1e-5, "input {i}");
    }
}

#[test]
fn missing_files_are_fatal_and_say_what_to_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = match LocalEmbedder::load(dir.path(), 1) {
        Ok(_) => panic!("loaded a model from an empty directory"),
        Err(e) => e,
    };
    let ProviderError::Fatal { reason } = err else {
        panic!("expected a fatal error, got {err:?}");
    };
    assert!(reason.contains("embedq fetch-model"), "{reason}");
    assert!(
        reason.contains(&dir.path().display().to_string()),
        "{reason}"
    );
    assert!(reason.contains("model.safetensors"), "{reason}");
}

#[test]
fn model_files_check_passes_and_catches_a_corrupted_copy() {
    let dir = required_model_dir();
    model_files::check(&dir).expect("the fetched model passes its checksum");

    let copy = tempfile::tempdir().expect("tempdir");
    for name in model_files::FILES {
        std::fs::copy(dir.join(name), copy.path().join(name)).expect("copy");
    }
    let weights = copy.path().join(model_files::MODEL_FILE);
    let mut bytes = std::fs::read(&weights).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&weights, bytes).expect("write");

    let err = model_files::check(copy.path()).expect_err("a flipped bit must fail the check");
    assert!(
        matches!(err, ModelFilesError::Checksum { .. }),
        "expected a checksum error, got {err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("sha256"), "{message}");
    assert!(
        message.contains(&weights.display().to_string()),
        "{message}"
    );
    assert!(message.contains(model_files::MODEL_SHA256), "{message}");
}
