//! Job creation and lookup: 202 with a status URL, idempotency keys, validation, and a clear 503
//! without a half-made job when Redis is down.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, TestApp, wait_until};

async fn create_job_answers_202_and_plans_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 10).await;
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"scope": {"type": "context", "context_id": "ctx"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap();
    assert_eq!(body["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(body["created"], true);
    let job = app.wait_planned(id, Duration::from_secs(10)).await;
    assert_eq!(job["total"], 10);
    assert_eq!(job["state"], "RUNNING");
    assert_eq!(
        job["scope"],
        json!({"type": "context", "context_id": "ctx"})
    );
    app.stop().await;
}

async fn idempotency_key_returns_the_same_job(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 3).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app
            .http
            .post(app.url("/v1/jobs"))
            .header("Idempotency-Key", "regen-2026-11-26")
            .json(&json!({"scope": {"type": "context", "context_id": "ctx"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let body: Value = r.json().await.unwrap();
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(app.job_count().await, 1);
    let messages: usize = redis::cmd("XLEN")
        .arg(app.keys.jobs_stream())
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let planned = app.wait_planned(&ids[0], Duration::from_secs(10)).await;
    assert_eq!(planned["total"], 3);
    assert!(messages <= 1, "one job message at most, saw {messages}");
    app.stop().await;
}

async fn bad_job_requests_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.limits.max_job_item_ids = 3).await;
    app.seed_items("ctx", "it", 2).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"scope": {"type": "context", "context_id": "nope"}}),
            404,
            "no context nope",
        ),
        (
            json!({"scope": {"type": "everything"}}),
            422,
            "unknown variant",
        ),
        (json!({"scope": {"type": "context"}}), 422, "context_id"),
        (
            json!({"scope": {"type": "items", "item_ids": []}}),
            422,
            "must not be empty",
        ),
        (
            json!({"scope": {"type": "items", "item_ids": ["a", "b", "c", "d"]}}),
            422,
            "limit is 3",
        ),
        (
            json!({"scope": {"type": "items", "item_ids": ["it-000000", "ghost"]}}),
            404,
            "ghost",
        ),
        (
            json!({"scope": {"type": "items", "item_ids": ["bad id"]}}),
            422,
            "item id",
        ),
        (
            json!({"scope": {"type": "all"}, "kind": "summarise"}),
            422,
            "unknown job kind",
        ),
        (
            json!({"scope": {"type": "all"}, "extra": 1}),
            422,
            "unknown field",
        ),
        (json!({}), 422, "scope"),
    ];
    for (body, want, reason) in cases {
        let (status, answer) = app.post_json("/v1/jobs", &body).await;
        assert_eq!(status, want, "{body} -> {answer}");
        let text = answer["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            text.contains(reason),
            "{body}: reason {text:?} lacks {reason:?}"
        );
    }
    let bad_key = app
        .http
        .post(app.url("/v1/jobs"))
        .header("Idempotency-Key", "has space")
        .json(&json!({"scope": {"type": "all"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status().as_u16(), 400);
    assert_eq!(app.job_count().await, 0, "a refused request created a job");

    let (status, _) = app.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, body) = app.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404, "{body}");
    app.stop().await;
}

async fn redis_down_gives_503_and_no_job(backend: Backend) {
    let closed = support::free_port();
    let app = TestApp::spawn_with(backend, |s| {
        s.redis.url = format!("redis://127.0.0.1:{closed}");
    })
    .await;
    app.seed_items("ctx", "it", 2).await;
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"scope": {"type": "context", "context_id": "ctx"}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["reason"].as_str().unwrap().contains("Redis"),
        "{body}"
    );
    assert_eq!(app.job_count().await, 0, "half-made job left behind");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["redis"]["ok"], false);
    assert_eq!(ready["checks"]["database"]["ok"], true);
    app.stop().await;
}

async fn readiness_reports_each_backend(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ok = wait_until(Duration::from_secs(5), || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    let (_, body) = app.get("/readyz").await;
    assert!(ok, "{body}");
    assert_eq!(body["ready"], true);
    let want = match backend {
        Backend::Postgres => "postgresql",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(body["checks"]["database"]["backend"], want);
    let roles: Vec<&str> = body["checks"]["supervision"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    for role in [
        "job_intake",
        "planner",
        "task_intake_interactive",
        "task_intake",
        "task_intake_bulk",
        "embedding_pool",
        "worker-0",
        "rate_limiter",
        "vector_writer",
        "status_writer",
        "retry_scheduler",
    ] {
        assert!(roles.contains(&role), "{role} missing from {roles:?}");
    }
    let (status, health) = app.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    app.stop().await;
}

async fn admin_routes_need_the_token_when_one_is_set(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.secrets.admin_token = Some(embedq::config::Secret::new("test-token-0123456789"));
    })
    .await;
    for (method, path) in [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/x"),
        ("GET", "/v1/items/x"),
        ("POST", "/v1/contexts/c/items"),
    ] {
        let r = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
        let wrong = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth("wrong-token-0123456789")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            wrong.status().as_u16(),
            401,
            "{method} {path} with a wrong token"
        );
    }
    let r = app
        .http
        .get(app.url("/v1/items/x"))
        .bearer_auth("test-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    app.stop().await;
}

on_both_backends!(
    create_job_answers_202_and_plans_it,
    idempotency_key_returns_the_same_job,
    bad_job_requests_are_refused_and_change_nothing,
    redis_down_gives_503_and_no_job,
    readiness_reports_each_backend,
    admin_routes_need_the_token_when_one_is_set,
);
