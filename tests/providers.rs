//! Providers as users configure them, against the mock provider on PostgreSQL and SQLite:
//! reduced dimensions are asked for with OpenAI's `dimensions` parameter (and paid once); an
//! answer of another dimension than configured is a configuration error: intake pauses after
//! that one request, no attempt is used, `/readyz` names the setting, and once it is fixed the
//! job completes; Azure OpenAI's deployment URL, `api-version` and `api-key`; and input types
//! (prefixes and an `input_type` field) that embed documents and queries differently.

mod support;

use embedq::config::{DimensionsParameter, Provider, Secret};
use embedq::domain::ItemId;
use serde_json::Value;
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::{AzureMode, MockProvider, MockScript};
use support::{Backend, app_with, context_job, wait_until};

/// The mock's model answers 384 dimensions unless asked for fewer.
fn native_384() -> MockScript {
    MockScript {
        dimension: 384,
        ..MockScript::default()
    }
}

async fn point_dimensions(app: &support::TestApp, n: usize) -> Vec<usize> {
    let ids: Vec<ItemId> = (0..n)
        .map(|i| ItemId::parse(format!("it-{i:06}")).unwrap())
        .collect();
    let mut dims: Vec<usize> = app
        .vectors
        .get(&ids)
        .await
        .unwrap()
        .iter()
        .map(|p| p.vector.len())
        .collect();
    dims.dedup();
    dims
}

/// `embedding.dimension = 256` with text-embedding-3-small (default 1536): every request asks
/// for 256 dimensions, 200 items complete, each embedded (and paid for) once.
async fn reduced_dimensions_are_asked_for(backend: Backend) {
    let mock = MockProvider::start(native_384()).await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.model = "text-embedding-3-small".into();
        s.embedding.dimension = 256;
        s.embedding.dimensions_parameter = DimensionsParameter::Auto;
    })
    .await;
    app.seed_items("ctx", "it", 200).await;
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (&done["state"], &done["completed"]),
        (&Value::from("COMPLETED"), &Value::from(200)),
        "{done}"
    );
    let audit = mock.audit();
    assert_eq!(audit.inputs_embedded, 200, "inputs paid for");
    assert_eq!(point_dimensions(&app, 200).await, [256]);
    // The checker compares each point with the mock's 256-dimension vector of its text.
    app.check_invariants(&[&job], Some(&mock))
        .await
        .expect("256 dimensions", Duplicates::zero("nothing failed"));
    app.stop().await;
}

/// A provider that ignores `dimensions` (or a model that cannot shorten) answers 384 where 256
/// are configured: intake pauses after that one request, no item used an attempt, `/readyz`
/// says why and which setting to change. Restarted with the setting fixed, the job completes.
async fn a_wrong_dimension_pauses_after_one_request(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        ignores_dimensions: true,
        ..native_384()
    })
    .await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.model = "text-embedding-3-small".into();
        s.embedding.dimension = 256;
        s.planner.task_size = 16;
    })
    .await;
    app.seed_items("ctx", "it", 200).await;
    let job = context_job(&app).await;
    let reason = |ready: &Value| {
        ready["checks"]["pipeline"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            reason(&app.get("/readyz").await.1).contains("dimension")
        })
        .await,
        "the pipeline did not pause: {}",
        app.get("/readyz").await.1
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let why = reason(&ready);
    assert!(
        why.contains("384-dimension") && why.contains("embedding.dimension = 384"),
        "{why}"
    );
    // Nothing more is sent while paused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mock.audit().requests,
        1,
        "requests after the first wrong answer"
    );
    let attempts: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT COALESCE(MAX(attempts), 0) AS n FROM items")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    };
    assert_eq!(
        attempts, 0,
        "an item used an attempt on a configuration error"
    );
    let first_request_inputs = mock.audit().inputs_embedded;

    // The operator fixes the setting: this server answers its native 384 dimensions. (The
    // collection holds no point yet; a populated one would need a model migration.)
    let app = app
        .restart_with(|s| {
            s.embedding.dimension = 384;
            s.embedding.dimensions_parameter = DimensionsParameter::Omit;
        })
        .await;
    let settings_dimension = app.settings.embedding.dimension;
    assert_eq!(settings_dimension, 384);
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (&done["state"], &done["completed"]),
        (&Value::from("COMPLETED"), &Value::from(200)),
        "{done}"
    );
    assert_eq!(point_dimensions(&app, 200).await, [384]);
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        "wrong dimension, fixed",
        Duplicates::at_most(
            first_request_inputs,
            "the inputs of the one request answered with the wrong dimension",
        ),
    );
    app.stop().await;
}

/// `provider = "azure_openai"`: requests go to the deployment's URL with the API version, the
/// key in `api-key` (the mock refuses a bearer token, another deployment or version), and the
/// job completes with the deployment's vectors.
async fn the_azure_openai_profile(backend: Backend) {
    let key = "azure-key-0123456789";
    let mock = MockProvider::start(MockScript {
        dimension: support::TEST_DIMENSION,
        api_key: Some(key.into()),
        azure: Some(AzureMode {
            deployment: "emb-small".into(),
            api_version: "2024-10-21".into(),
        }),
        ..MockScript::default()
    })
    .await;
    let root = mock.base_url().trim_end_matches("/v1").to_owned();
    let app = app_with(backend, &mock, move |s| {
        s.embedding.provider = Provider::AzureOpenai;
        s.embedding.base_url = root;
        s.embedding.azure_deployment = "emb-small".into();
        s.embedding.azure_api_version = "2024-10-21".into();
        s.secrets.provider_api_key = Some(Secret::new(key));
    })
    .await;
    app.seed_items("ctx", "it", 50).await;
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["completed"], 50, "{done}");
    let audit = mock.audit();
    assert_eq!(
        audit.by_status.keys().copied().collect::<Vec<_>>(),
        [200],
        "every request was accepted: {:?}",
        audit.by_status
    );
    assert_eq!(
        audit.models.iter().cloned().collect::<Vec<_>>(),
        ["emb-small"],
        "the body named a model (Azure routes by deployment)"
    );
    app.check_invariants(&[&job], Some(&mock))
        .await
        .expect("azure", Duplicates::zero("nothing failed"));
    app.stop().await;
}

/// Input types: items go with the document prefix and `input_type: document`, a search query
/// with the query prefix and `input_type: query`; the dry run counts the prefix's tokens as
/// the provider does.
async fn documents_and_queries_are_embedded_differently(backend: Backend) {
    let mock = MockProvider::start(support::script()).await;
    let app = app_with(backend, &mock, |s| {
        let types = &mut s.embedding.input_types;
        types.document_prefix = "passage: ".into();
        types.query_prefix = "query: ".into();
        types.field = "input_type".into();
        types.document = "document".into();
        types.query = "query".into();
    })
    .await;
    app.seed_items("ctx", "it", 30).await;
    let scope = serde_json::json!({"scope": {"type": "context", "context_id": "ctx"}});
    let (_, estimate) = app.post_json("/v1/jobs?dry_run=true", &scope).await;
    let job = context_job(&app).await;
    app.wait_finished(&job, Duration::from_secs(30)).await;
    let audit = mock.audit();
    assert_eq!(
        estimate["tokens"].as_u64(),
        Some(audit.tokens_embedded),
        "the dry run and the provider count tokens differently: {estimate}"
    );
    assert!(
        (0..30).all(|i| audit.embedded.get(&format!("passage: passage {i} of ctx")) == Some(&1)),
        "items were not sent with the document prefix: {:?}",
        audit.embedded.keys().take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        audit.input_types.keys().cloned().collect::<Vec<_>>(),
        ["document"]
    );
    let point = app
        .vectors
        .get(&[ItemId::parse("it-000007").unwrap()])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        point.vector,
        MockProvider::vector_for("passage: passage 7 of ctx", support::TEST_DIMENSION),
        "the stored vector is not the document-prefixed text's"
    );

    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/search",
            &serde_json::json!({"query": "passage 7", "k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let audit = mock.audit();
    assert_eq!(audit.embedded.get("query: passage 7"), Some(&1));
    assert_eq!(audit.input_types.get("query"), Some(&1));
    app.stop().await;
}

on_both_backends!(
    reduced_dimensions_are_asked_for,
    a_wrong_dimension_pauses_after_one_request,
    the_azure_openai_profile,
    documents_and_queries_are_embedded_differently,
);
