//! The operator's CLI against a running daemon: `embedq ingest` reports bad lines by number
//! and ingests the rest (and resumes after an interruption); `embedq jobs create --watch`
//! prints progress lines until the job reaches 100%; `embedq items delete` and `embedq
//! contexts delete` delete, name what they could not, and refuse a bad id before any request;
//! `embedq jobs create --dry-run` prints a job's cost and makes nothing, and `embedq reconcile
//! --watch` repairs missing points and prints what it found.

mod support;

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TEST_DIMENSION, TestApp};

fn embedq(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embedq"))
        .args(args)
        .env("EMBEDQ_URL", &app.base)
        .env("EMBEDQ_PLAIN", "1")
        .env_remove("EMBEDQ_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_bad_lines_and_keeps_the_good_ones() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.pipeline.embed = false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.jsonl");
    let mut lines = Vec::new();
    for i in 1..=12 {
        lines.push(match i {
            3 => "{not json".to_string(),
            5 => json!({"id": "bad id", "context": "c", "content": "x"}).to_string(),
            8 => json!({"id": "empty", "context": "c", "content": "   "}).to_string(),
            11 => json!({"id": "big", "context": "c", "content": "x".repeat(70_000)}).to_string(),
            _ => json!({"id": format!("i{i}"), "context": if i % 2 == 0 { "even" } else { "odd" }, "content": format!("line {i}")}).to_string(),
        });
    }
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap().to_owned();
    let run = tokio::task::spawn_blocking({
        let base = app.base.clone();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_embedq"))
                .args(["ingest", &path, "--batch", "4"])
                .env("EMBEDQ_URL", base)
                .env("EMBEDQ_PLAIN", "1")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    });
    let (code, stdout, stderr) = run.await.unwrap();
    assert_eq!(
        code,
        Some(3),
        "bad lines make a non-zero exit: {stdout}{stderr}"
    );
    for n in [3, 5, 8, 11] {
        assert!(
            stderr.contains(&format!("line {n}:")),
            "line {n} not reported: {stderr}"
        );
    }
    assert!(
        stderr.contains("limit is 65536"),
        "the server's reason is shown: {stderr}"
    );
    assert!(
        stdout.contains("8 created") && stdout.contains("4 bad"),
        "{stdout}"
    );
    assert_eq!(app.item_count().await, 8);
    assert!(
        !dir.path().join("items.jsonl.progress").exists(),
        "finished runs leave no progress file"
    );

    // An interrupted run resumes after its checkpoint.
    std::fs::write(dir.path().join("items.jsonl.progress"), "10").unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let base = app.base.clone();
        let path = file.to_str().unwrap().to_owned();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_embedq"))
                .args(["ingest", &path])
                .env("EMBEDQ_URL", base)
                .env("EMBEDQ_PLAIN", "1")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert!(stderr.contains("resuming after line 10"), "{stderr}");
    assert!(stdout.contains("ingested 2 lines"), "{stdout}");
    assert_eq!(code, Some(3));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_watch_prints_progress_to_completion() {
    let mock = MockProvider::start(MockScript {
        dimension: TEST_DIMENSION,
        latency: Duration::from_millis(40),
        ..MockScript::default()
    })
    .await;
    let url = mock.base_url();
    let app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.embedding.base_url = url;
        s.planner.task_size = 16;
        s.rate_limit.max_concurrency = 2;
    })
    .await;
    app.seed_items("ctx", "it", 1_500).await;
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let app_base = app.base.clone();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_embedq"))
                .args(["jobs", "create", "--context", "ctx", "--watch"])
                .env("EMBEDQ_URL", app_base)
                .env("EMBEDQ_PLAIN", "1")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let progress: Vec<&str> = stdout.lines().filter(|l| l.starts_with("job ")).collect();
    assert!(
        progress.len() >= 2,
        "expected several progress lines: {stdout}"
    );
    let last = progress.last().unwrap();
    assert!(
        last.contains("1500/1500 (100.0%)") && last.contains("COMPLETED"),
        "{last}"
    );
    assert!(progress.iter().any(|l| l.contains("items/s")));

    let (code, stdout, _) = embedq(&app, &["jobs", "list"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    let (code, stdout, _) = embedq(&app, &["items", "show", "it-000001"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"status\": \"COMPLETED\""), "{stdout}");
    let (code, _, stderr) = embedq(&app, &["items", "show", "nope"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("404") && stderr.contains("no item nope"),
        "{stderr}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_and_contexts_delete() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 4).await;
    app.seed_items("other", "ot", 2).await;

    let (code, out, err) = embedq(&app, &["items", "delete", "it-000000", "it-000001"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("deleted it-000000") && out.contains("deleted it-000001"),
        "{out}"
    );
    assert_eq!(app.item_count().await, 4);

    let (code, out, err) = embedq(&app, &["items", "delete", "it-000002", "nope"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no such items: nope"), "{err}");
    assert_eq!(app.item_count().await, 3, "the known id was deleted");

    let (code, _, err) = embedq(&app, &["items", "delete", "bad id"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("contains ' '"), "{err}");
    assert_eq!(app.item_count().await, 3);

    let (code, out, err) = embedq(&app, &["contexts", "delete", "ctx"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("deleted context ctx and its 1 items"), "{out}");
    assert_eq!(app.item_count().await, 2);
    let (code, _, err) = embedq(&app, &["contexts", "delete", "ctx"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("HTTP 404") && err.contains("no context ctx"),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_and_dry_run() {
    let mock = MockProvider::start(MockScript {
        dimension: TEST_DIMENSION,
        ..MockScript::default()
    })
    .await;
    let app = support::app_with(Backend::Sqlite, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 10).await;

    let (code, out, err) = embedq(&app, &["jobs", "create", "--context", "ctx", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("items 10 of 10 in scope (0 up to date"),
        "{out}"
    );
    assert_eq!(mock.audit().requests, 0, "a dry run called the provider");
    let (_, jobs) = app.get("/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "a dry run made a job");

    let job = support::context_job(&app).await;
    app.wait_finished(&job, Duration::from_secs(30)).await;
    let gone = [
        (
            embedq::domain::ItemId::parse("it-000003").unwrap(),
            i64::MAX,
        ),
        (
            embedq::domain::ItemId::parse("it-000007").unwrap(),
            i64::MAX,
        ),
    ];
    app.vectors.delete(&gone).await.unwrap();

    let base = app.base.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_embedq"))
            .args(["reconcile", "--watch"])
            .env("EMBEDQ_URL", base)
            .env("EMBEDQ_PLAIN", "1")
            .env_remove("EMBEDQ_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("scanned 8 points and 10 items: 0 orphans deleted, 2 missing and 0 stale"),
        "{out}"
    );
    assert_eq!(
        app.vectors.count().await.unwrap(),
        10,
        "the points were not repaired"
    );
    app.stop().await;
}

/// `embedq jobs create --priority --tenant`, `jobs list` and `jobs priority`: the priority and
/// the tenant are sent and shown; an unknown priority is refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_take_a_priority_and_a_tenant_and_change_priority() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 3).await;
    // Paused, the job stays QUEUED: its priority may change.
    let (status, _) = app.post_json("/v1/pause", &json!({})).await;
    assert_eq!(status, 202);
    let jobs_before = app.job_count().await;
    let (code, _, stderr) = tokio::task::block_in_place(|| {
        embedq(
            &app,
            &["jobs", "create", "--context", "ctx", "--priority", "urgent"],
        )
    });
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("urgent"), "{stderr}");
    assert_eq!(app.job_count().await, jobs_before, "nothing was made");

    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        embedq(
            &app,
            &[
                "jobs",
                "create",
                "--context",
                "ctx",
                "--priority",
                "bulk",
                "--tenant",
                "acme",
            ],
        )
    });
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim().to_owned();
    let job = app.job(&id).await;
    assert_eq!(
        (job["priority"].as_str(), job["tenant"].as_str()),
        (Some("bulk"), Some("acme"))
    );
    let (_, listed, _) = tokio::task::block_in_place(|| embedq(&app, &["jobs", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("bulk (acme)"),
        "{listed}"
    );
    let (code, changed, stderr) =
        tokio::task::block_in_place(|| embedq(&app, &["jobs", "priority", &id, "interactive"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(changed.contains("interactive (acme)"), "{changed}");
    assert_eq!(app.job(&id).await["priority"], "interactive");
    app.stop().await;
}
