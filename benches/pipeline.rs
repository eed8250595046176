//! Pipeline figures against the mock provider, printed (no assertions on time):
//!
//! 1. Throughput at the provider's limits: mock at 300 ms, 600 requests/min and 1,000,000
//!    tokens/min; a 40,000-item job of ~50-token items. Prints items/s over a steady window
//!    (the first 10 s, where the buckets' initial burst lands, are skipped) against the bound
//!    `min(RPM × max_inputs_per_request, TPM / tokens_per_item) / 60`, their ratio, the tokens
//!    and requests per minute the mock itself counted in that window, the 429s received, the
//!    daemon's CPU milliseconds per item and its peak RSS.
//! 2. Packing: the same against 60 requests/min and 1,500,000 tokens/min (the request budget
//!    binds: requests must be full) and against 3,000 requests/min and 300,000 tokens/min (the
//!    token budget binds), with items of ~100 tokens.
//!    And with no quota at all: items/s against what four workers of one request each allow
//!    at 300 ms, with the daemon's and the mock's CPU per item (on 2 cores, the CPU binds).
//! 3. Two daemons sharing one Redis against a mock allowing 600 requests/min: the combined
//!    request rate over a steady minute, as the mock counted it, and each daemon's share from
//!    its own `/metrics`.
//!
//! `cargo bench --bench pipeline` (about eight minutes, plus one release build the first time).
//! Runs the release `embedq` binary — built without the tests' fault points, see
//! `support::daemon::release_binary` — as child processes against the machine's PostgreSQL
//! and Redis.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

mod common;

use common::{cpu_ms, create_job, follow, passage, requests_made, rss_mib, seed};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, release_binary};
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TestDatabase, redis_url};

const DIM: usize = 64;

fn env(
    db: &str,
    prefix: &str,
    vectors: &std::path::Path,
    mock: &MockProvider,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("EMBEDQ__DATABASE__URL".into(), db.into()),
        ("EMBEDQ__REDIS__URL".into(), redis_url()),
        ("EMBEDQ__REDIS__PREFIX".into(), prefix.into()),
        (
            "EMBEDQ__VECTORS__PATH".into(),
            vectors.display().to_string(),
        ),
        ("EMBEDQ__EMBEDDING__PROVIDER".into(), "openai".into()),
        ("EMBEDQ__EMBEDDING__DIMENSION".into(), DIM.to_string()),
        ("EMBEDQ__EMBEDDING__BASE_URL".into(), mock.base_url()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// One job at the provider's limits: `items` of `tokens` tokens against a mock at 300 ms
/// allowing `rpm` requests and `tpm` tokens a minute (embedq configured with the same).
async fn throughput(
    binary: &std::path::Path,
    label: &str,
    items: usize,
    tokens: usize,
    rpm: u64,
    tpm: u64,
) {
    const MAX_INPUTS: f64 = 2048.0; // embedding.max_inputs_per_request
    const WARM_UP_MS: u64 = 10_000;
    let mock = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(300),
        requests_per_minute: Some(rpm as u32),
        tokens_per_minute: Some(tpm),
        ..MockScript::default()
    })
    .await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let vectors = tempfile::tempdir().unwrap();
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let daemon = Daemon::start_binary(
        binary.to_owned(),
        env(
            &db.url,
            &prefix,
            vectors.path(),
            &mock,
            &[
                ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", rpm.to_string()),
                ("EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE", tpm.to_string()),
            ],
        ),
    );
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let http = reqwest::Client::new();
    seed(&http, &base, "bench", items, tokens).await;
    let counter = embedq::providers::TokenCounter::new(embedq::config::Tokenizer::Cl100kBase);
    let tokens_per_item = (0..200)
        .map(|i| counter.count(&passage(i * 197, tokens)))
        .sum::<usize>() as f64
        / 200.0;
    // What the quota allows, and what the provider's latency allows the daemon's workers
    // (pipeline.workers = 4, one request each, of at most 2,048 inputs at 300 ms).
    let quota_bound = (rpm as f64 * MAX_INPUTS).min(tpm as f64 / tokens_per_item) / 60.0;
    let latency_bound = 4.0 * MAX_INPUTS / 0.3;
    let bound = quota_bound.min(latency_bound);

    let cpu_before = cpu_ms(daemon.pid());
    let mock_cpu_before = cpu_ms(std::process::id());
    let mock_t0 = mock.audit().embedded_log.last().map(|e| e.0).unwrap_or(0);
    let started = Instant::now();
    let id = create_job(&http, &base, "bench").await;
    let (job, samples) = follow(&http, &base, &id).await;
    let took = started.elapsed();
    let cpu = cpu_ms(daemon.pid()) - cpu_before;
    let mock_cpu = cpu_ms(std::process::id()) - mock_cpu_before;
    // The steady window: from WARM_UP_MS to the last sample before the end.
    let first = samples.iter().find(|(t, _)| *t >= WARM_UP_MS).copied();
    let last = samples.iter().rev().nth(1).copied();
    let (window, steady) = match (first, last) {
        (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => {
            let secs = (t1 - t0) as f64 / 1000.0;
            ((t0, t1), (d1 - d0) as f64 / secs)
        }
        _ => (
            (0, took.as_millis() as u64),
            items as f64 / took.as_secs_f64(),
        ),
    };
    let audit = mock.audit();
    // The mock's own counts over the same window (its clock: offset by when the job started).
    let offset = mock_t0;
    let in_window: Vec<&(u64, u32, u64)> = audit
        .embedded_log
        .iter()
        .filter(|(at, _, _)| *at >= offset + window.0 && *at < offset + window.1)
        .collect();
    let minutes = (window.1 - window.0) as f64 / 60_000.0;
    let mock_tpm = in_window.iter().map(|e| e.2).sum::<u64>() as f64 / minutes;
    let mock_rpm = in_window.len() as f64 / minutes;
    println!(
        "[{label}] {items} items of {tokens_per_item:.1} tokens; mock 300 ms, {rpm} requests/min, {tpm} tokens/min"
    );
    println!(
        "[{label}] steady {steady:.1} items/s (window {:.0}-{:.0} s; whole job {:.1} items/s in {:.1} s); bound {bound:.1} items/s; ratio {:.3}; completed {} failed {}",
        window.0 as f64 / 1000.0,
        window.1 as f64 / 1000.0,
        items as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        steady / bound,
        job["completed"],
        job["failed"]
    );
    println!(
        "[{label}] the mock counted {mock_tpm:.0} tokens/min ({:.3} of {tpm}) and {mock_rpm:.1} requests/min in that window; {} requests in all, 429s received {}",
        mock_tpm / tpm as f64,
        audit.requests,
        audit.by_status.get(&429).copied().unwrap_or(0),
    );
    println!(
        "[{label}] daemon CPU {:.3} ms/item, the mock (this process) {:.3} ms/item: {:.2} of the machine's 2 cores in all over the job; daemon peak RSS {:.1} MiB",
        cpu / items as f64,
        mock_cpu / items as f64,
        (cpu + mock_cpu) / took.as_secs_f64() / 1000.0,
        rss_mib(daemon.pid(), "VmHWM:")
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

async fn two_daemons_share_one_budget(binary: &std::path::Path) {
    const RPM: u64 = 600;
    let mock = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(50),
        requests_per_minute: Some(RPM as u32),
        ..MockScript::default()
    })
    .await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let extra = [
        ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", RPM.to_string()),
        (
            "EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE",
            "100000000".to_string(),
        ),
        ("EMBEDQ__PLANNER__TASK_SIZE", "4".to_string()),
        // Requests of at most 4 inputs, so the request budget binds for the whole run.
        ("EMBEDQ__EMBEDDING__MAX_INPUTS_PER_REQUEST", "4".to_string()),
    ];
    let (va, vb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &std::path::Path| {
        Daemon::start_binary(binary.to_owned(), env(&db.url, &prefix, dir, &mock, &extra))
    };
    let (a, b) = (start(va.path()), start(vb.path()));
    let http = reqwest::Client::new();
    let base_a = format!("http://127.0.0.1:{}", a.port);
    let base_b = format!("http://127.0.0.1:{}", b.port);
    seed(&http, &base_a, "shared", 4 * 900, 20).await;
    let started = mock.audit().request_times_ms.len();
    let t0 = Instant::now();
    let _job = create_job(&http, &base_a, "shared").await;
    tokio::time::sleep(Duration::from_secs(75)).await;
    let audit = mock.audit();
    let (by_a, by_b) = (
        requests_made(&http, &base_a).await,
        requests_made(&http, &base_b).await,
    );
    let times = &audit.request_times_ms[started..];
    let first = *times.first().unwrap_or(&0);
    // A steady minute: from 10 s after the first request to 70 s.
    let (from, to) = (first + 10_000, first + 70_000);
    let in_window = times.iter().filter(|t| **t >= from && **t < to).count();
    let deviation = (in_window as f64 - RPM as f64) / RPM as f64 * 100.0;
    println!(
        "[two daemons] combined requests in a steady minute, as the mock counted them: {in_window} (limit {RPM}/min, {deviation:+.2}%); 429s received {}; elapsed {:.0} s",
        audit.by_status.get(&429).copied().unwrap_or(0),
        t0.elapsed().as_secs_f64()
    );
    let total = (by_a + by_b).max(1.0);
    println!(
        "[two daemons] each daemon's own count of its requests: A {by_a:.0} ({:.1}%), B {by_b:.0} ({:.1}%); the mock saw {} in all",
        by_a / total * 100.0,
        by_b / total * 100.0,
        times.len()
    );
    drop(a);
    drop(b);
    support::delete_prefix(&redis_url(), &prefix).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench --bench pipeline -- throughput` (or `two-daemons`) runs one part.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = |name: &str| args.iter().any(|a| a == name);
    let all = !only("throughput") && !only("packing") && !only("unlimited") && !only("two-daemons");
    let binary = release_binary();
    if all || only("throughput") {
        runtime.block_on(throughput(
            &binary,
            "throughput",
            40_000,
            50,
            600,
            1_000_000,
        ));
    }
    if all || only("packing") {
        // The request budget binds: each request must carry 2,048 inputs' worth of tokens.
        runtime.block_on(throughput(
            &binary,
            "packing, requests bind",
            20_000,
            100,
            60,
            1_500_000,
        ));
        // The token budget binds: requests stay big enough that the request budget never does.
        runtime.block_on(throughput(
            &binary,
            "packing, tokens bind",
            5_000,
            100,
            3_000,
            300_000,
        ));
    }
    if all || only("unlimited") {
        // No quota: what the provider's latency and the machine allow.
        runtime.block_on(throughput(
            &binary,
            "unlimited",
            40_000,
            100,
            1_000_000_000,
            100_000_000_000,
        ));
    }
    if all || only("two-daemons") {
        runtime.block_on(two_daemons_share_one_budget(&binary));
    }
}
