//! The `embedq` binary as a user runs it: SIGKILL mid-planning loses and repeats nothing,
//! SIGTERM exits cleanly, bad settings stop start-up with the key and the reason, and a
//! consumer name already in use is refused.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::{Daemon, owned_env};
use support::{Backend, TestDatabase, redis_url, tasks_on_stream};

const ITEMS: i64 = 200_000;

fn daemon_env(db: &str, prefix: &str, vectors: &std::path::Path) -> Vec<(String, String)> {
    let provider = format!("http://127.0.0.1:{}/v1", support::free_port());
    let mut env = support::vectors::env(&support::vectors::settings(vectors));
    env.extend(owned_env([
        ("EMBEDQ__DATABASE__URL", db),
        ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
        ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
        ("EMBEDQ__EMBEDDING__BASE_URL", provider.as_str()),
        ("EMBEDQ__REDIS__URL", &redis_url()),
        ("EMBEDQ__REDIS__PREFIX", prefix),
        ("EMBEDQ__QUEUE__VISIBILITY_TIMEOUT_MS", "2000"),
        ("EMBEDQ__QUEUE__BLOCK_MS", "200"),
        ("EMBEDQ__PLANNER__PAGE_SIZE", "500"),
        ("EMBEDQ__PLANNER__TASK_SIZE", "50"),
        ("EMBEDQ__PLANNER__MAX_QUEUED_TASKS", "1000000"),
        // Plan only, so the tasks stay on the stream to be counted.
        ("EMBEDQ__PIPELINE__EMBED", "false"),
    ]));
    env
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn sigkill_mid_planning_plans_each_item_exactly_once(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let prefix = format!("embedq-test-{}", uuid::Uuid::new_v4().simple());
    let mut store_settings = embedq::config::Settings::defaults().database;
    store_settings.url = db.url.clone();
    let store = embedq::store::Store::connect(&store_settings)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    support::bulk_seed(&store, "ctx", ITEMS).await;

    let vectors = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(daemon_env(&db.url, &prefix, vectors.path()));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": "ctx"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let job: Value = r.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    // Kill once planning is under way but far from done.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let plan_key = embedq::queue::Keys::new(prefix.clone())
        .plan(embedq::domain::JobId::parse(&job_id).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let planned_at_kill = loop {
        let planned: Option<i64> = redis::cmd("HGET")
            .arg(&plan_key)
            .arg("planned")
            .query_async(&mut redis)
            .await
            .unwrap();
        if let Some(p) = planned.filter(|p| *p >= 5_000) {
            daemon.kill();
            break p;
        }
        assert!(Instant::now() < deadline, "planning did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let after_kill: i64 = redis::cmd("HGET")
        .arg(&plan_key)
        .arg("planned")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        after_kill < ITEMS,
        "planning finished before the kill; the test proves nothing"
    );

    daemon.restart();
    let restarted = Instant::now();
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let job = get_json(&http, &format!("{base}/v1/jobs/{job_id}")).await;
        if job["planned"] == true {
            break job;
        }
        assert!(Instant::now() < deadline, "planning did not resume: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "{backend:?}: killed with {after_kill} of {ITEMS} planned (saw {planned_at_kill}); planning finished {:.2} s after the restart (visibility timeout 2 s)",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(job["total"], ITEMS);

    let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
        .await
        .unwrap();
    let ids = tasks_on_stream(
        &mut conn,
        &embedq::queue::Keys::new(prefix.clone()).tasks_stream(embedq::domain::Priority::Normal),
    )
    .await;
    assert_eq!(
        ids.len() as i64,
        ITEMS,
        "tasks hold {} item entries for {ITEMS} items",
        ids.len()
    );
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len() as i64, ITEMS, "an item was planned twice");
    drop(daemon);
    support::delete_prefix(&redis_url(), &prefix).await;
}

async fn sigterm_stops_cleanly(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let prefix = format!("embedq-test-{}", uuid::Uuid::new_v4().simple());
    let vectors = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(daemon_env(&db.url, &prefix, vectors.path()));
    // An open event stream (a dashboard left open) never ends by itself; it must not keep
    // the daemon alive after SIGTERM.
    let mut events = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/events", daemon.port))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let hello = events.chunk().await.unwrap().unwrap_or_default();
    assert!(String::from_utf8_lossy(&hello).contains("hello"));
    let started = Instant::now();
    unsafe {
        libc::kill(daemon.pid() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || daemon.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the daemon still ran 20 s after SIGTERM");
    assert!(status.success(), "exit status {status}");
    println!(
        "SIGTERM with an open event stream: exited 0 in {:?}",
        started.elapsed()
    );
    drop(events);
    support::delete_prefix(&redis_url(), &prefix).await;
}

on_both_backends!(
    sigkill_mid_planning_plans_each_item_exactly_once,
    sigterm_stops_cleanly
);

fn run_with_env(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedq"));
    cmd.arg("serve")
        .env_remove("EMBEDQ_ENV")
        .env_remove("EMBEDQ_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_stop_start_up_naming_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("EMBEDQ__PLANNER__PAGE_SIZE", "0")], "planner.page_size"),
        (&[("EMBEDQ__QUEUE__BLOCK_MS", "soon")], "block_ms"),
        (
            &[("EMBEDQ__SERVER__LISTEN", "0.0.0.0:18080")],
            "server.listen",
        ),
        (&[("EMBEDQ__DATABASE__URL", "mysql://x")], "database.url"),
        (&[("EMBEDQ__PLANNER__UNKNOWN", "1")], "unknown"),
        (&[("EMBEDQ_ENV", "nowhere")], "EMBEDQ_ENV"),
    ];
    for (env, key) in cases {
        let (code, stderr) = run_with_env(env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.to_lowercase().contains(&key.to_lowercase()),
            "{env:?}: {stderr:?} does not name {key}"
        );
    }
}

#[test]
fn secrets_never_appear_in_errors() {
    let (code, stderr) = run_with_env(&[
        ("EMBEDQ_ADMIN_TOKEN", "tiny-secret"),
        ("EMBEDQ__SERVER__LISTEN", "0.0.0.0:18081"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("EMBEDQ_ADMIN_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("tiny-secret"),
        "the token leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_name_in_use_is_refused() {
    let first = support::TestApp::spawn_with(Backend::Sqlite, |s| {
        s.queue.consumer_name = "replica-a".into()
    })
    .await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::test_settings(&db.url, dir.path());
    settings.redis.prefix = first.settings.redis.prefix.clone();
    settings.queue.consumer_name = "replica-a".into();
    let refused = embedq::startup::Application::build(settings).await;
    let err = refused
        .err()
        .expect("a second daemon with the same consumer name must not start");
    // The lease's own refusal (not some other start-up error that happens to name it).
    assert!(
        matches!(
            &err,
            embedq::startup::StartupError::Queue(embedq::queue::QueueError::ConsumerNameTaken(n))
                if n == "replica-a"
        ),
        "{err}"
    );
    first.stop().await;
}
