//! Bulk upsert of items and item lookup: counts, state transitions, metadata, versions,
//! deletes (one item, a list in the upsert, a whole context), and every bad input refused
//! with a reason and no change.

mod support;

use serde_json::{Value, json};
use support::{Backend, TestApp};

async fn upsert_counts_created_changed_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx-1/items",
            &json!({"items": [{"id": "a", "content": "alpha"}, {"id": "b", "content": "beta"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, counts(2, 0, 0, 0, 0, 0));

    // Pretend "a" was embedded, to see that unchanged content leaves it alone.
    sqlx::query("UPDATE items SET status = 'COMPLETED', attempts = 1 WHERE id = 'a'")
        .execute(app.store.pool())
        .await
        .unwrap();

    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx-1/items",
            &json!({"items": [
                {"id": "a", "content": "alpha"},
                {"id": "b", "content": "beta, edited"},
                {"id": "c", "content": "gamma"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, counts(1, 1, 0, 1, 0, 0));

    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(a["status"], "COMPLETED");
    assert_eq!(a["attempts"], 1);
    assert_eq!(a["context_id"], "ctx-1");
    let (_, b) = app.get("/v1/items/b").await;
    assert_eq!(b["status"], "PENDING");
    assert_eq!(b["content_hash"], sha256_hex("beta, edited"));
    app.stop().await;
}

fn counts(
    created: u64,
    changed: u64,
    metadata_changed: u64,
    unchanged: u64,
    deleted: u64,
    not_found: u64,
) -> Value {
    json!({"created": created, "changed": changed, "metadata_changed": metadata_changed,
        "unchanged": unchanged, "deleted": deleted, "not_found": not_found})
}

fn sha256_hex(s: &str) -> String {
    embedq::domain::ContentHash::of(s).as_str().to_owned()
}

async fn changed_content_resets_a_completed_item(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.seed_items("ctx", "it", 1).await;
    sqlx::query("UPDATE items SET status = 'FAILED', attempts = 3, last_error = 'boom'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let (status, _) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "it-000000", "content": "new text"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, item) = app.get("/v1/items/it-000000").await;
    assert_eq!(item["status"], "PENDING");
    assert_eq!(item["attempts"], 0);
    assert_eq!(item["last_error"], Value::Null);
    app.stop().await;
}

async fn bad_inputs_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.limits.max_items_per_request = 5;
        s.limits.max_content_bytes = 100;
        s.limits.max_metadata_bytes = 256;
    })
    .await;
    app.seed_items("ctx", "it", 2).await;
    app.seed_items("other", "ot", 1).await;
    let before = app.item_count().await;

    let raw = app
        .http
        .post(app.url("/v1/contexts/ctx/items"))
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let no_type = app
        .http
        .post(app.url("/v1/contexts/ctx/items"))
        .body("{\"items\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status().as_u16(), 415);

    let six: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("n{i}"), "content": "x"}))
        .collect();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/contexts/ctx/items",
            json!({"items": []}),
            422,
            "nothing to do",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "m", "content": "x", "metadata": [1, 2]}]}),
            422,
            "items[0].metadata: must be a JSON object",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "m", "content": "x", "metadata": {"k": "v".repeat(300)}}]}),
            422,
            "limits.max_metadata_bytes",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"delete": ["bad id"]}),
            422,
            "delete[0]",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "it-000000", "content": "x"}], "delete": ["it-000000"]}),
            422,
            "also in items",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"delete": ["it-000000", "it-000000"]}),
            422,
            "more than once",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"delete": ["a", "b", "c", "d", "e", "f"]}),
            422,
            "6 delete ids in one request",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "new", "content": "x"}], "delete": ["ot-000000"]}),
            409,
            "belongs to context other",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": six}),
            422,
            "limit is 5",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "ok", "content": "y".repeat(101)}]}),
            422,
            "limit is 100",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "ok", "content": "  "}]}),
            422,
            "must not be empty",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "bad id", "content": "x"}]}),
            422,
            "items[0].id",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "d", "content": "x"}, {"id": "d", "content": "y"}]}),
            422,
            "more than once",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "new", "content": "x"}, {"id": "ot-000000", "content": "moved"}]}),
            409,
            "belongs to context other",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"items": [{"id": "x"}]}),
            422,
            "content",
        ),
        (
            "/v1/contexts/ctx/items",
            json!({"things": []}),
            422,
            "unknown field",
        ),
        (
            "/v1/contexts/bad%20ctx/items",
            json!({"items": [{"id": "x", "content": "x"}]}),
            400,
            "context id",
        ),
    ];
    for (path, body, want, reason) in cases {
        let (status, answer) = app.post_json(path, &body).await;
        assert_eq!(status, want, "{path} {body} -> {answer}");
        let text = answer["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            text.contains(reason),
            "{path} {body}: reason {text:?} lacks {reason:?}"
        );
    }
    assert_eq!(
        app.item_count().await,
        before,
        "refused requests changed items"
    );
    let (_, moved) = app.get("/v1/items/ot-000000").await;
    assert_eq!(moved["context_id"], "other");

    let (status, body) = app.get("/v1/items/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = app.get("/v1/items/bad%20id").await;
    assert_eq!(status, 400);
    let (status, body) = app.get("/v1/no/such/route").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    app.stop().await;
}

/// Metadata is stored as given (canonical), a change of it alone counts `metadata_changed`
/// and raises the version without making the item PENDING; absent metadata keeps it, `{}`
/// clears it.
async fn metadata_and_versions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let upsert = |items: Value| {
        let app = &app;
        async move {
            app.post_json("/v1/contexts/ctx/items", &json!({ "items": items }))
                .await
        }
    };
    let (status, body) = upsert(json!([
        {"id": "a", "content": "alpha", "metadata": {"tenant": "acme", "lang": "en"}},
        {"id": "b", "content": "beta"}
    ]))
    .await;
    assert_eq!((status, body), (200, counts(2, 0, 0, 0, 0, 0)));
    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(a["metadata"], json!({"lang": "en", "tenant": "acme"}));
    assert_eq!(a["version"], 1);
    let (_, b) = app.get("/v1/items/b").await;
    assert_eq!(b["metadata"], json!({}));
    sqlx::query("UPDATE items SET status = 'COMPLETED', attempts = 1 WHERE id = 'a'")
        .execute(app.store.pool())
        .await
        .unwrap();

    // Same metadata in another key order: unchanged. New metadata: metadata_changed, the
    // version moves, the status stays; absent metadata keeps what is there.
    let (_, body) = upsert(json!([
        {"id": "a", "content": "alpha", "metadata": {"lang": "en", "tenant": "acme"}},
        {"id": "b", "content": "beta"}
    ]))
    .await;
    assert_eq!(body, counts(0, 0, 0, 2, 0, 0));
    let (_, body) = upsert(json!([
        {"id": "a", "content": "alpha", "metadata": {"tenant": "globex"}}
    ]))
    .await;
    assert_eq!(body, counts(0, 0, 1, 0, 0, 0));
    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(
        (&a["metadata"], &a["version"], &a["status"]),
        (&json!({"tenant": "globex"}), &json!(2), &json!("COMPLETED"))
    );
    let (_, body) = upsert(json!([{"id": "a", "content": "alpha, edited"}])).await;
    assert_eq!(body, counts(0, 1, 0, 0, 0, 0));
    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(
        (&a["metadata"], &a["version"], &a["status"]),
        (&json!({"tenant": "globex"}), &json!(3), &json!("PENDING"))
    );
    let (_, body) = upsert(json!([{"id": "a", "content": "alpha, edited", "metadata": {}}])).await;
    assert_eq!(body, counts(0, 0, 1, 0, 0, 0));
    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(a["metadata"], json!({}));
    app.stop().await;
}

/// Deletes: one item (404 when unknown), a list in the upsert (unknown ids counted), a whole
/// context (404 when unknown); an id made again after its delete continues its version.
async fn deletes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.seed_items("ctx", "it", 5).await;
    app.seed_items("other", "ot", 3).await;
    let delete = |path: String| {
        let app = &app;
        async move {
            let r = app.http.delete(app.url(&path)).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = delete("/v1/items/it-000000".into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted": 1, "jobs_finished": 0}));
    assert_eq!(app.get("/v1/items/it-000000").await.0, 404);
    let (status, body) = delete("/v1/items/it-000000".into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(delete("/v1/items/bad%20id".into()).await.0, 400);

    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "it-000000", "content": "back"}],
                    "delete": ["it-000001", "it-000002", "never-was"]}),
        )
        .await;
    assert_eq!((status, body), (200, counts(1, 0, 0, 0, 2, 1)));
    let (_, back) = app.get("/v1/items/it-000000").await;
    assert_eq!(
        back["version"], 3,
        "made again after a delete at version 2: {back}"
    );
    assert_eq!(app.item_count().await, 6);

    let (status, body) = delete("/v1/contexts/ctx".into()).await;
    assert_eq!(
        (status, body),
        (200, json!({"deleted": 3, "jobs_finished": 0}))
    );
    assert_eq!(app.item_count().await, 3);
    assert_eq!(delete("/v1/contexts/ctx".into()).await.0, 404);
    let (status, _) = app
        .post_json("/v1/contexts/ctx/search", &json!({"query": "x"}))
        .await;
    assert_eq!(status, 404, "the context itself is gone");
    assert_eq!(app.get("/v1/items/ot-000000").await.0, 200);
    app.stop().await;
}

on_both_backends!(
    metadata_and_versions,
    deletes,
    upsert_counts_created_changed_unchanged,
    changed_content_resets_a_completed_item,
    bad_inputs_are_refused_and_change_nothing,
);

/// Upserts while the pipeline commits outcomes on SQLite: every one answers 200. (A
/// transaction that reads before it writes used to fail with "database is locked" when a
/// commit of the status writer came in between, and the API answered 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_beside_a_running_job_never_fail_on_sqlite() {
    let mock = support::mock_provider::MockProvider::start(support::script()).await;
    let app = support::app_with(Backend::Sqlite, &mock, |s| {
        s.embedding.max_inputs_per_request = 32;
        s.pipeline.status_max_batch = 1;
    })
    .await;
    app.seed_items("ctx", "it", 3_000).await;
    let job = support::context_job(&app).await;
    let mut refused = Vec::new();
    for round in 0..30 {
        let items: Vec<Value> = (0..300)
            .map(|i| json!({"id": format!("side-{i:04}"), "content": format!("round {round} item {i}")}))
            .collect();
        let (status, body) = app
            .post_json("/v1/contexts/side/items", &json!({ "items": items }))
            .await;
        if status != 200 {
            refused.push((round, status, body));
        }
    }
    assert!(
        refused.is_empty(),
        "upserts refused beside the job: {refused:?}"
    );
    app.wait_finished(&job, std::time::Duration::from_secs(120))
        .await;
    app.stop().await;
}
