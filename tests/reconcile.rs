//! Reconcile jobs and dry runs against the running daemon, on PostgreSQL and SQLite (and on a
//! Qdrant server when `QDRANT_URL` is set): points removed, added and altered behind embedq's
//! back are found and repaired by `{"type": "reconcile"}`, and reported in the job's result;
//! a dry run's figures are what the provider then counts.

mod support;

use embedq::domain::{ContentHash, ContextId, ItemId, Metadata};
use embedq::vectors::VectorPoint;
use serde_json::{Value, json};
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::MockProvider;
use support::{Backend, TEST_DIMENSION, TestApp, app_with, context_job, script};

fn id(i: usize) -> ItemId {
    ItemId::parse(format!("it-{i:06}")).unwrap()
}

async fn reconcile(app: &TestApp) -> Value {
    let (status, body) = app
        .post_json("/v1/jobs", &json!({"type": "reconcile"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&job, Duration::from_secs(60)).await
}

/// 1,000 embedded items; behind embedq's back the test deletes 100 points, adds 50 points of
/// items that do not exist, overwrites 20 with another model's vector and 10 with other
/// metadata. A reconcile job finds every one, deletes the strays, embeds the 120 missing or
/// stale items again (its counters count them), refreshes the 10 payloads without an API call,
/// and says so in its result; a second reconcile finds nothing to do.
async fn reconcile_finds_and_repairs_what_changed_behind_its_back(backend: Backend) {
    const N: usize = 1_000;
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |s| s.planner.page_size = 128).await;
    app.seed_items("ctx", "it", N).await;
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(done["completed"], N, "{done}");
    assert_eq!(app.vectors.count().await.unwrap(), N as u64);

    // 100 points gone.
    let gone: Vec<(ItemId, i64)> = (0..100).map(|i| (id(i * 10), i64::MAX)).collect();
    app.vectors.delete(&gone).await.unwrap();
    // 50 strays: points of items that never existed.
    let context = ContextId::parse("ctx").unwrap();
    let stray = |i: usize, model: &str, hash: ContentHash, metadata: Metadata| VectorPoint {
        item_id: ItemId::parse(format!("stray-{i:03}")).unwrap(),
        context_id: context.clone(),
        content_hash: hash,
        model: model.into(),
        generation: 1,
        version: 1,
        metadata,
        vector: vec![0.5; TEST_DIMENSION],
    };
    let strays: Vec<VectorPoint> = (0..50)
        .map(|i| {
            stray(
                i,
                &app.settings.embedding.model,
                ContentHash::of("stray"),
                Metadata::default(),
            )
        })
        .collect();
    app.vectors.upsert(strays).await.unwrap();
    // 20 points of another model, 10 with other metadata.
    let existing =
        |range: std::ops::Range<usize>| -> Vec<ItemId> { range.map(|i| id(i * 10 + 1)).collect() };
    let mut altered = app.vectors.get(&existing(0..20)).await.unwrap();
    for point in &mut altered {
        point.model = "an-old-model".into();
    }
    app.vectors.upsert(altered).await.unwrap();
    let mut relabelled = app.vectors.get(&existing(20..30)).await.unwrap();
    for point in &mut relabelled {
        point.metadata = Metadata::parse(json!({"stale": true}), 1_000).unwrap();
    }
    app.vectors.upsert(relabelled).await.unwrap();
    assert_eq!(app.vectors.count().await.unwrap(), (N - 100 + 50) as u64);

    let calls = mock.audit().inputs_embedded;
    let done = reconcile(&app).await;
    assert_eq!(done["kind"], "reconcile", "{done}");
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(
        done["result"],
        json!({
            "points_scanned": N - 100 + 50,
            "orphans_deleted": 50,
            "items_checked": N,
            "points_missing": 100,
            "points_stale": 20,
            "payloads_refreshed": 10,
        }),
        "{done}"
    );
    assert_eq!(
        (&done["total"], &done["completed"]),
        (&json!(120), &json!(120)),
        "{done}"
    );
    assert_eq!(
        mock.audit().inputs_embedded - calls,
        120,
        "the repair embedded something other than the 120 missing or stale items"
    );
    assert_eq!(app.vectors.count().await.unwrap(), N as u64);
    let reconcile_job = done["id"].as_str().unwrap().to_owned();
    // The checker compares every point with its item: vector of its content, model, metadata.
    let report = app
        .check_invariants(&[&job, &reconcile_job], Some(&mock))
        .await;
    report.expect(
        "reconcile",
        Duplicates::at_most(120, "the 120 repaired items, embedded a second time"),
    );
    assert_eq!(
        report.duplicates, 120,
        "the repaired items were not embedded again"
    );

    let again = reconcile(&app).await;
    assert_eq!(
        again["result"],
        json!({
            "points_scanned": N,
            "orphans_deleted": 0,
            "items_checked": N,
            "points_missing": 0,
            "points_stale": 0,
            "payloads_refreshed": 0,
        }),
        "{again}"
    );
    assert_eq!(again["total"], 0, "{again}");
    app.stop().await;
}

/// `?dry_run=true` makes nothing and calls nothing; its token count is what the provider then
/// counts for the same job (within 1%), and once the items are embedded it counts them up to
/// date.
async fn a_dry_run_counts_what_the_provider_will(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.price_per_million_tokens = 0.02;
        s.rate_limit.tokens_per_minute = 60_000;
    })
    .await;
    // Varied texts: words, numbers, punctuation and non-ASCII, so tokens are not characters.
    let items: Vec<Value> = (0..600)
        .map(|i| {
            let body = "Zürich naïve café — 東京 ".repeat(i % 7)
                + &format!(
                    "item {i}: the quick brown fox jumps over {} lazy dogs. ",
                    i * 37
                )
                .repeat(1 + i % 5);
            json!({"id": format!("it-{i:06}"), "content": body})
        })
        .collect();
    for chunk in items.chunks(300) {
        let (status, body) = app
            .post_json("/v1/contexts/ctx/items", &json!({ "items": chunk }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let scope = json!({"scope": {"type": "context", "context_id": "ctx"}});
    let (status, estimate) = app.post_json("/v1/jobs?dry_run=true", &scope).await;
    assert_eq!(status, 200, "{estimate}");
    assert_eq!(
        (
            &estimate["scope_items"],
            &estimate["items"],
            &estimate["up_to_date"]
        ),
        (&json!(600), &json!(600), &json!(0)),
        "{estimate}"
    );
    let (_, jobs) = app.get("/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "a dry run made a job: {jobs}");
    assert_eq!(mock.audit().requests, 0, "a dry run called the provider");

    let job = context_job(&app).await;
    app.wait_finished(&job, Duration::from_secs(60)).await;
    let counted = mock.audit().tokens_embedded as f64;
    let estimated = estimate["tokens"].as_f64().unwrap();
    assert!(
        (estimated - counted).abs() <= counted * 0.01,
        "the dry run said {estimated} tokens, the provider counted {counted}"
    );
    let cost = estimate["cost"].as_f64().unwrap();
    assert!((cost - estimated / 1e6 * 0.02).abs() < 1e-9, "{estimate}");
    let seconds = estimate["seconds_at_quota"].as_f64().unwrap();
    assert!(
        (seconds - estimated / 60_000.0 * 60.0).abs() < 1e-6,
        "{estimate}"
    );

    let (_, after) = app.post_json("/v1/jobs?dry_run=true", &scope).await;
    assert_eq!(
        (&after["items"], &after["up_to_date"], &after["tokens"]),
        (&json!(0), &json!(600), &json!(0)),
        "{after}"
    );
    // A reconcile job has no dry run: it finds out by doing.
    let (status, body) = app
        .post_json("/v1/jobs?dry_run=true", &json!({"type": "reconcile"}))
        .await;
    assert_eq!(status, 422, "{body}");
    app.stop().await;
}

on_both_backends!(
    reconcile_finds_and_repairs_what_changed_behind_its_back,
    a_dry_run_counts_what_the_provider_will,
);
