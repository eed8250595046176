//! Scale-out figures with 1, 2 and 3 daemons sharing one Redis and one PostgreSQL, printed
//! (no assertions on time):
//!
//! 1. The global budget: three daemons against a quota of 300 requests and 300,000 tokens per
//!    minute (requests of at most 10 inputs of ~100 tokens, so both budgets bind): the
//!    combined request and token rate over a steady minute as the mock counted it, against
//!    the quota, and each daemon's share from its own `/metrics`.
//! 2. A table for 1, 2 and 3 daemons: items/s when the provider's latency binds (300 ms, one
//!    request in flight per daemon, no quota) — it should grow with the daemons — and when the
//!    quota binds (120 requests/min of 64 inputs) — it should stay flat at the bound.
//!
//! `cargo bench --bench scale_out` (about eight minutes, plus one release build the first
//! time). The daemons are the release binary users run (`support::daemon::release_binary`), as
//! child processes, each with vector files of its own (or the Qdrant server at `QDRANT_URL`).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

mod common;

use common::{create_job, follow, seed};
use std::path::Path;
use std::time::{Duration, Instant};
use support::daemon::{Daemon, release_binary};
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TestDatabase, redis_url};

const DIM: usize = 64;
const TOKENS: usize = 100;

/// `count` daemons sharing `db` and a Redis prefix, each with its own vector directory.
struct Fleet {
    daemons: Vec<Daemon>,
    prefix: String,
    _dirs: Vec<tempfile::TempDir>,
    vectors: Vec<embedq::config::VectorSettings>,
}

impl Fleet {
    fn start(
        binary: &Path,
        count: usize,
        db: &str,
        mock: &MockProvider,
        extra: &[(&str, String)],
    ) -> Self {
        let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
        let mut daemons = Vec::new();
        let mut dirs = Vec::new();
        let mut vectors = Vec::new();
        // One Qdrant collection shared by the fleet, or files of each daemon's own.
        let shared = support::vectors::qdrant_url().map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let settings = support::vectors::settings(dir.path());
            dirs.push(dir);
            settings
        });
        for _ in 0..count {
            let settings = match &shared {
                Some(settings) => settings.clone(),
                None => {
                    let dir = tempfile::tempdir().unwrap();
                    let settings = support::vectors::settings(dir.path());
                    dirs.push(dir);
                    settings
                }
            };
            let mut env = support::vectors::env(&settings);
            env.extend([
                ("EMBEDQ__DATABASE__URL".into(), db.to_owned()),
                ("EMBEDQ__REDIS__URL".into(), redis_url()),
                ("EMBEDQ__REDIS__PREFIX".into(), prefix.clone()),
                ("EMBEDQ__EMBEDDING__PROVIDER".into(), "openai".into()),
                ("EMBEDQ__EMBEDDING__DIMENSION".into(), DIM.to_string()),
                ("EMBEDQ__EMBEDDING__BASE_URL".into(), mock.base_url()),
                ("RUST_LOG".into(), "warn".into()),
            ]);
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            daemons.push(Daemon::start_binary(binary.to_owned(), env));
            vectors.push(settings);
        }
        Self {
            daemons,
            prefix,
            _dirs: dirs,
            vectors,
        }
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.daemons[i].port)
    }

    /// What each daemon's own metrics count: (requests, tokens).
    async fn shares(&self, http: &reqwest::Client) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for i in 0..self.daemons.len() {
            let text = http
                .get(format!("{}/metrics", self.base(i)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let sum = |prefix: &str| -> f64 {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                    .sum()
            };
            out.push((
                sum("embedq_api_requests_total{"),
                sum("embedq_tokens_total "),
            ));
        }
        out
    }

    async fn stop(self) {
        let prefix = self.prefix.clone();
        let vectors = self.vectors.clone();
        drop(self);
        support::delete_prefix(&redis_url(), &prefix).await;
        for v in &vectors {
            support::vectors::clean_up(v).await;
        }
    }
}

/// Requests and tokens the mock counted between `from` and `to` (ms on its clock).
fn counted(mock: &MockProvider, from: u64, to: u64) -> (usize, u64) {
    let audit = mock.audit();
    let in_window: Vec<&(u64, u32, u64)> = audit
        .embedded_log
        .iter()
        .filter(|(at, _, _)| *at >= from && *at < to)
        .collect();
    (in_window.len(), in_window.iter().map(|e| e.2).sum())
}

async fn one_budget_three_daemons(binary: &Path) {
    const RPM: u64 = 300;
    const TPM: u64 = 300_000;
    let mock = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(50),
        requests_per_minute: Some(RPM as u32),
        tokens_per_minute: Some(TPM),
        ..MockScript::default()
    })
    .await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let extra = [
        ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", RPM.to_string()),
        ("EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE", TPM.to_string()),
        (
            "EMBEDQ__EMBEDDING__MAX_INPUTS_PER_REQUEST",
            "10".to_string(),
        ),
    ];
    let fleet = Fleet::start(binary, 3, &db.url, &mock, &extra);
    let http = reqwest::Client::new();
    seed(&http, &fleet.base(0), "quota", 40_000, TOKENS).await;
    let _job = create_job(&http, &fleet.base(0), "quota").await;
    let started = mock.audit().embedded_log.last().map(|e| e.0).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(80)).await;
    let shares = fleet.shares(&http).await;
    // A steady minute: from 15 s after the job started to 75 s.
    let (requests, tokens) = counted(&mock, started + 15_000, started + 75_000);
    let dev = |got: f64, limit: f64| (got - limit) / limit * 100.0;
    println!(
        "[one budget, 3 daemons] in a steady minute the mock counted {requests} requests ({:+.2}% of {RPM}) and {tokens} tokens ({:+.2}% of {TPM}); 429s: {}",
        dev(requests as f64, RPM as f64),
        dev(tokens as f64, TPM as f64),
        mock.audit().by_status.get(&429).copied().unwrap_or(0)
    );
    let total: f64 = shares.iter().map(|s| s.0).sum::<f64>().max(1.0);
    for (i, (r, t)) in shares.iter().enumerate() {
        println!(
            "[one budget, 3 daemons] daemon {i}: {r:.0} requests ({:.1}%), {t:.0} tokens, by its own metrics",
            r / total * 100.0
        );
    }
    fleet.stop().await;
}

/// Items/s of a steady window of one job over `items` items, run by `count` daemons.
async fn rate(
    binary: &Path,
    count: usize,
    items: usize,
    mock: &MockProvider,
    extra: &[(&str, String)],
) -> f64 {
    let db = TestDatabase::create(Backend::Postgres).await;
    let fleet = Fleet::start(binary, count, &db.url, mock, extra);
    let http = reqwest::Client::new();
    seed(&http, &fleet.base(0), "rate", items, TOKENS).await;
    let id = create_job(&http, &fleet.base(0), "rate").await;
    let t = Instant::now();
    let (_, samples) = follow(&http, &fleet.base(0), &id).await;
    // Skip the first 5 s (buckets' burst, start of planning) and the last sample.
    let first = samples.iter().find(|(t, _)| *t >= 5_000).copied();
    let last = samples.iter().rev().nth(1).copied();
    let rate = match (first, last) {
        (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => (d1 - d0) as f64 * 1000.0 / (t1 - t0) as f64,
        _ => items as f64 / t.elapsed().as_secs_f64(),
    };
    fleet.stop().await;
    rate
}

async fn table(binary: &Path) {
    const INPUTS: usize = 64;
    let latency_bound = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(300),
        ..MockScript::default()
    })
    .await;
    let latency_extra = [
        ("EMBEDQ__RATE_LIMIT__MAX_CONCURRENCY", "1".to_string()),
        (
            "EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE",
            "1000000".to_string(),
        ),
        (
            "EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE",
            "1000000000".to_string(),
        ),
        (
            "EMBEDQ__EMBEDDING__MAX_INPUTS_PER_REQUEST",
            INPUTS.to_string(),
        ),
    ];
    const RPM: u64 = 120;
    let quota_bound = MockProvider::start(MockScript {
        dimension: DIM,
        latency: Duration::from_millis(50),
        requests_per_minute: Some(RPM as u32),
        ..MockScript::default()
    })
    .await;
    let quota_extra = [
        ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", RPM.to_string()),
        (
            "EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE",
            "1000000000".to_string(),
        ),
        (
            "EMBEDQ__EMBEDDING__MAX_INPUTS_PER_REQUEST",
            INPUTS.to_string(),
        ),
    ];
    let per_daemon = INPUTS as f64 / 0.3;
    let quota = RPM as f64 * INPUTS as f64 / 60.0;
    println!(
        "| daemons | latency binds (items/s) | its bound | quota binds (items/s) | its bound |"
    );
    println!("|---|---|---|---|---|");
    for count in 1..=3 {
        let latency = rate(binary, count, 6_000, &latency_bound, &latency_extra).await;
        let quota_rate = rate(binary, count, 4_000, &quota_bound, &quota_extra).await;
        println!(
            "| {count} | {latency:.1} | {:.1} | {quota_rate:.1} | {quota:.1} |",
            per_daemon * count as f64
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = |name: &str| args.iter().any(|a| a == name);
    let all = !only("budget") && !only("table");
    let binary = release_binary();
    if all || only("budget") {
        runtime.block_on(one_budget_three_daemons(&binary));
    }
    if all || only("table") {
        runtime.block_on(table(&binary));
    }
}
