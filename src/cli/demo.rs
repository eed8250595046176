//! `embedq demo`: the embedded default end to end on one machine. It fetches the local model if
//! missing, starts a Redis if none runs at the default address ([`super::local_redis`]), starts
//! the pipeline in this process (SQLite and qdrant-edge under `./data`, the local model, Redis
//! on localhost), ingests the sample corpus shipped in the repository, runs a job with a
//! progress bar, then answers a few semantic queries and prints the nearest passages with
//! their scores.

use super::{AdminClient, ingest, jobs};
use anyhow::Context;
use embedq::config::Settings;
use embedq::providers::model_files;
use embedq::startup::Application;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// The sample corpus: 300 passages written for the project, in five contexts.
pub const CORPUS: &str = include_str!("../../demo/corpus.jsonl");

/// The questions asked of the help-center context.
pub const QUERIES: [&str; 5] = [
    "How do I reset my password?",
    "Can I export my data to a spreadsheet?",
    "Why am I being charged twice?",
    "How do I stop getting so many emails?",
    "How do I add a colleague to my workspace?",
];

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    if settings.embedding.provider == embedq::config::Provider::Local {
        let dir = Path::new(&settings.embedding.model_dir).to_owned();
        if model_files::check(&dir).is_err() {
            eprintln!("fetching the local model into {} (once)…", dir.display());
            let d = dir.clone();
            tokio::task::spawn_blocking(move || model_files::fetch(&d))
                .await
                .context("fetching the model")??;
        }
    }
    // A free port, so the demo runs beside a daemon already serving on 8080.
    settings.server.listen = "127.0.0.1:0".parse().expect("valid address");
    let threads = embedq::providers::local_model_threads(settings.embedding.threads);
    let redis = super::local_redis::ensure(&settings.redis.url, Path::new("data/redis")).await?;
    let app = Application::build(settings.clone())
        .await
        .context("starting the pipeline")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown();
    let server = tokio::spawn(app.run_until_stopped());
    let client = AdminClient::new(
        &base,
        settings
            .secrets
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
    )?;

    let corpus = std::env::temp_dir().join(format!("embedq-demo-{}.jsonl", std::process::id()));
    std::fs::write(&corpus, CORPUS).context("writing the sample corpus")?;
    let report = ingest::ingest(&client, &corpus, 500, true).await;
    let _ = std::fs::remove_file(&corpus);
    let report = report?;
    println!(
        "ingested {} passages: {} new, {} changed, {} unchanged",
        report.lines, report.created, report.changed, report.unchanged
    );

    let started = Instant::now();
    let job = jobs::create(&client, json!({"type": "all"}), None, None).await?;
    let done = jobs::watch(&client, &job).await?;
    let took = started.elapsed().as_secs_f64();
    let total = done["total"].as_i64().unwrap_or(0);
    println!(
        "job {}: {} — {} embedded, {} already up to date, {} failed in {took:.1} s ({:.1} items/s end to end; {} {} on {threads} threads)",
        job,
        done["state"].as_str().unwrap_or("?"),
        done["completed"],
        done["skipped"],
        done["failed"],
        total as f64 / took.max(1e-3),
        settings.embedding.provider.as_str(),
        settings.embedding.model,
    );

    for query in QUERIES {
        let answer = client
            .post(
                "/v1/contexts/help-center/search",
                &json!({"query": query, "k": 3}),
            )
            .await?;
        println!("\n? {query}");
        for hit in answer["hits"].as_array().cloned().unwrap_or_default() {
            println!(
                "  {:.3}  {:<10} {}",
                hit["score"].as_f64().unwrap_or(0.0),
                hit["item_id"].as_str().unwrap_or("?"),
                hit["content"].as_str().unwrap_or("")
            );
        }
    }
    shutdown.trigger();
    let _ = server.await;
    if redis.started() {
        eprintln!("stopping the redis-server the demo started");
    }
    drop(redis);
    Ok(())
}
