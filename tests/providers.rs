//! Providers as users configure them, against the mock provider on PostgreSQL and SQLite:
//! reduced dimensions are asked for with OpenAI's `dimensions` parameter (and paid once), and
//! an answer of another dimension than configured is a configuration error: intake pauses after
//! that one request, no attempt is used, `/readyz` names the setting, and once it is fixed the
//! job completes.

mod support;

use embedq::config::DimensionsParameter;
use embedq::domain::ItemId;
use serde_json::Value;
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::{MockProvider, MockScript};
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

on_both_backends!(
    reduced_dimensions_are_asked_for,
    a_wrong_dimension_pauses_after_one_request,
);
