//! Whatever Redis forgets, SQL remembers (DESIGN.md I11): a Redis that restarts without
//! persistence mid-job, a `FLUSHALL` mid-job, a job entry lost before planning, and tasks that
//! vanish while Redis keeps its epoch (an eviction): every job completes with every invariant,
//! and each test prints how long recovery took against the visibility timeout. Also what the
//! daemon does with Redis's eviction and persistence settings at start-up.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::invariants::Duplicates;
use support::mock_provider::MockProvider;
use support::redis_server::RedisServer;
use support::{Backend, TestApp, app_at, context_job, script_with_latency, wait_until};

const ITEMS: usize = 3_000;

/// An app on a throw-away Redis (no persistence) and the mock, with small tasks and few
/// credits, so that most of a job waits in Redis when Redis loses it.
async fn app_on(redis: &RedisServer, backend: Backend, mock: &MockProvider) -> TestApp {
    let url = redis.url();
    app_at(backend, &mock.base_url(), move |s| {
        s.redis.url = url;
        s.planner.task_size = 32;
        s.planner.page_size = 500;
        s.queue.task_credits = 4;
    })
    .await
}

/// What this app's reconciler repaired, as `/readyz` reports it: (jobs enqueued again, items
/// planned again).
async fn reconciled(app: &TestApp) -> (u64, u64) {
    let (_, ready) = app.get("/readyz").await;
    let r = &ready["checks"]["reconciler"];
    (
        r["jobs_enqueued"].as_u64().unwrap_or(0),
        r["items_replanned"].as_u64().unwrap_or(0),
    )
}

async fn done(app: &TestApp, job: &str) -> i64 {
    app.job(job).await["done"].as_i64().unwrap_or(0)
}

/// Waits until the job has `at_least` items done.
async fn under_way(app: &TestApp, job: &str, at_least: i64) {
    assert!(
        wait_until(Duration::from_secs(60), || async {
            done(app, job).await >= at_least
        })
        .await,
        "the job did not get under way: {}",
        app.job(job).await
    );
}

/// After Redis lost its data at `lost`: how long until the lost work was planned again (the
/// reconciler's count rose, or, for a job not yet planned, its planning restarted), and until
/// the job finished, printed against the visibility timeout.
async fn recovery(app: &TestApp, job: &str, lost: Instant, scenario: &str) -> Value {
    let before = reconciled(app).await;
    let visibility = app.settings.visibility_timeout().as_secs_f64();
    let repaired = wait_until(Duration::from_secs(60), || async {
        reconciled(app).await != before
    })
    .await;
    assert!(
        repaired,
        "nothing was planned again: {}",
        app.job(job).await
    );
    let repaired_after = lost.elapsed().as_secs_f64();
    let finished = app.wait_finished(job, Duration::from_secs(120)).await;
    let after = reconciled(app).await;
    println!(
        "[{scenario}] lost work planned again {repaired_after:.2} s after Redis lost it ({} jobs enqueued again, {} items planned again); the job finished {:.2} s after (visibility timeout {visibility:.1} s)",
        after.0 - before.0,
        after.1 - before.1,
        lost.elapsed().as_secs_f64()
    );
    finished
}

async fn redis_restarted_without_persistence_mid_job(backend: Backend) {
    let mut redis = RedisServer::start();
    let mock = MockProvider::start(script_with_latency(20)).await;
    let app = app_on(&redis, backend, &mock).await;
    app.seed_items("ctx", "it", ITEMS).await;
    let job = context_job(&app).await;
    under_way(&app, &job, ITEMS as i64 * 3 / 10).await;
    redis.kill();
    redis.restart();
    let lost = Instant::now();
    let finished = recovery(
        &app,
        &job,
        lost,
        &format!("{backend:?} Redis restarted empty"),
    )
    .await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["completed"], ITEMS as i64, "{finished}");
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} Redis restarted without persistence"),
        Duplicates::at_most(
            support::held_items(&app.settings),
            "the items held in memory when Redis forgot, re-planned before their results were committed",
        ),
    );
    app.stop().await;
}

async fn flushall_mid_job(backend: Backend) {
    let redis = RedisServer::start();
    let mock = MockProvider::start(script_with_latency(20)).await;
    let app = app_on(&redis, backend, &mock).await;
    app.seed_items("ctx", "it", ITEMS).await;
    let job = context_job(&app).await;
    under_way(&app, &job, ITEMS as i64 * 3 / 10).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let lost = Instant::now();
    let finished = recovery(&app, &job, lost, &format!("{backend:?} FLUSHALL")).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(finished["completed"], ITEMS as i64, "{finished}");
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} FLUSHALL mid-job"),
        Duplicates::at_most(
            support::held_items(&app.settings),
            "the items held in memory at the flush, re-planned before their results were committed",
        ),
    );
    app.stop().await;
}

/// A job whose entry Redis forgot before any planner took it is enqueued again.
async fn a_queued_job_whose_entry_was_lost(backend: Backend) {
    let redis = RedisServer::start();
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_on(&redis, backend, &mock).await;
    app.seed_items("ctx", "it", 300).await;
    let (status, _) = app.post_json("/v1/pause", &json!({})).await;
    assert_eq!(status, 202);
    // A read already blocked when the pause came may still deliver: let it end first.
    tokio::time::sleep(app.settings.queue.block * 2).await;
    let job = context_job(&app).await;
    tokio::time::sleep(app.settings.queue.block * 2).await;
    assert_eq!(app.job(&job).await["state"], "QUEUED");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let lost = Instant::now();
    let (status, _) = app.post_json("/v1/resume", &json!({})).await;
    assert_eq!(status, 202);
    let finished = recovery(&app, &job, lost, &format!("{backend:?} lost job entry")).await;
    assert_eq!(
        (finished["state"].as_str(), finished["completed"].as_i64()),
        (Some("COMPLETED"), Some(300)),
        "{finished}"
    );
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} lost job entry"),
        Duplicates::zero("nothing was embedded before the entry was lost"),
    );
    app.stop().await;
}

/// Tasks vanish while Redis keeps its epoch (as an eviction would take the stream): once
/// nothing is queued at all, the planned job's unfinished items are planned again.
async fn tasks_lost_while_the_epoch_stays(backend: Backend) {
    let redis = RedisServer::start();
    let mock = MockProvider::start(script_with_latency(100)).await;
    let url = redis.url();
    // One task held at a time, so most of the job waits on the stream.
    let app = app_at(backend, &mock.base_url(), move |s| {
        s.redis.url = url;
        s.planner.task_size = 32;
        s.queue.task_credits = 1;
    })
    .await;
    app.seed_items("ctx", "it", 500).await;
    let job = context_job(&app).await;
    app.wait_planned(&job, Duration::from_secs(30)).await;
    let (status, _) = app.post_json("/v1/pause", &json!({})).await;
    assert_eq!(status, 202);
    // What was taken finishes; the rest waits on the stream. Then it vanishes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = app.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(&app.keys.tasks_streams()[..])
        .arg(app.keys.retries())
        .query_async(&mut conn)
        .await
        .unwrap();
    let epoch: Option<String> = redis::cmd("GET")
        .arg(app.keys.epoch())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(epoch.is_some(), "the epoch stays");
    assert!(
        done(&app, &job).await < 500,
        "the job finished before its tasks vanished"
    );
    let lost = Instant::now();
    let (status, _) = app.post_json("/v1/resume", &json!({})).await;
    assert_eq!(status, 202);
    let finished = recovery(&app, &job, lost, &format!("{backend:?} tasks evicted")).await;
    assert_eq!(
        (finished["state"].as_str(), finished["completed"].as_i64()),
        (Some("COMPLETED"), Some(500)),
        "{finished}"
    );
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} tasks lost, epoch kept"),
        Duplicates::zero(
            "the lost tasks were never embedded; what was committed is not re-planned",
        ),
    );
    app.stop().await;
}

on_both_backends!(
    redis_restarted_without_persistence_mid_job,
    flushall_mid_job,
    a_queued_job_whose_entry_was_lost,
    tasks_lost_while_the_epoch_stays,
);

/// A Redis that may evict any key stops start-up with the setting to change; allowed, the
/// daemon starts and says what can be lost, as it does for a Redis that persists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_settings_are_checked_at_start_up() {
    let redis = RedisServer::start();
    let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(redis.url()).unwrap())
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let db = support::TestDatabase::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::test_settings(&db.url, dir.path());
    settings.redis.url = redis.url();
    let refused = embedq::startup::Application::build(settings.clone()).await;
    let err = refused.err().expect("an evicting Redis must be refused");
    assert!(
        matches!(err, embedq::startup::StartupError::EvictingRedis(_))
            && err.to_string().contains("allkeys-lru")
            && err.to_string().contains("redis.allow_evicting_policy"),
        "{err}"
    );

    let url = redis.url();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.redis.url = url;
        s.redis.allow_evicting_policy = true;
    })
    .await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let redis_check = &ready["checks"]["redis"];
    assert_eq!(redis_check["maxmemory_policy"], "allkeys-lru", "{ready}");
    assert_eq!(redis_check["persists"], false, "{ready}");
    let warning = redis_check["warning"].as_str().unwrap();
    assert!(
        warning.contains("may evict the queues") && warning.contains("persists nothing"),
        "{warning}"
    );
    app.stop().await;
}
