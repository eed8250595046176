//! Priorities and turns, end to end against a provider whose request budget binds: an
//! interactive edit is embedded while a bulk job still holds the quota; a small job started
//! behind a big one of the same priority finishes long before it; an operator's change of
//! priority moves the rest of a running job; and bad input (an unknown priority, a tenant that
//! is not 1 to 128 visible ASCII characters) changes nothing.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use support::mock_provider::MockProvider;
use support::{Backend, TestApp, app_with, script_with_latency, tasks_on_stream, wait_until};

/// Two requests a second of at most 20 inputs: 40 items/s, whatever waits.
fn quota_bound(s: &mut embedq::config::Settings) {
    s.rate_limit.requests_per_minute = 120;
    s.rate_limit.burst_seconds = 1.0;
    s.embedding.max_inputs_per_request = 20;
    s.planner.page_size = 100;
    s.planner.task_size = 10;
    s.queue.task_credits = 4;
}

async fn create(app: &TestApp, body: Value) -> String {
    let (status, answer) = app.post_json("/v1/jobs", &body).await;
    assert_eq!(status, 202, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

async fn patch(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .patch(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_some_done(app: &TestApp, job: &str) {
    assert!(
        wait_until(Duration::from_secs(30), || async {
            app.job(job).await["completed"].as_i64().unwrap_or(0) > 0
        })
        .await,
        "the job never started embedding: {}",
        app.job(job).await
    );
}

/// An edit of one item overtakes a bulk job whose every task is already queued: it has a
/// stream of its own, read first, and its input goes first into the next request.
async fn an_edit_is_embedded_while_a_bulk_job_holds_the_quota(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(50)).await;
    let app = app_with(backend, &mock, |s| {
        quota_bound(s);
        // The whole bulk job is queued before the edit comes: without priorities the edit
        // would wait behind all of it.
        s.planner.max_queued_tasks = 10_000;
    })
    .await;
    app.seed_items("bulk", "bk", 1_500).await;
    let bulk = create(
        &app,
        json!({"scope": {"type": "context", "context_id": "bulk"}, "priority": "bulk"}),
    )
    .await;
    assert_eq!(app.job(&bulk).await["priority"], "bulk");
    app.wait_planned(&bulk, Duration::from_secs(30)).await;
    wait_some_done(&app, &bulk).await;

    app.seed_items("docs", "ed", 1).await;
    // A short list of items is interactive unless it says otherwise.
    let edit = create(
        &app,
        json!({"scope": {"type": "items", "item_ids": ["ed-000000"]}}),
    )
    .await;
    assert_eq!(app.job(&edit).await["priority"], "interactive");
    let edited = app.wait_finished(&edit, Duration::from_secs(30)).await;
    assert_eq!(
        (edited["state"].as_str(), edited["completed"].as_i64()),
        (Some("COMPLETED"), Some(1)),
        "{edited}"
    );
    let bulk_now = app.job(&bulk).await;
    assert_eq!(bulk_now["state"], "RUNNING", "{bulk_now}");
    let left = bulk_now["total"].as_i64().unwrap() - bulk_now["done"].as_i64().unwrap();
    assert!(
        left > 500,
        "the edit was embedded only {left} items before the bulk job's end: {bulk_now}"
    );
    let (status, cancelled) = app
        .post_json(&format!("/v1/jobs/{bulk}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    app.stop().await;
}

/// Two jobs of one priority take turns: a small one started behind a big one finishes while
/// the big one has most of its items to go. Then an operator raises the big one: the rest of
/// it is planned on the interactive stream, and it ends with exact counters, each item
/// embedded once.
async fn jobs_of_one_priority_take_turns_and_a_priority_change_applies(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(50)).await;
    let app = app_with(backend, &mock, |s| {
        quota_bound(s);
        s.planner.max_queued_tasks = 4;
    })
    .await;
    app.seed_items("big", "bg", 800).await;
    app.seed_items("small", "sm", 30).await;
    let big = create(
        &app,
        json!({"scope": {"type": "context", "context_id": "big"}}),
    )
    .await;
    assert_eq!(app.job(&big).await["priority"], "normal");
    wait_some_done(&app, &big).await;
    let small = create(
        &app,
        json!({"scope": {"type": "context", "context_id": "small"}}),
    )
    .await;
    let finished = app.wait_finished(&small, Duration::from_secs(30)).await;
    assert_eq!(finished["completed"], 30, "{finished}");
    let big_now = app.job(&big).await;
    // `total` grows while the job is planned: count what is not done of the 800.
    let left = 800 - big_now["done"].as_i64().unwrap();
    assert!(
        left > 300,
        "the small job waited for the big one: {left} items of it were left: {big_now}"
    );

    let (status, raised) = patch(
        &app,
        &format!("/v1/jobs/{big}"),
        &json!({"priority": "interactive"}),
    )
    .await;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["priority"], "interactive");
    let interactive = app.keys.tasks_stream(embedq::domain::Priority::Interactive);
    let mut redis = app.redis.clone();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let mut redis = redis.clone();
            let interactive = interactive.clone();
            async move { !tasks_on_stream(&mut redis, &interactive).await.is_empty() }
        })
        .await,
        "no task of the raised job reached the interactive stream"
    );
    let _ = &mut redis;
    let done = app.wait_finished(&big, Duration::from_secs(90)).await;
    assert_eq!(
        (
            done["state"].as_str(),
            done["total"].as_i64(),
            done["completed"].as_i64(),
            done["failed"].as_i64()
        ),
        (Some("COMPLETED"), Some(800), Some(800), Some(0)),
        "{done}"
    );
    assert_eq!(done["priority"], "interactive");
    let audit = mock.audit();
    let texts: HashSet<String> = (0..800)
        .map(|i| format!("passage {i} of big"))
        .chain((0..30).map(|i| format!("passage {i} of small")))
        .collect();
    let once: Vec<&String> = texts
        .iter()
        .filter(|t| audit.embedded.get(*t).copied() != Some(1))
        .collect();
    assert!(
        once.is_empty(),
        "{} items not embedded exactly once",
        once.len()
    );
    assert_eq!(
        audit.inputs_embedded, 830,
        "nothing embedded twice or extra"
    );
    let (status, body) = patch(
        &app,
        &format!("/v1/jobs/{big}"),
        &json!({"priority": "bulk"}),
    )
    .await;
    assert_eq!(status, 409, "a final job keeps its priority: {body}");
    assert_eq!(app.job(&big).await["priority"], "interactive");
    app.stop().await;
}

/// An edit is read and embedded while more jobs than one daemon's planner used to hold (4) are
/// being planned, each held back by backpressure.
async fn an_edit_is_embedded_while_many_jobs_are_being_planned(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(50)).await;
    let app = app_with(backend, &mock, |s| {
        quota_bound(s);
        s.planner.max_queued_tasks = 2;
    })
    .await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        let context = format!("c{n}");
        app.seed_items(&context, &format!("c{n}"), 300).await;
        jobs.push(
            create(
                &app,
                json!({"scope": {"type": "context", "context_id": context}}),
            )
            .await,
        );
    }
    app.seed_items("docs", "ed", 1).await;
    let edit = create(
        &app,
        json!({"scope": {"type": "items", "item_ids": ["ed-000000"]}}),
    )
    .await;
    let edited = app.wait_finished(&edit, Duration::from_secs(30)).await;
    assert_eq!(edited["completed"], 1, "{edited}");
    for job in &jobs {
        let now = app.job(job).await;
        assert_eq!(
            now["planned"], false,
            "every other job is still being planned: {now}"
        );
    }
    for job in &jobs {
        let (status, _) = app
            .post_json(&format!("/v1/jobs/{job}/cancel"), &json!({}))
            .await;
        assert_eq!(status, 200);
    }
    app.stop().await;
}

/// An unknown priority is refused with the reason and makes or changes nothing.
async fn bad_priorities_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 3).await;
    let jobs_before = app.job_count().await;
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"scope": {"type": "context", "context_id": "ctx"}, "priority": "urgent"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("priority"), "{body}");
    assert_eq!(app.job_count().await, jobs_before, "no job was made");

    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"scope": {"type": "context", "context_id": "ctx"}, "tenant": "has space"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("tenant"), "{body}");
    assert_eq!(app.job_count().await, jobs_before, "no job was made");

    let job = create(
        &app,
        json!({"scope": {"type": "context", "context_id": "ctx"}, "priority": "bulk", "tenant": "acme"}),
    )
    .await;
    assert_eq!(app.job(&job).await["tenant"], "acme");
    let (status, body) = patch(
        &app,
        &format!("/v1/jobs/{job}"),
        &json!({"priority": "soon"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = patch(
        &app,
        &format!("/v1/jobs/{job}"),
        &json!({"priority": "normal", "x": 1}),
    )
    .await;
    assert!(matches!(status, 400 | 422), "{status} {body}");
    assert_eq!(app.job(&job).await["priority"], "bulk", "nothing changed");
    let unknown = embedq::domain::JobId::new();
    let (status, body) = patch(
        &app,
        &format!("/v1/jobs/{unknown}"),
        &json!({"priority": "normal"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = patch(&app, "/v1/jobs/not-an-id", &json!({"priority": "normal"})).await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

on_both_backends!(
    an_edit_is_embedded_while_a_bulk_job_holds_the_quota,
    jobs_of_one_priority_take_turns_and_a_priority_change_applies,
    an_edit_is_embedded_while_many_jobs_are_being_planned,
    bad_priorities_change_nothing,
);
