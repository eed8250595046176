//! Bulk upsert of items and item lookup: counts, state transitions, and every bad input
//! refused with a reason and no change.

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
    assert_eq!(body, json!({"created": 2, "changed": 0, "unchanged": 0}));

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
    assert_eq!(body, json!({"created": 1, "changed": 1, "unchanged": 1}));

    let (_, a) = app.get("/v1/items/a").await;
    assert_eq!(a["status"], "COMPLETED");
    assert_eq!(a["attempts"], 1);
    assert_eq!(a["context_id"], "ctx-1");
    let (_, b) = app.get("/v1/items/b").await;
    assert_eq!(b["status"], "PENDING");
    assert_eq!(b["content_hash"], sha256_hex("beta, edited"));
    app.stop().await;
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
            "must not be empty",
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

on_both_backends!(
    upsert_counts_created_changed_unchanged,
    changed_content_resets_a_completed_item,
    bad_inputs_are_refused_and_change_nothing,
);
