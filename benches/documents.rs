//! Documents, printed (no assertions on time): a generated 500-page PDF (40 lines of prose a
//! page) posted to the release daemon, which extracts it page by page, splits it into chunks
//! and stores them as items (intake paused, so nothing is embedded). Prints the pages per
//! second from upload to answer, the chunks, and the daemon's peak RSS against its RSS before
//! the upload; then the same text as one plain-text document, the baseline without PDF
//! extraction, measured in the same run.
//!
//! `cargo bench --bench documents` (about a minute, plus one release build the first time).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

use serde_json::{Value, json};
use std::time::Instant;
use support::daemon::{Daemon, owned_env, release_binary};
use support::{Backend, TestDatabase, redis_url};

const PAGES: usize = 500;
const LINES: usize = 40;

fn line(page: usize, n: usize) -> String {
    const WORDS: &[&str] = &[
        "harbour",
        "lighthouse",
        "market",
        "storm",
        "keeper",
        "ships",
        "morning",
        "gulls",
        "mackerel",
        "oak",
        "violet",
        "midnight",
        "tide",
        "rope",
        "lantern",
        "quay",
    ];
    (0..11)
        .map(|w| WORDS[(page * 31 + n * 7 + w * 3) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
        + "."
}

/// A PDF of `PAGES` pages of Helvetica text, uncompressed, with a correct cross-reference table.
fn pdf() -> (Vec<u8>, String) {
    let mut text = String::new();
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        String::new(), // the page tree, once the kids are known
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    let mut kids = Vec::new();
    for page in 0..PAGES {
        let mut stream = String::from("BT /F1 10 Tf 14 TL 50 800 Td\n");
        for n in 0..LINES {
            let l = line(page, n);
            text.push_str(&l);
            text.push('\n');
            stream.push_str(&format!("({l}) Tj T*\n"));
        }
        text.push('\n');
        stream.push_str("ET");
        let content = objects.len() + 2;
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ));
        kids.push(format!("{} 0 R", objects.len()));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    objects[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {PAGES} >>",
        kids.join(" ")
    );
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    (out, text)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        })
        .unwrap()
}

async fn upload(
    http: &reqwest::Client,
    port: u16,
    id: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (f64, Value) {
    let started = Instant::now();
    let r = http
        .post(format!(
            "http://127.0.0.1:{port}/v1/contexts/bench/documents?document_id={id}"
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {answer}");
    (started.elapsed().as_secs_f64(), answer)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let binary = release_binary();
        let db = TestDatabase::create(Backend::Sqlite).await;
        let dir = tempfile::tempdir().unwrap();
        let vectors = dir.path().join("vectors").display().to_string();
        let prefix = format!("embedq-bench-{}", uuid::Uuid::new_v4().simple());
        let redis = redis_url();
        let env = owned_env([
            ("EMBEDQ__DATABASE__URL", db.url.as_str()),
            ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
            ("EMBEDQ__EMBEDDING__MODEL", "text-embedding-3-small"),
            ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
            ("EMBEDQ__EMBEDDING__BASE_URL", "http://127.0.0.1:9/v1"),
            ("EMBEDQ__REDIS__URL", redis.as_str()),
            ("EMBEDQ__REDIS__PREFIX", prefix.as_str()),
            ("EMBEDQ__VECTORS__PATH", vectors.as_str()),
            ("EMBEDQ__SERVER__MAX_BODY_BYTES", "67108864"),
            ("EMBEDQ__DOCUMENTS__MAX_BYTES", "67108864"),
        ]);
        let daemon = tokio::task::block_in_place(|| Daemon::start_binary(binary, env));
        let http = reqwest::Client::new();
        let r = http
            .post(format!("http://127.0.0.1:{}/v1/pause", daemon.port))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let (pdf, text) = pdf();
        let pid = daemon.pid();
        let idle = status_kib(pid, "VmRSS:");
        let (pdf_secs, answer) = upload(&http, daemon.port, "book", "application/pdf", pdf.clone()).await;
        let peak = status_kib(pid, "VmHWM:");
        assert_eq!(answer["pages"], PAGES, "{answer}");
        let chunks = answer["chunks"].as_u64().unwrap();
        let text_len = text.len();
        let (text_secs, plain) = upload(&http, daemon.port, "book-text", "text/plain", text.into_bytes()).await;
        let peak_after_text = status_kib(pid, "VmHWM:");
        println!("documents bench: a {PAGES}-page PDF, {:.1} MiB, {} KiB of text, posted to the release daemon", pdf.len() as f64 / 1048576.0, text_len / 1024);
        println!("  PDF:        {pdf_secs:.2} s upload to answer = {:.0} pages/s; {chunks} chunks of 256 tokens", PAGES as f64 / pdf_secs);
        println!("  plain text: {text_secs:.2} s for the same text ({} chunks): the PDF costs {:.1}x the text", plain["chunks"], pdf_secs / text_secs);
        println!("  daemon RSS: {:.1} MiB idle, peak {:.1} MiB through the PDF ({:.1} MiB over idle, {:.1}x the file), {:.1} MiB after the text",
            idle as f64 / 1024.0, peak as f64 / 1024.0, (peak - idle) as f64 / 1024.0,
            (peak - idle) as f64 * 1024.0 / pdf.len() as f64, peak_after_text as f64 / 1024.0);
        drop(daemon);
        support::delete_prefix(&redis, &prefix).await;
    });
}
