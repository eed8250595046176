//! What the benches share: passages of a given token count, seeding a daemon over HTTP,
//! creating and following a job, and reading a daemon's CPU time, memory and metrics.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A passage of about `tokens` cl100k tokens, distinct per `i`.
pub fn passage(i: usize, tokens: usize) -> String {
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

pub async fn seed(http: &reqwest::Client, base: &str, context: &str, n: usize, tokens: usize) {
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

/// The job's `done` count, sampled every 250 ms until it is final: (ms since start, done).
pub async fn follow(http: &reqwest::Client, base: &str, id: &str) -> (Value, Vec<(u64, i64)>) {
    let t = Instant::now();
    let mut samples = Vec::new();
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        samples.push((
            t.elapsed().as_millis() as u64,
            job["done"].as_i64().unwrap_or(0),
        ));
        if matches!(job["state"].as_str(), Some("COMPLETED" | "FAILED")) {
            return (job, samples);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn create_job(http: &reqwest::Client, base: &str, context: &str) -> String {
    let r: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": context}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["job_id"].as_str().unwrap().to_owned()
}

/// Provider requests this daemon counted (`embedq_api_requests_total`, every outcome).
pub async fn requests_made(http: &reqwest::Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("embedq_api_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

pub fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
