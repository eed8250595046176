//! The pipeline against a real Qdrant server (ignored unless asked for, with its address):
//!
//! ```sh
//! QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored
//! ```
//!
//! A Qdrant that refuses connections for 10 s mid-job, and one that stalls them for 10 s: the
//! work waits, holding the vectors it has paid for, and no attempt is used; a collection that
//! exists with another dimension stops start-up with a clear error. (The rest of the suite runs
//! against the server too when `QDRANT_URL` is set: see `tests/support/vectors.rs`.)

mod support;

use embedq::config::VectorBackend;
use std::time::{Duration, Instant};
use support::invariants::Duplicates;
use support::mock_provider::MockProvider;
use support::proxy::Proxy;
use support::{Backend, TestApp, context_job, script_with_latency, wait_until};

fn qdrant() -> String {
    support::vectors::qdrant_url()
        .expect("QDRANT_URL must name the Qdrant server's gRPC address, e.g. http://127.0.0.1:6334")
}

/// An app whose daemon reaches Qdrant through `proxy`; the app's own checks reach it directly.
async fn app_behind(proxy: &Proxy, mock: &MockProvider, backend: Backend) -> TestApp {
    let url = mock.base_url();
    let through = proxy.rewrite(&qdrant());
    let direct = qdrant();
    let mut app = TestApp::spawn_with(backend, move |s| {
        s.embedding.base_url = url;
        s.vectors.backend = VectorBackend::Qdrant;
        s.vectors.url = through;
        s.vectors.timeout = Duration::from_secs(2);
        s.planner.task_size = 32;
        s.queue.task_credits = 8;
    })
    .await;
    let mut direct_settings = app.settings.vectors.clone();
    direct_settings.url = direct;
    app.vectors = support::vectors::open(&direct_settings).await;
    app
}

async fn an_outage(backend: Backend, stall: bool) {
    let proxy = Proxy::for_url(&qdrant()).await;
    let mock = MockProvider::start(script_with_latency(50)).await;
    let app = app_behind(&proxy, &mock, backend).await;
    app.seed_items("ctx", "it", 2_000).await;
    let job = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            app.job(&job).await["done"].as_i64().unwrap_or(0) >= 300
        })
        .await
    );
    if stall {
        proxy.stall();
    } else {
        proxy.down();
    }
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = app.job(&job).await;
    proxy.restore();
    let done = app.wait_finished(&job, Duration::from_secs(120)).await;
    let what = if stall { "stalled" } else { "refused" };
    println!(
        "[{backend:?} Qdrant {what} 10 s] done {} during the outage; finished {:.1} s after it began",
        during["done"],
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 2_000, "{done}");
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert_eq!(
        report.max_attempts, 1,
        "a vector store outage must not use attempts"
    );
    report.expect(
        &format!("{backend:?} Qdrant {what} 10 s mid-job"),
        Duplicates::zero(
            "the vectors embedded before the outage are held and written once it ends",
        ),
    );
    app.stop().await;
}

async fn qdrant_refuses_for_10_s_mid_job(backend: Backend) {
    an_outage(backend, false).await
}

async fn qdrant_stalls_for_10_s_mid_job(backend: Backend) {
    an_outage(backend, true).await
}

mod refused {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored"]
    async fn postgres() {
        super::qdrant_refuses_for_10_s_mid_job(super::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored"]
    async fn sqlite() {
        super::qdrant_refuses_for_10_s_mid_job(super::Backend::Sqlite).await
    }
}

mod stalled {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored"]
    async fn postgres() {
        super::qdrant_stalls_for_10_s_mid_job(super::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored"]
    async fn sqlite() {
        super::qdrant_stalls_for_10_s_mid_job(super::Backend::Sqlite).await
    }
}

/// A collection that exists with another dimension stops start-up, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test qdrant_server -- --ignored"]
async fn a_collection_of_another_dimension_stops_start_up() {
    let db = support::TestDatabase::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::test_settings(&db.url, dir.path());
    settings.vectors.backend = VectorBackend::Qdrant;
    settings.vectors.url = qdrant();
    settings.vectors.collection = format!("embedq_test_{}", uuid::Uuid::new_v4().simple());
    let other = {
        let store = support::vectors::open(&settings.vectors).await;
        store
            .ensure_collection(support::TEST_DIMENSION * 2)
            .await
            .unwrap();
        settings.vectors.clone()
    };
    let refused = embedq::startup::Application::build(settings.clone()).await;
    let err = refused
        .err()
        .expect("a collection of another dimension must stop start-up");
    let text = err.to_string();
    assert!(
        text.contains(&settings.vectors.collection)
            && text.contains(&format!("dimension {}", support::TEST_DIMENSION * 2))
            && text.contains(&format!("produces {}", support::TEST_DIMENSION)),
        "{text}"
    );
    println!("start-up refused: {text}");
    support::vectors::clean_up(&other).await;
}
