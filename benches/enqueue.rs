//! Enqueue and planning figures, printed (no assertions on time):
//!
//! 1. `POST /v1/jobs` for a context of 100,000 items: p50/p99 over 200 requests, against the
//!    same client's `GET /healthz` as the baseline measured in the same run.
//! 2. How long the planner then takes to plan one such job (items/s).
//! 3. Planning a 1,000,000-item job: the daemon's idle RSS and its peak RSS while planning.
//!
//! Runs the release `embedq` binary as a child process against the machine's PostgreSQL and
//! Redis (and SQLite). `cargo bench --bench enqueue`; `EMBEDQ_BENCH_DB=postgres` or `sqlite`
//! limits it to one backend.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, release_binary};
use support::{Backend, TestDatabase, redis_url};

fn env_for(db: &str, prefix: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    // The vectors of each daemon go to a fresh directory (left in the temp dir); no provider
    // is called (planning only), so the OpenAI client is configured and never used.
    let vectors = tempfile::tempdir().unwrap().keep().display().to_string();
    let mut env: Vec<(String, String)> = [
        ("EMBEDQ__DATABASE__URL", db),
        ("EMBEDQ__REDIS__URL", &redis_url()),
        ("EMBEDQ__REDIS__PREFIX", prefix),
        ("EMBEDQ__VECTORS__PATH", vectors.as_str()),
        ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
        ("EMBEDQ__PIPELINE__EMBED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_planned(
    http: &reqwest::Client,
    base: &str,
    job: &str,
    mut sample: impl FnMut(),
) -> Value {
    loop {
        sample();
        let j: Value = http
            .get(format!("{base}/v1/jobs/{job}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["planned"] == true {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn post_job(http: &reqwest::Client, base: &str, context: &str) -> (Duration, String) {
    let t = Instant::now();
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": context}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let took = t.elapsed();
    assert_eq!(status, 202, "{body}");
    (took, body["job_id"].as_str().unwrap().to_owned())
}

async fn new_store(backend: Backend) -> (TestDatabase, embedq::store::Store) {
    let db = TestDatabase::create(backend).await;
    let mut settings = embedq::config::Settings::defaults().database;
    settings.url = db.url.clone();
    let store = embedq::store::Store::connect(&settings).await.unwrap();
    store.migrate().await.unwrap();
    (db, store)
}

async fn enqueue_latency_and_planning(binary: &std::path::Path, backend: Backend) {
    let (db, store) = new_store(backend).await;
    support::bulk_seed(&store, "big", 100_000).await;
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let daemon = Daemon::start_binary(binary.to_owned(), env_for(&db.url, &prefix, &[]));
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let http = reqwest::Client::new();

    for _ in 0..20 {
        http.get(format!("{base}/healthz")).send().await.unwrap();
    }
    let mut baseline = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        let _ = r.bytes().await;
        baseline.push(t.elapsed());
    }
    let mut enqueue = Vec::with_capacity(200);
    for _ in 0..200 {
        enqueue.push(post_job(&http, &base, "big").await.0);
    }
    baseline.sort();
    enqueue.sort();
    let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
    let (e50, e99) = (percentile(&enqueue, 0.5), percentile(&enqueue, 0.99));
    println!(
        "[{backend:?}] POST /v1/jobs (100,000-item context, 200 requests, planner busy): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(e50),
        ms(e99),
        ms(*enqueue.last().unwrap())
    );
    println!(
        "[{backend:?}] baseline GET /healthz (same client, same run):            p50 {:.2} ms, p99 {:.2} ms; enqueue/baseline p99 ratio {:.1}x",
        ms(b50),
        ms(b99),
        e99.as_secs_f64() / b99.as_secs_f64()
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;

    // Planner time for one such job, on a daemon with nothing else to do.
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let daemon = Daemon::start_binary(binary.to_owned(), env_for(&db.url, &prefix, &[]));
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let t = Instant::now();
    let (_, job) = post_job(&http, &base, "big").await;
    let planned = wait_planned(&http, &base, &job, || {}).await;
    let took = t.elapsed();
    println!(
        "[{backend:?}] planning one 100,000-item job: {:.2} s ({:.0} items/s), total {}",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64(),
        planned["total"]
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

async fn planning_memory(binary: &std::path::Path, backend: Backend) {
    let (db, store) = new_store(backend).await;
    support::bulk_seed(&store, "huge", 1_000_000).await;
    let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
    let daemon = Daemon::start_binary(
        binary.to_owned(),
        env_for(
            &db.url,
            &prefix,
            &[("EMBEDQ__PLANNER__MAX_QUEUED_TASKS", "100000")],
        ),
    );
    let pid = daemon.pid();
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let http = reqwest::Client::new();
    for _ in 0..50 {
        http.get(format!("{base}/readyz")).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid, "VmRSS:");
    let t = Instant::now();
    let (_, job) = post_job(&http, &base, "huge").await;
    let mut peak = idle;
    let planned = wait_planned(&http, &base, &job, || {
        peak = peak.max(rss_kib(pid, "VmRSS:"))
    })
    .await;
    let took = t.elapsed();
    let hwm = rss_kib(pid, "VmHWM:");
    println!(
        "[{backend:?}] planning a 1,000,000-item job: {:.2} s ({:.0} items/s), total {}",
        took.as_secs_f64(),
        1_000_000.0 / took.as_secs_f64(),
        planned["total"]
    );
    println!(
        "[{backend:?}] daemon RSS: idle {:.1} MiB, peak while planning {:.1} MiB (sampled every ~10 ms), growth {:.1} MiB; VmHWM {:.1} MiB",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(idle)) as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let which = std::env::var("EMBEDQ_BENCH_DB").unwrap_or_default();
    let backends: Vec<Backend> = match which.as_str() {
        "postgres" => vec![Backend::Postgres],
        "sqlite" => vec![Backend::Sqlite],
        _ => vec![Backend::Postgres, Backend::Sqlite],
    };
    println!(
        "embedq enqueue bench: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let binary = release_binary();
    for backend in backends {
        runtime.block_on(enqueue_latency_and_planning(&binary, backend));
        runtime.block_on(planning_memory(&binary, backend));
    }
}
