//! Fairness under a saturated quota, printed (no assertions on time). The release daemon runs
//! against the mock at 300 ms, 600 requests/min and 1,000,000 tokens/min:
//!
//! 1. A second tenant's 1,000-item job alone: its time `T_alone`.
//! 2. A 200,000-item bulk job (priority `bulk`) takes the whole quota. 20 s in, the second
//!    tenant's 1,000-item job starts (priority `normal`), and over the next 60 s 50 single-item
//!    edits land at random moments, each an upsert of new content and a job over its one item
//!    (interactive by default). Prints p50 / p99 / max from the upsert to COMPLETED, the second
//!    tenant's time against `T_alone`, and the tokens per minute the mock itself counted (the
//!    quota stays full).
//! 3. The same with the second tenant's job at the bulk job's priority: the two share the quota
//!    in turns, so its time is printed against `2 × T_alone`.
//!
//! `cargo bench --bench fairness` (about six minutes, plus one release build the first time).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

mod common;

use common::passage;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, release_binary};
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TestDatabase, redis_url};

const DIM: usize = 64;
const TOKENS: usize = 50;
const RPM: u64 = 600;
const TPM: u64 = 1_000_000;
const BULK: usize = 200_000;
const TENANT: usize = 1_000;
const EDITS: usize = 50;

async fn seed(http: &reqwest::Client, base: &str, context: &str, prefix: &str, n: usize) {
    for start in (0..n).step_by(1000) {
        let items: Vec<Value> = (start..(start + 1000).min(n))
            .map(|i| json!({"id": format!("{prefix}-{i:06}"), "content": passage(i, TOKENS)}))
            .collect();
        let r = http
            .post(format!("{base}/v1/contexts/{context}/items"))
            .json(&json!({"items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "seeding {context}");
    }
}

async fn create(http: &reqwest::Client, base: &str, body: Value) -> String {
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "creating a job");
    let answer: Value = r.json().await.unwrap();
    answer["job_id"].as_str().unwrap().to_owned()
}

async fn job(http: &reqwest::Client, base: &str, id: &str) -> Value {
    http.get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls every 20 ms until the job is final; returns it.
async fn finished(http: &reqwest::Client, base: &str, id: &str) -> Value {
    loop {
        let j = job(http, base, id).await;
        if matches!(
            j["state"].as_str(),
            Some("COMPLETED" | "FAILED" | "CANCELLED")
        ) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn context_job(context: &str, priority: &str) -> Value {
    json!({"scope": {"type": "context", "context_id": context}, "priority": priority})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One run: a bulk job holding the quota, the tenant's job at `tenant_priority` 20 s in, the
/// edits meanwhile. Returns the tenant's time.
async fn under_bulk(
    http: &reqwest::Client,
    base: &str,
    mock: &MockProvider,
    round: usize,
    tenant_priority: &str,
) -> Duration {
    let bulk = create(http, base, context_job("bulk", "bulk")).await;
    let mock_t0 = mock.audit().embedded_log.last().map(|e| e.0).unwrap_or(0);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(round as u64);
    let mut offsets: Vec<u64> = (0..EDITS).map(|_| rng.random_range(0..60_000)).collect();
    offsets.sort_unstable();
    let edits: Vec<_> = offsets
        .into_iter()
        .enumerate()
        .map(|(n, at)| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(at)).await;
                let id = format!("ed-{n:06}");
                let started = Instant::now();
                let r = http
                    .post(format!("{base}/v1/contexts/edits/items"))
                    .json(&json!({"items": [{"id": id, "content": format!("edit {round}: {}", passage(n + 7_000 * round, TOKENS))}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let job_id = create(&http, &base, json!({"scope": {"type": "items", "item_ids": [id]}})).await;
                let done = finished(&http, &base, &job_id).await;
                assert_eq!(done["completed"], 1, "{done}");
                started.elapsed().as_secs_f64()
            })
        })
        .collect();

    let tenant_started = Instant::now();
    let tenant = create(http, base, context_job("tenant", tenant_priority)).await;
    let tenant_done = finished(http, base, &tenant).await;
    let tenant_took = tenant_started.elapsed();
    assert_eq!(tenant_done["completed"], TENANT as i64, "{tenant_done}");

    let mut latencies = Vec::new();
    for e in edits {
        latencies.push(e.await.unwrap());
    }
    latencies.sort_by(f64::total_cmp);
    let window_ms = t0.elapsed().as_millis() as u64;
    let bulk_now = job(http, base, &bulk).await;
    let r = http
        .post(format!("{base}/v1/jobs/{bulk}/cancel"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let audit = mock.audit();
    // The mock's own count from 10 s in (past the initial burst) to the end of the window.
    let (from, to) = (mock_t0 + 10_000, mock_t0 + window_ms);
    let tokens: u64 = audit
        .embedded_log
        .iter()
        .filter(|(at, _, _)| *at >= from && *at < to)
        .map(|e| e.2)
        .sum();
    let mock_tpm = tokens as f64 / ((to - from) as f64 / 60_000.0);
    println!(
        "[{tenant_priority} tenant] {EDITS} edits, upsert to COMPLETED: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    let refused = audit.by_status.get(&429).copied().unwrap_or(0);
    println!(
        "[{tenant_priority} tenant] the mock counted {mock_tpm:.0} tokens/min ({:.3} of {TPM}) from 10 s to {:.0} s, 429s so far {refused}; the bulk job had {} of {} planned items done",
        mock_tpm / TPM as f64,
        window_ms as f64 / 1000.0,
        bulk_now["done"],
        bulk_now["total"],
    );
    tenant_took
}

async fn fairness(binary: &std::path::Path) {
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
    let env: Vec<(String, String)> = vec![
        ("EMBEDQ__DATABASE__URL".into(), db.url.clone()),
        ("EMBEDQ__REDIS__URL".into(), redis_url()),
        ("EMBEDQ__REDIS__PREFIX".into(), prefix.clone()),
        (
            "EMBEDQ__VECTORS__PATH".into(),
            vectors.path().display().to_string(),
        ),
        ("EMBEDQ__EMBEDDING__PROVIDER".into(), "openai".into()),
        ("EMBEDQ__EMBEDDING__DIMENSION".into(), DIM.to_string()),
        ("EMBEDQ__EMBEDDING__BASE_URL".into(), mock.base_url()),
        (
            "EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE".into(),
            RPM.to_string(),
        ),
        (
            "EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE".into(),
            TPM.to_string(),
        ),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let daemon = Daemon::start_binary(binary.to_owned(), env);
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let http = reqwest::Client::new();
    seed(&http, &base, "tenant", "tn", TENANT).await;
    seed(&http, &base, "bulk", "bk", BULK).await;
    println!(
        "[setup] mock 300 ms, {RPM} requests/min, {TPM} tokens/min; items of ~{TOKENS} tokens; bulk {BULK} items, tenant {TENANT} items"
    );

    let alone_started = Instant::now();
    let alone = create(&http, &base, context_job("tenant", "normal")).await;
    let done = finished(&http, &base, &alone).await;
    let t_alone = alone_started.elapsed();
    assert_eq!(done["completed"], TENANT as i64, "{done}");
    println!(
        "[alone] the tenant's job: {:.2} s (the budget's buckets start full)",
        t_alone.as_secs_f64()
    );
    // The next runs embed the tenant's items again: new content each time.
    let reseed = |round: usize| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let items: Vec<Value> = (0..TENANT)
                .map(|i| json!({"id": format!("tn-{i:06}"), "content": format!("round {round}: {}", passage(i, TOKENS))}))
                .collect();
            let r = http
                .post(format!("{base}/v1/contexts/tenant/items"))
                .json(&json!({"items": items}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };

    reseed(1).await;
    let normal = under_bulk(&http, &base, &mock, 1, "normal").await;
    println!(
        "[normal tenant] its job under the bulk job: {:.2} s, {:.2} × its time alone (it goes first: 1 is ideal)",
        normal.as_secs_f64(),
        normal.as_secs_f64() / t_alone.as_secs_f64()
    );
    reseed(2).await;
    let shared = under_bulk(&http, &base, &mock, 2, "bulk").await;
    println!(
        "[bulk tenant] its job beside the bulk job: {:.2} s, {:.2} × its time alone (half the quota in turns: 2 is ideal)",
        shared.as_secs_f64(),
        shared.as_secs_f64() / t_alone.as_secs_f64()
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let binary = release_binary();
    runtime.block_on(fairness(&binary));
}
