//! The embedding pipeline end to end, against the mock provider: every item embedded once and
//! counted once, no call for unchanged content, transient faults retried within the attempt
//! limit, a bad key pausing intake without burning attempts, over-token inputs failing once
//! with the reason, 429 storms obeyed, and search over the result.

mod support;

use serde_json::json;
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TEST_DIMENSION, TestApp, app_with, script, wait_until, xadd};

/// Checks that every completed item has exactly one point, holding the mock's vector of its
/// current content.
async fn assert_points_match(app: &TestApp, ids: &[String]) {
    use embedq::domain::ItemId;
    let items: Vec<ItemId> = ids
        .iter()
        .map(|i| ItemId::parse(i.clone()).unwrap())
        .collect();
    let mut checked = 0;
    for chunk in items.chunks(500) {
        let points = app.vectors.get(chunk).await.unwrap();
        assert_eq!(points.len(), chunk.len(), "missing points");
        let contents = app.store.item_contents(chunk).await.unwrap();
        for p in points {
            let content = &contents[&p.item_id].content;
            let expected = MockProvider::vector_for(content, TEST_DIMENSION);
            let diff = p
                .vector
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-4,
                "point of {} holds another vector (max diff {diff})",
                p.item_id
            );
            assert_eq!(p.content_hash, embedq::domain::ContentHash::of(content));
            checked += 1;
        }
    }
    assert_eq!(checked, ids.len());
}

async fn ten_thousand_items_are_embedded_once_and_counted_once(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        latency: Duration::from_millis(50),
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |_| {}).await;
    const N: usize = 10_000;
    app.seed_items("ctx", "it", N).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(180)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(
        (
            done["total"].as_i64(),
            done["completed"].as_i64(),
            done["failed"].as_i64(),
            done["skipped"].as_i64()
        ),
        (Some(N as i64), Some(N as i64), Some(0), Some(0))
    );
    let statuses = app.status_counts().await;
    assert_eq!(statuses.get("COMPLETED"), Some(&(N as i64)), "{statuses:?}");
    assert_eq!(
        app.vectors.count().await.unwrap(),
        N as u64,
        "one point per item"
    );
    let ids: Vec<String> = (0..N).map(|i| format!("it-{i:06}")).collect();
    assert_points_match(&app, &ids).await;

    let audit = mock.audit();
    println!(
        "{backend:?}: {N} items embedded with {} API calls ({:.1} items per call), {} inputs embedded more than once",
        audit.requests,
        N as f64 / audit.requests as f64,
        audit.duplicates()
    );
    assert_eq!(audit.inputs_embedded, N as u64);
    assert_eq!(audit.duplicates(), 0);
    assert!(
        audit.requests * 20 <= N as u64,
        "batching: {} calls for {N} items",
        audit.requests
    );

    // The same job again, nothing changed: zero calls, every item skipped.
    let again = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&again, Duration::from_secs(60)).await;
    assert_eq!(done["skipped"], N as i64, "{done}");
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(
        mock.audit().requests,
        audit.requests,
        "unchanged content was embedded again"
    );
    assert_eq!(app.vectors.count().await.unwrap(), N as u64);

    // One changed item: one call, the point holds the new content's vector.
    let (status, _) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "it-000042", "content": "new words for item 42"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let third = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&third, Duration::from_secs(60)).await;
    assert_eq!(
        (done["completed"].as_i64(), done["skipped"].as_i64()),
        (Some(1), Some(N as i64 - 1)),
        "{done}"
    );
    assert_eq!(mock.audit().requests, audit.requests + 1);
    assert_points_match(&app, &["it-000042".to_string()]).await;
    assert_eq!(app.vectors.count().await.unwrap(), N as u64);
    app.check_invariants(&[&job, &again, &third], Some(&mock))
        .await
        .expect(
            &format!("{backend:?} 10,000 items, twice, then one changed"),
            Duplicates::zero("nothing fails, unchanged content is skipped"),
        );
    app.stop().await;
}

async fn transient_faults_are_retried_within_the_attempt_limit(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        server_error_ratio: 0.10,
        hang_ratio: 0.005,
        hang_for: Duration::from_secs(3),
        bad_body_ratio: 0.02,
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.timeout = Duration::from_millis(500)
    })
    .await;
    const N: usize = 3_000;
    app.seed_items("ctx", "it", N).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(120)).await;
    let audit = mock.audit();
    println!(
        "{backend:?}: statuses seen {:?}; {} inputs embedded more than once (requests whose answer was lost or broken)",
        audit.by_status,
        audit.duplicates()
    );
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], N as i64);
    assert_eq!(
        app.status_counts().await.get("COMPLETED"),
        Some(&(N as i64))
    );
    let limit = app.settings.retry.max_retries as i64 + 1;
    assert!(
        app.max_attempts().await <= limit,
        "an item passed its attempt limit"
    );
    assert!(
        app.dead_letters().await.is_empty(),
        "dead letters: {:?}",
        app.dead_letters().await
    );
    assert!(
        audit.by_status.keys().any(|s| *s >= 500),
        "the storm never hit: {:?}",
        audit.by_status
    );
    assert_eq!(app.vectors.count().await.unwrap(), N as u64);
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} 5xx, hangs and broken bodies"),
        Duplicates::zero(
            "a hang ends in a 504 and a broken body is not an embedding: each input is embedded once",
        ),
    );
    app.stop().await;
}

async fn a_bad_key_pauses_intake_without_burning_attempts(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        api_key: Some("sk-right-key".into()),
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| {
        s.secrets.provider_api_key = Some(embedq::config::Secret::new("sk-wrong-key"));
    })
    .await;
    app.seed_items("ctx", "it", 500).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let paused = wait_until(Duration::from_secs(10), || async {
        let (status, body) = app.get("/readyz").await;
        status == 503
            && body["checks"]["pipeline"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("401"))
    })
    .await;
    let (_, ready) = app.get("/readyz").await;
    assert!(paused, "readiness does not say why: {ready}");
    assert!(
        !ready.to_string().contains("sk-wrong-key"),
        "the key leaked: {ready}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit = mock.audit();
    assert_eq!(
        audit.by_status.get(&401),
        Some(&1),
        "requests after the first 401: {:?}",
        audit.by_status
    );
    assert_eq!(app.max_attempts().await, 0, "a fatal error burnt attempts");
    assert_eq!(app.job(&job).await["completed"], 0);

    // The key is fixed at the provider; an operator resumes intake; the job finishes.
    mock.set_script(MockScript {
        api_key: Some("sk-wrong-key".into()),
        ..script()
    });
    let (status, _) = app.post_json("/v1/resume", &json!({})).await;
    assert_eq!(status, 202);
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(
        (done["state"].as_str(), done["completed"].as_i64()),
        (Some("COMPLETED"), Some(500)),
        "{done}"
    );
    assert_eq!(app.max_attempts().await, 1);
    assert_eq!(app.get("/readyz").await.0, 200);
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} bad key, then resumed"),
        Duplicates::zero("a 401 embeds nothing"),
    );
    app.stop().await;
}

async fn over_token_inputs_fail_once_with_the_reason(backend: Backend) {
    // The provider accepts at most 20 tokens per input; embedq is told 8192 (a misconfigured
    // limit), so the provider's 400 is what stops the long input.
    let mock = MockProvider::start(MockScript {
        max_tokens_per_input: 20,
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| s.planner.task_size = 8).await;
    app.seed_items("ctx", "it", 7).await;
    let long = "lorem ipsum dolor sit amet ".repeat(10);
    let too_long_for_us = "x ".repeat(9_000);
    let (status, _) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [
                {"id": "long", "content": long},
                {"id": "huge", "content": too_long_for_us}
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(
        (
            done["completed"].as_i64(),
            done["failed"].as_i64(),
            done["total"].as_i64()
        ),
        (Some(7), Some(2), Some(9))
    );

    let (_, item) = app.get("/v1/items/long").await;
    assert_eq!(
        (item["status"].as_str(), item["attempts"].as_i64()),
        (Some("FAILED"), Some(1)),
        "{item}"
    );
    assert!(
        item["last_error"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{item}"
    );
    let (_, item) = app.get("/v1/items/huge").await;
    assert_eq!(
        (item["status"].as_str(), item["attempts"].as_i64()),
        (Some("FAILED"), Some(1)),
        "{item}"
    );
    assert!(
        item["last_error"]
            .as_str()
            .unwrap()
            .contains("the limit is 8192 per input"),
        "{item}"
    );
    let audit = mock.audit();
    assert!(
        !audit.embedded.keys().any(|t| t.starts_with("x x")),
        "the over-limit input was sent"
    );
    let dead = app.dead_letters().await;
    let dead_items: Vec<&str> = dead.iter().map(|d| d["item_id"].as_str()).collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead_items.contains(&"long") && dead_items.contains(&"huge"));
    assert!(
        dead.iter()
            .all(|d| d["attempts"] == "1" && !d["reason"].is_empty())
    );
    // Never retried: the provider saw the long input once per step of the bisection that
    // found it — at most 1 + log2(8) refusals for the 8 inputs sent.
    let refused = audit.by_status.get(&400).copied().unwrap_or(0);
    assert!((1..=4).contains(&refused), "{:?}", audit.by_status);
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} over-token 400"),
        Duplicates::zero(
            "the refused batch embedded nothing; its inputs are sent again one by one",
        ),
    );
    app.stop().await;
}

async fn a_429_storm_is_obeyed(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        storm_429: 6,
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 300).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(
        (done["state"].as_str(), done["completed"].as_i64()),
        (Some("COMPLETED"), Some(300)),
        "{done}"
    );
    let audit = mock.audit();
    assert_eq!(audit.by_status.get(&429), Some(&6));
    assert!(app.max_attempts().await <= app.settings.retry.max_retries as i64 + 1);
    assert!(app.dead_letters().await.is_empty());
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} 6 × 429"),
        Duplicates::zero("a 429 embeds nothing"),
    );
    app.stop().await;
}

async fn search_returns_the_nearest_items(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 50).await;
    app.seed_items("other", "ot", 5).await;
    let job = app.create_job(json!({"type": "all"})).await;
    app.wait_finished(&job, Duration::from_secs(30)).await;
    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/search",
            &json!({"query": "passage 17 of ctx", "k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["item_id"], "it-000017");
    assert!(
        (hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "{body}"
    );
    assert_eq!(hits[0]["content"], "passage 17 of ctx");
    assert!(
        hits.iter()
            .all(|h| h["item_id"].as_str().unwrap().starts_with("it-")),
        "another context leaked in: {body}"
    );
    for (bad, want) in [
        (json!({"query": ""}), 422),
        (json!({"query": "x", "k": 0}), 422),
        (json!({"query": "x", "k": 1000}), 422),
        (json!({"q": "x"}), 422),
    ] {
        assert_eq!(
            app.post_json("/v1/contexts/ctx/search", &bad).await.0,
            want,
            "{bad}"
        );
    }
    assert_eq!(
        app.post_json("/v1/contexts/nope/search", &json!({"query": "x"}))
            .await
            .0,
        404
    );
    app.stop().await;
}

async fn a_job_added_straight_to_redis_is_recorded_and_embedded(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 40).await;
    let job = uuid::Uuid::now_v7().to_string();
    let mut conn = app.redis.clone();
    let jobs = app.keys.jobs_stream();
    // What a producer without HTTP writes (README, "Enqueueing from a web backend"), twice:
    // the second delivery of the same job id must not make a second job.
    for _ in 0..2 {
        xadd(
            &mut conn,
            &jobs,
            &[
                ("v", "1"),
                ("job_id", &job),
                ("scope", r#"{"type":"context","context_id":"ctx"}"#),
            ],
        )
        .await;
    }
    // A scope that does not parse is dead-lettered with the reason, and makes no job.
    let bad = uuid::Uuid::now_v7().to_string();
    xadd(
        &mut conn,
        &jobs,
        &[
            ("v", "1"),
            ("job_id", &bad),
            ("scope", r#"{"type":"everything"}"#),
        ],
    )
    .await;
    let recorded = wait_until(Duration::from_secs(10), || async {
        app.get(&format!("/v1/jobs/{job}")).await.0 == 200
    })
    .await;
    assert!(recorded, "the planner did not record the job");
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["total"], 40, "{done}");
    assert_eq!(done["completed"], 40, "{done}");
    assert_eq!(app.get(&format!("/v1/jobs/{bad}")).await.0, 404);
    let (_, listed) = app.get("/v1/jobs").await;
    assert_eq!(
        listed["jobs"].as_array().map(|j| j.len()),
        Some(1),
        "{listed}"
    );
    let ok = wait_until(Duration::from_secs(10), || async {
        let (_, dead) = app.get("/v1/dead-letters").await;
        dead.to_string().contains("scope")
    })
    .await;
    assert!(ok, "the bad scope was not dead-lettered with its reason");
    let ids: Vec<String> = (0..40).map(|i| format!("it-{i:06}")).collect();
    assert_points_match(&app, &ids).await;
    let audit = mock.audit();
    assert_eq!(audit.inputs_embedded, 40);
    assert_eq!(audit.duplicates(), 0);
    app.stop().await;
}

async fn a_job_over_failed_items_gives_them_fresh_attempts(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        server_error_ratio: 1.0,
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| {
        s.retry.max_retries = 1;
        s.retry.base_backoff = Duration::from_millis(10);
    })
    .await;
    app.seed_items("ctx", "it", 20).await;
    let first = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&first, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(done["failed"], 20, "{done}");
    assert_eq!(app.max_attempts().await, 2);

    // The provider recovers; the operator re-runs the failed items.
    mock.set_script(script());
    let scope = app.items_with_status("FAILED").await;
    assert_eq!(scope.len(), 20);
    let again = app.create_job(json!({"type": "failed"})).await;
    let done = app.wait_finished(&again, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["total"], 20, "{done}");
    assert_eq!(done["completed"], 20, "{done}");
    assert_eq!(app.status_counts().await.get("COMPLETED"), Some(&20));
    assert!(
        app.max_attempts().await <= 2,
        "an item passed its attempt limit"
    );
    let ids: Vec<String> = (0..20).map(|i| format!("it-{i:06}")).collect();
    assert_points_match(&app, &ids).await;
    let scopes = [(again.clone(), scope)].into_iter().collect();
    app.check_invariants_with(&[&first, &again], &scopes, Some(&mock))
        .await
        .expect(
            &format!("{backend:?} failed items re-run"),
            Duplicates::zero("a 5xx embeds nothing; the re-run embeds each item once"),
        );
    app.stop().await;
}

on_both_backends!(
    ten_thousand_items_are_embedded_once_and_counted_once,
    transient_faults_are_retried_within_the_attempt_limit,
    a_bad_key_pauses_intake_without_burning_attempts,
    over_token_inputs_fail_once_with_the_reason,
    a_429_storm_is_obeyed,
    search_returns_the_nearest_items,
    a_job_added_straight_to_redis_is_recorded_and_embedded,
    a_job_over_failed_items_gives_them_fresh_attempts,
);
