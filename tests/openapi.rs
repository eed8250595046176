//! The OpenAPI document (`GET /openapi.json`) and its page (`GET /docs`): both public, every
//! operation the document lists is served (router and document come from one route list),
//! and schemathesis, run against a daemon with
//! data in it, finds no 5xx and no answer that breaks the document.

mod support;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TEST_DIMENSION, TestApp};

const TOKEN: &str = "openapi-token-0123456789";

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// A client that sends the admin token with every request.
fn with_token() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Data for the run: context `doc-1` (the id the document gives as its example) with items
/// `doc-1`… embedded by a finished job, and one item that the provider refuses, so that a
/// dead letter exists. Returns the job's id.
async fn seed(app: &TestApp, mock: &MockProvider) -> String {
    let (status, body) = app
        .post_json(
            "/v1/contexts/doc-1/items",
            &json!({"items": [
                {"id": "doc-1", "content": "To change your login credentials, open Settings"},
                {"id": "doc-2", "content": "Invoices are sent on the first day of the month"},
                {"id": "doc-3", "content": "Support answers within one working day"},
                {"id": "doc-long", "content": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = app
        .create_job(json!({"type": "context", "context_id": "doc-1"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (done["completed"].as_i64(), done["failed"].as_i64()),
        (Some(3), Some(1)),
        "{done}"
    );
    let (status, letters) = app.get("/v1/dead-letters").await;
    assert_eq!(
        (status, letters["total"].as_u64()),
        (200, Some(1)),
        "{letters}"
    );
    // From here on the provider takes any input the daemon sends, so searches succeed.
    mock.set_script(MockScript {
        dimension: TEST_DIMENSION,
        ..MockScript::default()
    });
    job
}

/// Every documented operation is served: with the token, none answers the router's fallback
/// (404 "no such route") or 405.
async fn every_operation_is_served(app: &TestApp, doc: &Value, job: &str) {
    for (method, path) in documented(doc) {
        let url = app.url(
            &path
                .replace("{context_id}", "doc-1")
                .replace("{item_id}", "doc-1")
                .replace("{job_id}", job)
                .replace("{id}", "1-0"),
        );
        let request = app.http.request(method.parse().unwrap(), url);
        let request = if method == "POST" {
            request.json(&json!({}))
        } else {
            request
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let streaming = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        if streaming {
            // GET /v1/events never ends; its headers are the answer.
            assert_eq!(
                (method.as_str(), path.as_str(), status),
                ("GET", "/v1/events", 200)
            );
            drop(response);
            continue;
        }
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is documented but not routed: {body}"
        );
    }
    // Those POSTs paused intake and cancelled nothing that matters; let intake run again.
    let (status, _) = app.post_json("/v1/resume", &json!({})).await;
    assert_eq!(status, 202);
}

async fn public_and_private(app: &TestApp) {
    let anonymous = reqwest::Client::new();
    for path in ["/openapi.json", "/docs", "/healthz"] {
        let r = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} without a token");
    }
    for path in ["/metrics", "/v1/jobs", "/v1/events"] {
        let r = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
    }
    let docs = anonymous.get(app.url("/docs")).send().await.unwrap();
    assert!(
        docs.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        docs.headers()
    );
    let page = docs.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page:.80}");
    assert!(
        page.contains("fetch('/openapi.json')"),
        "/docs renders the document"
    );
    assert!(
        !page.contains("://"),
        "/docs must load nothing from elsewhere (no CDN)"
    );
}

fn schemathesis(base: &str) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/run.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(base)
        .arg(TOKEN)
        .output()
        .expect("run tests/schemathesis/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_the_api_and_schemathesis_finds_nothing() {
    let mock = MockProvider::start(MockScript {
        dimension: TEST_DIMENSION,
        max_tokens_per_input: 12,
        ..MockScript::default()
    })
    .await;
    let url = mock.base_url();
    let mut app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.embedding.base_url = url;
        s.secrets.admin_token = Some(embedq::config::Secret::new(TOKEN));
    })
    .await;
    app.http = with_token();

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": "The admin token, `EMBEDQ_ADMIN_TOKEN` (required when it is set)."})
    );
    // The router and the document are made from one route list (src/http/mod.rs, `api`), so
    // a route cannot be served undocumented; every documented operation must be served.
    assert!(documented(&doc).len() > 15, "{doc}");
    assert_eq!(
        doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["text/event-stream"]
    );
    assert_eq!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["text/plain"]
    );
    public_and_private(&app).await;

    let job = seed(&app, &mock).await;
    every_operation_is_served(&app, &doc, &job).await;

    let started = Instant::now();
    let base = app.base.clone();
    let (ok, output) = tokio::task::spawn_blocking(move || schemathesis(&base))
        .await
        .unwrap();
    println!("{output}");
    println!("schemathesis took {:.1} s", started.elapsed().as_secs_f64());
    assert!(ok, "schemathesis found problems (its output is above)");
    app.stop().await;
}
