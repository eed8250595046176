//! `embedq jobs create|list|watch|cancel|priority` and `embedq reconcile`. `watch` follows a job until
//! it ends, with a live bar (rate and ETA) on a terminal and one plain line per second
//! otherwise; `create --dry-run` prints what a job would cost.

use super::AdminClient;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The final state of a watched job.
pub fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "FAILED" | "CANCELLED")
}

pub async fn create(
    client: &AdminClient,
    scope: Value,
    priority: Option<&str>,
    tenant: Option<&str>,
) -> anyhow::Result<String> {
    let mut body = json!({"scope": scope});
    if let Some(priority) = priority {
        body["priority"] = json!(priority);
    }
    if let Some(tenant) = tenant {
        body["tenant"] = json!(tenant);
    }
    let answer = client.post("/v1/jobs", &body).await?;
    Ok(answer["job_id"].as_str().unwrap_or_default().to_owned())
}

/// Starts a reconcile job (it covers every item).
pub async fn create_reconcile(client: &AdminClient) -> anyhow::Result<String> {
    let answer = client
        .post("/v1/jobs", &json!({"type": "reconcile"}))
        .await?;
    Ok(answer["job_id"].as_str().unwrap_or_default().to_owned())
}

/// What an embed job over `scope` would cost (`POST /v1/jobs?dry_run=true`).
pub async fn estimate(client: &AdminClient, scope: Value) -> anyhow::Result<Value> {
    client
        .post("/v1/jobs?dry_run=true", &json!({"scope": scope}))
        .await
}

pub fn estimate_lines(e: &Value) -> String {
    format!(
        "model {}\nitems {} of {} in scope ({} up to date, {} over the token limit)\n\
         tokens {}\nrequests {}\ncost {:.4} (at {} per million tokens)\n\
         time at the quota {:.1} s",
        e["model"].as_str().unwrap_or("?"),
        e["items"],
        e["scope_items"],
        e["up_to_date"],
        e["too_long"],
        e["tokens"],
        e["requests"],
        e["cost"].as_f64().unwrap_or(0.0),
        e["price_per_million_tokens"],
        e["seconds_at_quota"].as_f64().unwrap_or(0.0),
    )
}

/// A finished reconcile job's findings, on one line.
pub fn findings_line(job: &Value) -> String {
    let r = &job["result"];
    format!(
        "scanned {} points and {} items: {} orphans deleted, {} missing and {} stale points \
         embedded again, {} payloads refreshed",
        r["points_scanned"],
        r["items_checked"],
        r["orphans_deleted"],
        r["points_missing"],
        r["points_stale"],
        r["payloads_refreshed"]
    )
}

pub async fn list(client: &AdminClient, state: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let path = match state {
        Some(s) => format!("/v1/jobs?state={s}"),
        None => "/v1/jobs".into(),
    };
    let answer = client.get(&path).await?;
    Ok(answer["jobs"].as_array().cloned().unwrap_or_default())
}

/// Changes a job's priority (`PATCH /v1/jobs/{id}`); returns the job.
pub async fn set_priority(client: &AdminClient, id: &str, priority: &str) -> anyhow::Result<Value> {
    client
        .patch(&format!("/v1/jobs/{id}"), &json!({"priority": priority}))
        .await
}

pub fn line(job: &Value) -> String {
    let priority = match job["tenant"].as_str() {
        Some(tenant) => format!("{} ({tenant})", job["priority"].as_str().unwrap_or("?")),
        None => job["priority"].as_str().unwrap_or("?").to_owned(),
    };
    format!(
        "{}  {:<9}  {:<11}  {}/{} done (completed {}, skipped {}, failed {})  {}  scope {}",
        job["id"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        priority,
        job["done"],
        job["total"],
        job["completed"],
        job["skipped"],
        job["failed"],
        tokens(job),
        job["scope"]
    )
}

/// The tokens a job was billed for, with their cost when a price is set.
fn tokens(job: &Value) -> String {
    let tokens = job["tokens"].as_i64().unwrap_or(0);
    match job["cost"].as_f64() {
        Some(cost) if cost > 0.0 => format!("{tokens} tokens ({cost:.4})"),
        _ => format!("{tokens} tokens"),
    }
}

/// Follows a job until it ends; returns its final state.
pub async fn watch(client: &AdminClient, id: &str) -> anyhow::Result<Value> {
    let interactive = super::interactive();
    let bar = if interactive {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:40}] {pos}/{len} {percent}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("job {}", &id[..id.len().min(8)]));
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut first_done: Option<(i64, Instant)> = None;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let job = client.get(&format!("/v1/jobs/{id}")).await?;
        let done = job["done"].as_i64().unwrap_or(0);
        let total = job["total"].as_i64().unwrap_or(0);
        let state = job["state"].as_str().unwrap_or("?").to_owned();
        let planned = job["planned"].as_bool().unwrap_or(false);
        let (base_done, base_at) = *first_done.get_or_insert((done, Instant::now()));
        let elapsed = base_at.elapsed().as_secs_f64();
        let rate = if elapsed > 0.5 {
            (done - base_done) as f64 / elapsed
        } else {
            0.0
        };
        let eta = if rate > 0.0 && planned {
            format!("ETA {:.0}s", (total - done).max(0) as f64 / rate)
        } else {
            "ETA -".into()
        };
        let percent = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else if is_final(&state) {
            100.0
        } else {
            0.0
        };
        bar.set_length(total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        bar.set_message(format!("{rate:.1} items/s {eta} {state}"));
        if !interactive && (last_print.elapsed() >= Duration::from_secs(1) || is_final(&state)) {
            println!("job {id}: {done}/{total} ({percent:.1}%) {rate:.1} items/s {eta} {state}");
            last_print = Instant::now();
        }
        if is_final(&state) {
            bar.finish_with_message(format!(
                "{state} in {:.1}s (completed {}, skipped {}, failed {}; {})",
                started.elapsed().as_secs_f64(),
                job["completed"],
                job["skipped"],
                job["failed"],
                tokens(&job)
            ));
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
