//! Which vector store the test daemons use: the embedded qdrant-edge store in a directory of
//! the test's own, or — when `QDRANT_URL` names a Qdrant server (its gRPC address, e.g.
//! `http://127.0.0.1:6334`) — a collection of the test's own on that server, so that the whole
//! suite runs against the production store with `QDRANT_URL=… cargo test`.

use embedq::config::{Secret, Settings, VectorBackend, VectorSettings};
use embedq::vectors::VectorStore;
use std::path::Path;
use std::sync::Arc;

/// The Qdrant server the suite runs against, if any.
pub fn qdrant_url() -> Option<String> {
    std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty())
}

fn api_key() -> Option<Secret> {
    std::env::var("EMBEDQ_QDRANT_API_KEY").ok().map(Secret::new)
}

/// A test's vector settings: qdrant-edge under `dir`, or its own collection on `QDRANT_URL`.
pub fn settings(dir: &Path) -> VectorSettings {
    let mut vectors = Settings::defaults().vectors;
    vectors.path = dir.display().to_string();
    if let Some(url) = qdrant_url() {
        vectors.backend = VectorBackend::Qdrant;
        vectors.url = url;
        vectors.collection = format!("embedq_test_{}", uuid::Uuid::new_v4().simple());
    }
    vectors
}

/// The same settings as `EMBEDQ__VECTORS__…` variables, for a daemon run as a child process.
pub fn env(settings: &VectorSettings) -> Vec<(String, String)> {
    let backend = match settings.backend {
        VectorBackend::Edge => "edge",
        VectorBackend::Qdrant => "qdrant",
    };
    vec![
        ("EMBEDQ__VECTORS__BACKEND".into(), backend.into()),
        ("EMBEDQ__VECTORS__PATH".into(), settings.path.clone()),
        ("EMBEDQ__VECTORS__URL".into(), settings.url.clone()),
        (
            "EMBEDQ__VECTORS__COLLECTION".into(),
            settings.collection.clone(),
        ),
    ]
}

/// The store, opened as a checker would (once the daemon that owned edge files is gone).
pub async fn open(settings: &VectorSettings) -> Arc<dyn VectorStore> {
    embedq::vectors::open(settings, api_key().as_ref())
        .await
        .expect("open the test's vector store")
}

/// Drops the test's collection on the server (the edge store's files go with its directory).
pub async fn clean_up(settings: &VectorSettings) {
    if settings.backend != VectorBackend::Qdrant {
        return;
    }
    if let Ok(client) = qdrant_client::Qdrant::from_url(&settings.url)
        .api_key(api_key().map(|k| k.expose().to_owned()))
        .skip_compatibility_check()
        .build()
    {
        let _ = client.delete_collection(&settings.collection).await;
    }
}
