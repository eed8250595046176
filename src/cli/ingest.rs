//! `embedq ingest FILE.jsonl`: bulk ingestion of `{"id", "context", "content"}` lines through
//! `POST /v1/contexts/{id}/items`. Bad lines are reported with their line numbers and skipped;
//! good lines are ingested in batches. Progress is checkpointed in `FILE.jsonl.progress`, so an
//! interrupted run resumes after the last committed line.

use super::AdminClient;
use anyhow::Context;
use embedq::domain::{ContextId, ItemId};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    context: String,
    content: String,
}

/// What an ingestion did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub lines: u64,
    pub created: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// (line number, reason) of every line refused.
    pub bad: Vec<(u64, String)>,
    /// Lines skipped because an earlier run had committed them.
    pub resumed_after: u64,
}

fn checkpoint_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".progress");
    PathBuf::from(p)
}

struct Pending {
    /// (line number, item) per context.
    by_context: BTreeMap<String, Vec<(u64, Value)>>,
    count: usize,
}

async fn flush(
    client: &AdminClient,
    pending: &mut Pending,
    report: &mut IngestReport,
) -> anyhow::Result<()> {
    for (context, items) in std::mem::take(&mut pending.by_context) {
        let path = format!("/v1/contexts/{context}/items");
        let body = json!({"items": items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()});
        let (status, answer) = client.post_raw(&path, &body).await?;
        match status {
            200 => add_counts(report, &answer),
            400 | 409 | 413 | 422 => {
                // Something in the batch was refused: send the lines one by one to find which.
                for (line, item) in items {
                    let (status, answer) =
                        client.post_raw(&path, &json!({"items": [item]})).await?;
                    if status == 200 {
                        add_counts(report, &answer);
                    } else {
                        let reason = answer["error"]["reason"]
                            .as_str()
                            .unwrap_or("refused")
                            .to_owned();
                        report.bad.push((line, reason));
                    }
                }
            }
            _ => {
                let reason = answer["error"]["reason"]
                    .as_str()
                    .unwrap_or("no reason given");
                anyhow::bail!("embedq answered HTTP {status} to {path}: {reason}");
            }
        }
    }
    pending.count = 0;
    Ok(())
}

fn add_counts(report: &mut IngestReport, answer: &Value) {
    report.created += answer["created"].as_u64().unwrap_or(0);
    report.changed += answer["changed"].as_u64().unwrap_or(0);
    report.unchanged += answer["unchanged"].as_u64().unwrap_or(0);
}

/// Checks a line before sending it, so its line number can be reported.
fn parse_line(raw: &str) -> Result<(String, Value), String> {
    let line: Line = serde_json::from_str(raw).map_err(|e| format!("not a valid item: {e}"))?;
    ContextId::parse(line.context.clone()).map_err(|e| e.0)?;
    ItemId::parse(line.id.clone()).map_err(|e| e.0)?;
    if line.content.trim().is_empty() {
        return Err("content must not be empty".into());
    }
    Ok((
        line.context,
        json!({"id": line.id, "content": line.content}),
    ))
}

pub async fn ingest(
    client: &AdminClient,
    file: &Path,
    batch: usize,
    restart: bool,
) -> anyhow::Result<IngestReport> {
    let handle =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = handle.metadata().map(|m| m.len()).unwrap_or(0);
    let checkpoint = checkpoint_path(file);
    let resume_after: u64 = if restart {
        0
    } else {
        std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut report = IngestReport {
        resumed_after: resume_after,
        ..IngestReport::default()
    };
    let interactive = super::interactive();
    let bar = if interactive {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} ingesting [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    if resume_after > 0 {
        eprintln!(
            "resuming after line {resume_after} (from {})",
            checkpoint.display()
        );
    }
    let mut pending = Pending {
        by_context: BTreeMap::new(),
        count: 0,
    };
    let mut read_bytes = 0u64;
    let mut number = 0u64;
    for raw in BufReader::new(handle).lines() {
        let raw = raw.with_context(|| format!("reading {}", file.display()))?;
        number += 1;
        read_bytes += raw.len() as u64 + 1;
        bar.set_position(read_bytes);
        if number <= resume_after || raw.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        match parse_line(&raw) {
            Ok((context, item)) => {
                pending
                    .by_context
                    .entry(context)
                    .or_default()
                    .push((number, item));
                pending.count += 1;
            }
            Err(reason) => {
                bar.suspend(|| eprintln!("line {number}: {reason}"));
                report.bad.push((number, reason));
            }
        }
        if pending.count >= batch {
            let bad_before = report.bad.len();
            flush(client, &mut pending, &mut report).await?;
            for (line, reason) in &report.bad[bad_before..] {
                bar.suspend(|| eprintln!("line {line}: {reason}"));
            }
            std::fs::write(&checkpoint, number.to_string())
                .with_context(|| format!("writing {}", checkpoint.display()))?;
            bar.set_message(format!(
                "{} items",
                report.created + report.changed + report.unchanged
            ));
            if !interactive {
                eprintln!(
                    "ingest: line {number}, {} created, {} changed, {} unchanged, {} bad",
                    report.created,
                    report.changed,
                    report.unchanged,
                    report.bad.len()
                );
            }
        }
    }
    let bad_before = report.bad.len();
    flush(client, &mut pending, &mut report).await?;
    for (line, reason) in &report.bad[bad_before..] {
        eprintln!("line {line}: {reason}");
    }
    bar.finish_and_clear();
    // Done: the next run of the same file starts from the top again.
    let _ = std::fs::remove_file(&checkpoint);
    report.bad.sort();
    Ok(report)
}
