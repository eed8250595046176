//! Pipeline figures against the mock provider, printed (no assertions on time):
//!
//! 1. Throughput at the provider's limits: mock at 300 ms, 600 requests/min and 1,000,000
//!    tokens/min; a 40,000-item job of ~50-token items. Prints items/s against the bound
//!    `min(RPM × inputs_per_request, TPM / tokens_per_item) / 60`, their ratio, the 429s
//!    received, the daemon's CPU milliseconds per item and its peak RSS.
//! 2. Two daemons sharing one Redis against a mock allowing 600 requests/min: the combined
//!    request rate over a steady minute.
//!
//! `cargo bench --bench pipeline` (about four minutes). Runs the release `embedq` binary as
//! child processes against the machine's PostgreSQL and Redis.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::Daemon;
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

/// A passage of about `tokens` cl100k tokens, distinct per `i`.
fn passage(i: usize, tokens: usize) -> String {
    const WORDS: [&str; 16] = [
        "river", "stone", "garden", "window", "letter", "engine", "market", "silver", "harbor",
        "forest", "pencil", "summer", "bridge", "candle", "orange", "planet",
    ];
    let mut out = format!("item {i}:");
    let mut k = i;
    for _ in 0..tokens.saturating_sub(4) {
        out.push(' ');
        out.push_str(WORDS[k % WORDS.len()]);
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    out
}

async fn seed(http: &reqwest::Client, base: &str, context: &str, n: usize, tokens: usize) {
    for start in (0..n).step_by(1000) {
        let items: Vec<Value> = (start..(start + 1000).min(n))
            .map(|i| json!({"id": format!("it-{i:06}"), "content": passage(i, tokens)}))
            .collect();
        let r = http
            .post(format!("{base}/v1/contexts/{context}/items"))
            .json(&json!({"items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}

async fn run_job(http: &reqwest::Client, base: &str, context: &str) -> (Value, Duration) {
    let t = Instant::now();
    let r: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": context}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["job_id"].as_str().unwrap().to_owned();
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(job["state"].as_str(), Some("COMPLETED" | "FAILED")) {
            return (job, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn throughput() {
    const ITEMS: usize = 40_000;
    const TOKENS: usize = 50;
    const RPM: u64 = 600;
    const TPM: u64 = 1_000_000;
    let mock = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(300),
        requests_per_minute: Some(RPM as u32),
        tokens_per_minute: Some(TPM),
        ..MockScript::default()
    })
    .await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let vectors = tempfile::tempdir().unwrap();
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let daemon = Daemon::start(env(
        &db.url,
        &prefix,
        vectors.path(),
        &mock,
        &[
            ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", RPM.to_string()),
            ("EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE", TPM.to_string()),
        ],
    ));
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let http = reqwest::Client::new();
    seed(&http, &base, "bench", ITEMS, TOKENS).await;
    let counter = embedq::providers::TokenCounter::new("cl100k_base");
    let tokens_per_item = (0..200)
        .map(|i| counter.count(&passage(i * 197, TOKENS)))
        .sum::<usize>() as f64
        / 200.0;
    let inputs_per_request = 64.0; // planner.task_size: one request per task
    let bound = (RPM as f64 * inputs_per_request).min(TPM as f64 / tokens_per_item) / 60.0;

    let cpu_before = cpu_ms(daemon.pid());
    let (job, took) = run_job(&http, &base, "bench").await;
    let cpu = cpu_ms(daemon.pid()) - cpu_before;
    let rate = ITEMS as f64 / took.as_secs_f64();
    let audit = mock.audit();
    println!(
        "[throughput] {ITEMS} items of {tokens_per_item:.1} tokens; mock 300 ms, {RPM} requests/min, {TPM} tokens/min"
    );
    println!(
        "[throughput] {rate:.1} items/s in {:.1} s; bound {bound:.1} items/s; ratio {:.3}; completed {} failed {}",
        took.as_secs_f64(),
        rate / bound,
        job["completed"],
        job["failed"]
    );
    println!(
        "[throughput] requests {}, 429s received {}, daemon CPU {:.3} ms/item, peak RSS {:.1} MiB",
        audit.requests,
        audit.by_status.get(&429).copied().unwrap_or(0),
        cpu / ITEMS as f64,
        rss_mib(daemon.pid(), "VmHWM:")
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

async fn two_daemons_share_one_budget() {
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
    ];
    let (va, vb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(env(&db.url, &prefix, va.path(), &mock, &extra));
    let b = Daemon::start(env(&db.url, &prefix, vb.path(), &mock, &extra));
    let http = reqwest::Client::new();
    let base_a = format!("http://127.0.0.1:{}", a.port);
    seed(&http, &base_a, "shared", 4 * 900, 20).await;
    let started = mock.audit().request_times_ms.len();
    let t0 = Instant::now();
    let r: Value = http
        .post(format!("{base_a}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": "shared"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = r;
    tokio::time::sleep(Duration::from_secs(75)).await;
    let audit = mock.audit();
    let times = &audit.request_times_ms[started..];
    let first = *times.first().unwrap_or(&0);
    // A steady minute: from 10 s after the first request to 70 s.
    let (from, to) = (first + 10_000, first + 70_000);
    let in_window = times.iter().filter(|t| **t >= from && **t < to).count();
    let deviation = (in_window as f64 - RPM as f64) / RPM as f64 * 100.0;
    println!(
        "[two daemons] combined requests in a steady minute: {in_window} (limit {RPM}/min, {deviation:+.2}%); 429s received {}; elapsed {:.0} s",
        audit.by_status.get(&429).copied().unwrap_or(0),
        t0.elapsed().as_secs_f64()
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
    let all = !only("throughput") && !only("two-daemons");
    if all || only("throughput") {
        runtime.block_on(throughput());
    }
    if all || only("two-daemons") {
        runtime.block_on(two_daemons_share_one_budget());
    }
}
