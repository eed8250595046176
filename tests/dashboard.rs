//! The dashboard in a real browser: headless Chromium (Debian's package, driven by
//! playwright-core from `tests/browser`) opens `/` behind the admin token while a job runs,
//! sees the job's progress bar reach 100%, clicks "Requeue" on a dead letter and sees it leave
//! the list, and saves a screenshot. `.ci/run` installs Chromium and the npm package.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TEST_DIMENSION, TestApp};

const TOKEN: &str = "dashboard-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_progress_and_requeues_a_dead_letter() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/browser` first (.ci/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "install Debian's chromium package first (.ci/run does)"
    );

    let mock = MockProvider::start(MockScript {
        dimension: TEST_DIMENSION,
        latency: Duration::from_millis(250),
        max_tokens_per_input: 12,
        ..MockScript::default()
    })
    .await;
    let url = mock.base_url();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.embedding.base_url = url;
        s.planner.task_size = 16;
        // Requests are packed across tasks: 8 inputs each keep the job going for ~12 s, long
        // enough for a browser started on a loaded machine to watch the bar move.
        s.embedding.max_inputs_per_request = 8;
        s.rate_limit.max_concurrency = 1;
        s.pipeline.workers = 1;
        s.secrets.admin_token = Some(embedq::config::Secret::new(TOKEN));
    })
    .await;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN);
    let seed: Vec<Value> = (0..400)
        .map(|i| json!({"id": format!("it-{i:04}"), "content": format!("passage {i}")}))
        .chain([json!({"id": "zz-long", "content": "one two three four five six seven eight nine ten eleven twelve thirteen"})])
        .collect();
    let r = auth(app.http.post(app.url("/v1/contexts/ctx/items")))
        .json(&json!({"items": seed}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r: Value = auth(app.http.post(app.url("/v1/jobs")))
        .json(&json!({"scope": {"type": "context", "context_id": "ctx"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = r["job_id"].as_str().unwrap().to_owned();

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let base = app.base.clone();
    let (job_arg, shot_arg) = (job.clone(), shot.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir.join("dashboard.mjs"))
            .args([&base, TOKEN, &job_arg, "", &shot_arg])
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    let seen: Vec<i64> = report["percents_seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    println!(
        "progress bar values seen: {seen:?}; screenshot: {}",
        shot.display()
    );
    assert!(
        seen.len() >= 3 && seen.first() < Some(&100),
        "the bar did not move: {seen:?}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "empty screenshot"
    );

    // The click requeued it: the clicked dead letter is gone, and a new job was made for its
    // item — whatever that job then does (the item is over the token limit, so it fails again
    // and may already have a new dead letter of its own).
    let clicked = report["requeued"]
        .as_str()
        .expect("the id of the row clicked");
    let dead: Value = auth(app.http.get(app.url("/v1/dead-letters")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(
        !ids.contains(&clicked),
        "dead letter {clicked} is still listed: {dead}"
    );
    let jobs: Value = auth(app.http.get(app.url("/v1/jobs")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = &jobs["jobs"][0];
    assert_eq!(
        newest["scope"],
        json!({"type": "items", "item_ids": ["zz-long"]})
    );
    app.stop().await;
}
