//! Fault injection inside the daemon (feature `fault-injection`, on for every test build): an
//! actor of each kind panics mid-job, a poison item crashes its worker every time, a store
//! call fails, a batch outlives the visibility timeout, and too many restarts escalate. Each
//! scenario ends with the full invariant check and prints its duplicate count with the reason.

#![cfg(feature = "fault-injection")]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::invariants::Duplicates;
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TestApp, context_job, script_with_latency, wait_until, xadd};

/// An app on the mock with small tasks, quick restarts and room for the restarts a scenario
/// causes.
async fn app_with(
    backend: Backend,
    mock: &MockProvider,
    adjust: impl FnOnce(&mut embedq::config::Settings),
) -> TestApp {
    support::app_with(backend, mock, move |s| {
        s.planner.task_size = 16;
        s.planner.page_size = 100;
        s.supervision.restart_backoff = Duration::from_millis(20);
        s.supervision.max_restarts = 30;
        adjust(s);
    })
    .await
}

/// Restarts of the actors whose role starts with `role` (e.g. "worker").
async fn restarts(app: &TestApp, role: &str) -> u64 {
    let (_, tree) = app.get("/v1/actors").await;
    tree["supervisor"]["children"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| c["role"].as_str().is_some_and(|r| r.starts_with(role)))
                .map(|c| c["restarts"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn arm(app: &TestApp, spec: &str) {
    embedq::fault::arm(Some(&app.instance), spec).expect("a valid fault spec");
}

fn fired(app: &TestApp) -> Vec<String> {
    embedq::fault::fired(Some(&app.instance))
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

/// Items the one-panic scenarios hold in memory at most: 4 task credits × 16 items per task.
const ONE_PANIC_HELD: u64 = 4 * 16;

/// One actor panics once mid-job: it restarts alone, the job completes, every invariant holds.
/// `early`: armed before the job is created (planning is over quickly), else once the job has
/// made progress.
async fn one_panic(backend: Backend, spec: &str, role: &str, early: bool, duplicates: Duplicates) {
    let mock = MockProvider::start(script_with_latency(20)).await;
    // Few credits: the tasks intake reads again each time a task settles.
    let app = app_with(backend, &mock, |s| s.queue.task_credits = 4).await;
    app.seed_items("ctx", "it", 400).await;
    if early {
        arm(&app, spec);
    }
    let job = context_job(&app).await;
    if !early {
        assert!(
            wait_until(Duration::from_secs(30), || async {
                app.job(&job).await["completed"].as_i64().unwrap_or(0) >= 32
            })
            .await
        );
        arm(&app, spec);
    }
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{spec}: {done}");
    assert_eq!(fired(&app).len(), 1, "{spec} fired {:?}", fired(&app));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            restarts(&app, role).await >= 1
        })
        .await,
        "{spec}: no restart of {role} recorded"
    );
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    report.expect(&format!("{backend:?} panic {spec}"), duplicates);
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

async fn a_task_intake_panic_restarts_it_alone(backend: Backend) {
    one_panic(
        backend,
        "task_intake:panic@2",
        "task_intake",
        false,
        Duplicates::zero("it panics before reading; what it delivered is held downstream"),
    )
    .await
}

async fn a_job_intake_panic_restarts_it_alone(backend: Backend) {
    one_panic(
        backend,
        "job_intake:panic@2",
        "job_intake",
        true,
        Duplicates::zero("the job entry stays pending and is delivered again"),
    )
    .await
}

async fn a_planner_panic_resumes_planning_from_its_cursor(backend: Backend) {
    one_panic(
        backend,
        "planner:panic@3",
        "planner",
        true,
        Duplicates::zero("planning resumes from its cursor and each page is written once"),
    )
    .await
}

async fn a_rate_limiter_panic_costs_an_attempt_at_most(backend: Backend) {
    one_panic(
        backend,
        "rate_limiter:panic@6",
        "rate_limiter",
        false,
        Duplicates::zero("workers waiting for a permit retry; no request was lost after sending"),
    )
    .await
}

async fn an_embedding_worker_panic_resends_its_task(backend: Backend) {
    one_panic(
        backend,
        "embedding_worker:panic@3",
        "worker",
        false,
        Duplicates::zero(
            "it panics before calling the provider; its items go on alone, attempts raised",
        ),
    )
    .await
}

/// A worker panics on a request that mixes the inputs of three tasks or more from two jobs of
/// two priorities: each input goes on alone with an attempt used, each task is settled once,
/// both jobs end with exact counters and every invariant holds.
async fn a_worker_panic_in_a_request_of_two_jobs_settles_each_task_once(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(300)).await;
    let app = app_with(backend, &mock, |s| {
        s.pipeline.workers = 1;
        s.queue.task_credits = 4;
        // Requests of 24 inputs: the four tasks held do not fit in one, so the next request
        // after the first mixes what is left of them with the edits.
        s.embedding.max_inputs_per_request = 24;
    })
    .await;
    app.seed_items("ctx", "it", 160).await;
    app.seed_items("edits", "ed", 2).await;
    // The first request that carries the edit panics: by then the other tasks wait too.
    arm(&app, "embedding_worker:panic@1#ed-000000");
    let bulk = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            mock.audit().requests >= 1
        })
        .await,
        "the first request never left"
    );
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"scope": {"type": "items", "item_ids": ["ed-000000", "ed-000001"]}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["job_id"].as_str().unwrap().to_owned();
    for job in [&bulk, &edit] {
        let done = app.wait_finished(job, Duration::from_secs(60)).await;
        assert_eq!(done["state"], "COMPLETED", "{done}");
    }
    let fired = embedq::fault::fired(Some(&app.instance));
    assert_eq!(fired.len(), 1, "{fired:?}");
    let items = &fired[0].items;
    let edits = items.iter().filter(|i| i.starts_with("ed-")).count();
    // Tasks of 16 items: the context's items in the request span at least two of its tasks.
    let tasks: std::collections::HashSet<usize> = items
        .iter()
        .filter_map(|i| i.strip_prefix("it-"))
        .map(|n| n.parse::<usize>().unwrap() / 16)
        .collect();
    assert!(
        edits >= 1 && tasks.len() >= 2,
        "the crashed request held {edits} edits and items of {} context tasks: {items:?}",
        tasks.len()
    );
    let report = app.check_invariants(&[&bulk, &edit], Some(&mock)).await;
    report.expect(
        &format!("{backend:?} worker panic in a mixed request"),
        Duplicates::zero("it panics before calling the provider; its items go on alone"),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

async fn a_pool_panic_redelivers_what_it_held(backend: Backend) {
    one_panic(
        backend,
        "embedding_pool:panic@12",
        "embedding_pool",
        false,
        Duplicates::at_most(
            ONE_PANIC_HELD,
            "the items held at the crash, embedded but not yet settled, are embedded again",
        ),
    )
    .await
}

async fn a_vector_writer_panic_retries_the_write(backend: Backend) {
    one_panic(
        backend,
        "vector_writer:panic@3",
        "vector_writer",
        false,
        Duplicates::zero(
            "the requests embedded and waiting at the writer when it crashed keep their vectors and write them again",
        ),
    )
    .await
}

async fn a_status_writer_panic_loses_nothing(backend: Backend) {
    one_panic(
        backend,
        "status_writer:panic@4",
        "status_writer",
        false,
        Duplicates::at_most(
            ONE_PANIC_HELD,
            "the settlements it held uncommitted: their tasks are delivered again and re-embedded",
        ),
    )
    .await
}

async fn a_retry_scheduler_panic_loses_no_retry(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        server_error_ratio: 0.2,
        ..script_with_latency(20)
    })
    .await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 600).await;
    let job = context_job(&app).await;
    // Once retries wait in Redis, the scheduler panics on its next tick.
    let retries = app.keys.retries();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            redis::cmd("ZCARD")
                .arg(&retries)
                .query_async::<u64>(&mut app.redis.clone())
                .await
                .unwrap()
                > 0
        })
        .await,
        "no retry was ever scheduled"
    );
    arm(&app, "retry_scheduler:panic@1");
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert!(
        wait_until(Duration::from_secs(5), || async { !fired(&app).is_empty() }).await,
        "the scheduler never ticked again"
    );
    assert_eq!(fired(&app).len(), 1);
    assert!(restarts(&app, "retry_scheduler").await >= 1);
    assert!(
        done["state"] == "COMPLETED" || done["state"] == "FAILED",
        "{done}"
    );
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    report.expect(
        &format!("{backend:?} panic retry_scheduler:panic@1 with retries waiting (20% 5xx)"),
        Duplicates::zero("5xx answers embed nothing; retries wait in Redis, not in the actor"),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

/// An item that crashes its worker every time ends FAILED and dead-lettered after the attempt
/// limit; the items that shared its task complete; the daemon keeps running.
async fn a_poison_item_ends_failed_and_dead_lettered(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 100).await;
    arm(&app, "embedding_worker:panic@1x0#it-000042");
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(
        (
            done["state"].as_str(),
            done["completed"].as_i64(),
            done["failed"].as_i64()
        ),
        (Some("FAILED"), Some(99), Some(1)),
        "{done}"
    );
    let (_, item) = app.get("/v1/items/it-000042").await;
    let limit = app.settings.retry.max_retries as i64 + 1;
    assert_eq!(item["status"], "FAILED", "{item}");
    assert_eq!(item["attempts"], limit, "{item}");
    assert!(
        item["last_error"]
            .as_str()
            .unwrap()
            .contains("crashed while holding it"),
        "{item}"
    );
    let crashes = fired(&app).len() as i64;
    assert_eq!(crashes, limit, "one crash per attempt");
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["item_id"], "it-000042");
    // Its task's other items were raised one attempt by the first crash and went on alone.
    assert!(app.max_attempts().await <= limit);
    assert_eq!(app.get("/readyz").await.0, 200, "the daemon keeps serving");
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    report.expect(
        &format!("{backend:?} poison item"),
        Duplicates::zero("the worker panics before calling the provider"),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

/// A point the vector store refuses for good (as it would one of the wrong dimension) fails
/// its item after one attempt, with the store's reason; the items that shared its request are
/// stored and complete.
async fn a_point_the_store_refuses_fails_its_item_once(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 100).await;
    arm(&app, "vector_writer:reject@1x0#it-000042");
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(
        (
            done["state"].as_str(),
            done["completed"].as_i64(),
            done["failed"].as_i64()
        ),
        (Some("FAILED"), Some(99), Some(1)),
        "{done}"
    );
    let (_, item) = app.get("/v1/items/it-000042").await;
    assert_eq!(item["status"], "FAILED", "{item}");
    assert_eq!(
        item["attempts"], 1,
        "one attempt, not every attempt: {item}"
    );
    let reason = item["last_error"].as_str().unwrap();
    assert!(
        reason.contains("the vector store refused the point") && reason.contains("fault injected"),
        "{item}"
    );
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["item_id"], "it-000042");
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert_eq!(report.max_attempts, 1, "nothing else was retried");
    report.expect(
        &format!("{backend:?} refused point"),
        Duplicates::zero("the refused write is split; the points it accepts are stored once"),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

/// Store calls that fail: the status writer's commit (kept and retried), a vector upsert
/// (items retried), loading a task's items (the task waits, no attempt used), a planning step.
async fn failed_store_calls_are_retried(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 300).await;
    arm(
        &app,
        "status_writer:fail_store@2x3,vector_writer:fail_store@3,embedding_worker:fail_store@4x2,planner:fail_store@2x2",
    );
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let fired = fired(&app);
    assert_eq!(fired.len(), 8, "{fired:?}");
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert_eq!(
        report.max_attempts, 1,
        "no failed store call costs an attempt"
    );
    report.expect(
        &format!("{backend:?} failed store calls"),
        Duplicates::zero(
            "a failed vector upsert is written again with the vectors held; a failed commit or load embeds nothing again",
        ),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

/// A batch that takes longer than the visibility timeout keeps its claim: another consumer
/// scanning for idle entries finds none. And a task processed twice (a copy added to the
/// stream, as a consumer that took it anyway would) still counts each item once.
async fn a_batch_outliving_the_visibility_timeout_keeps_its_claim(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock, |s| {
        s.queue.visibility_timeout = Duration::from_millis(1_000);
        s.pipeline.workers = 2;
    })
    .await;
    app.seed_items("ctx", "it", 64).await;
    arm(&app, "embedding_worker:delay=3500ms@1");
    let job = context_job(&app).await;
    let mut redis = app.redis.clone();
    let stream = app.keys.tasks_stream(embedq::domain::Priority::Normal);
    // While the first task sleeps 3.5 visibility timeouts, a thief looks for idle entries.
    let started = Instant::now();
    let mut stolen = 0usize;
    let mut scans = 0;
    while started.elapsed() < Duration::from_millis(3_200) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply: redis::Value = match redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(embedq::queue::PIPELINE_GROUP)
            .arg("thief")
            .arg(1_000)
            .arg("0-0")
            .arg("COUNT")
            .arg(100)
            .arg("JUSTID")
            .query_async(&mut redis)
            .await
        {
            Ok(v) => v,
            Err(_) => continue,
        };
        // [next cursor, [claimed ids], [deleted ids]]
        if let redis::Value::Array(parts) = &reply
            && let Some(redis::Value::Array(claimed)) = parts.get(1)
        {
            stolen += claimed.len();
        }
        scans += 1;
    }
    assert!(scans >= 10);
    assert_eq!(
        stolen, 0,
        "a consumer took an entry whose batch was still running"
    );
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(fired(&app).len(), 1);

    // The same task again, as a second consumer would process it: counted once.
    let task = json!({"job_id": job, "items": [{"id": "it-000001", "attempt": 0}, {"id": "it-000002", "attempt": 0}]});
    xadd(
        &mut redis,
        &stream,
        &[("v", "1"), ("task", &task.to_string())],
    )
    .await;
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    let again = app.job(&job).await;
    assert_eq!(again["completed"], 64, "{again}");
    report.expect(
        &format!("{backend:?} batch outlives the visibility timeout"),
        Duplicates::zero(
            "nobody reclaims a batch in progress, and the copy finds its items embedded",
        ),
    );
    embedq::fault::disarm(Some(&app.instance));
    app.stop().await;
}

/// More restarts than the window allows: supervision gives up, readiness says so, and the
/// daemon stops with an error (the binary exits 1, see tests/chaos.rs).
async fn too_many_restarts_escalate(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock, |s| {
        s.supervision.max_restarts = 3;
        s.supervision.restart_window = Duration::from_millis(60_000);
    })
    .await;
    app.seed_items("ctx", "it", 100).await;
    arm(&app, "embedding_worker:panic@1x0");
    let _job = context_job(&app).await;
    // Readiness turns false before the server goes away.
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !app.handle.is_finished() {
        if let Ok(r) = app.http.get(app.url("/readyz")).send().await {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if status == 503
                && body["checks"]["supervision"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("restarts"))
            {
                saw_not_ready = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let TestApp {
        handle,
        shutdown,
        settings,
        keys,
        ..
    } = app;
    let result = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the daemon stops after escalating")
        .unwrap();
    shutdown.trigger();
    let err = result.expect_err("escalation is an error");
    assert!(err.to_string().contains("supervision gave up"), "{err}");
    assert!(
        saw_not_ready,
        "readiness never said 503 with the reason before the daemon stopped"
    );
    println!("[{backend:?} escalation] {err}; readiness was 503 with the reason before stopping");
    support::delete_prefix(&settings.redis.url, keys.prefix()).await;
}

/// The binary: `EMBEDQ_FAULTS` makes every embedding worker panic; after `max_restarts` the
/// daemon exits with code 1 (so its orchestrator restarts it) instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exits_1_when_supervision_gives_up() {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let db = support::TestDatabase::create(Backend::Sqlite).await;
    let prefix = format!("embedq-test-{}", uuid::Uuid::new_v4().simple());
    let vectors = tempfile::tempdir().unwrap();
    let vectors_path = vectors.path().display().to_string();
    let env = support::daemon::owned_env([
        ("EMBEDQ_FAULTS", "embedding_worker:panic@1x0"),
        ("EMBEDQ__DATABASE__URL", db.url.as_str()),
        ("EMBEDQ__VECTORS__PATH", vectors_path.as_str()),
        ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
        ("EMBEDQ__EMBEDDING__MODEL", "text-embedding-3-small"),
        ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
        ("EMBEDQ__EMBEDDING__BASE_URL", &mock.base_url()),
        ("EMBEDQ__REDIS__URL", &support::redis_url()),
        ("EMBEDQ__REDIS__PREFIX", &prefix),
        ("EMBEDQ__QUEUE__BLOCK_MS", "200"),
        ("EMBEDQ__SUPERVISION__MAX_RESTARTS", "2"),
        ("EMBEDQ__SUPERVISION__RESTART_BACKOFF_MS", "20"),
    ]);
    let mut daemon = tokio::task::block_in_place(|| support::daemon::Daemon::start(env));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("it-{i:03}"), "content": format!("passage {i}")}))
        .collect();
    let r = http
        .post(format!("{base}/v1/contexts/ctx/items"))
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"scope": {"type": "context", "context_id": "ctx"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(30)))
        .expect("the daemon stops after escalating");
    assert_eq!(status.code(), Some(1), "{status}");
    println!("[escalation, binary] exit status {status}");
    support::delete_prefix(&support::redis_url(), &prefix).await;
}

on_both_backends!(
    a_worker_panic_in_a_request_of_two_jobs_settles_each_task_once,
    a_task_intake_panic_restarts_it_alone,
    a_job_intake_panic_restarts_it_alone,
    a_planner_panic_resumes_planning_from_its_cursor,
    a_rate_limiter_panic_costs_an_attempt_at_most,
    an_embedding_worker_panic_resends_its_task,
    a_pool_panic_redelivers_what_it_held,
    a_vector_writer_panic_retries_the_write,
    a_status_writer_panic_loses_nothing,
    a_retry_scheduler_panic_loses_no_retry,
    a_poison_item_ends_failed_and_dead_lettered,
    a_point_the_store_refuses_fails_its_item_once,
    failed_store_calls_are_retried,
    a_batch_outliving_the_visibility_timeout_keeps_its_claim,
    too_many_restarts_escalate,
);
