//! `/metrics` scraped and parsed after a job: the counters agree with the job's outcome and
//! with the provider's own audit. (Its own test binary: the metrics recorder is per process.)

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use support::mock_provider::{MockProvider, MockScript, MockTokenizer};
use support::{Backend, TEST_DIMENSION, TestApp};

fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_job() {
    let mock = MockProvider::start(MockScript {
        dimension: TEST_DIMENSION,
        storm_429: 3,
        storm_5xx: 2,
        // Not embedq's tokenizer: the provider's count must win.
        tokenizer: MockTokenizer::CharsOverFour,
        ..MockScript::default()
    })
    .await;
    let url = mock.base_url();
    let app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.embedding.base_url = url;
        s.embedding.price_per_million_tokens = 0.02;
    })
    .await;
    app.seed_items("ctx", "it", 500).await;
    let (status, _) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "too-long", "content": "word ".repeat(9000)}]}),
        )
        .await;
    assert_eq!(status, 200);
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(
        (done["completed"].as_i64(), done["failed"].as_i64()),
        (Some(500), Some(1)),
        "{done}"
    );

    // The job is final in SQL a moment before the status writer records its metrics.
    let mut text = String::new();
    for _ in 0..100 {
        text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(r#"embedq_jobs_total{state="FAILED"}"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = parse(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing from:\n{text}"))
    };
    let audit = mock.audit();
    assert_eq!(get(r#"embedq_items_total{outcome="completed"}"#), 500.0);
    assert_eq!(get(r#"embedq_items_total{outcome="failed"}"#), 1.0);
    assert_eq!(get(r#"embedq_jobs_total{state="FAILED"}"#), 1.0);
    assert_eq!(
        get(r#"embedq_api_requests_total{outcome="ok"}"#),
        audit.by_status[&200] as f64
    );
    assert_eq!(
        get(r#"embedq_api_requests_total{outcome="rate_limited"}"#),
        3.0
    );
    // Tokens as the provider counted them (its `usage`), not as embedq estimated them: in
    // the metrics, and billed to the job with their cost.
    assert_eq!(get("embedq_tokens_total"), audit.tokens_embedded as f64);
    assert_eq!(
        done["tokens"].as_u64(),
        Some(audit.tokens_embedded),
        "{done}"
    );
    let cost = done["cost"].as_f64().expect("cost");
    let expected = audit.tokens_embedded as f64 * 0.02 / 1_000_000.0;
    assert!((cost - expected).abs() < 1e-12, "{cost} against {expected}");
    assert_ne!(
        get("embedq_tokens_estimated_total"),
        audit.tokens_embedded as f64,
        "the mock counts characters / 4, embedq cl100k: the two must differ here"
    );
    let model = r#"gen_ai_operation_name="embeddings",gen_ai_token_type="input",gen_ai_request_model="text-embedding-3-small""#;
    assert_eq!(
        get(&format!("gen_ai_client_token_usage_sum{{{model}}}")),
        audit.tokens_embedded as f64
    );
    assert_eq!(
        get(&format!("gen_ai_client_token_usage_count{{{model}}}")),
        audit.by_status[&200] as f64
    );
    assert_eq!(
        get(r#"embedq_api_requests_total{outcome="transient"}"#),
        2.0
    );
    // A 429 sends its inputs again without using an attempt; each input of a 503 is retried
    // once, as the provider saw them.
    assert!(
        audit.inputs_by_status[&503] > 0,
        "{:?}",
        audit.inputs_by_status
    );
    assert_eq!(
        get("embedq_retries_total"),
        audit.inputs_by_status[&503] as f64,
        "every input of a failed request is retried once"
    );
    assert_eq!(
        get("embedq_api_request_duration_seconds_count"),
        audit.requests as f64
    );
    assert_eq!(get(r#"embedq_queue_depth{queue="dead_letters"}"#), 1.0);
    assert_eq!(get(r#"embedq_queue_depth{queue="retry"}"#), 0.0);
    assert!(m.contains_key(r#"embedq_rate_limit_budget{kind="requests"}"#));
    assert!(get("embedq_concurrency_limit") >= 1.0);
    assert_eq!(get("embedq_job_duration_seconds_count"), 1.0);
    app.stop().await;
}
