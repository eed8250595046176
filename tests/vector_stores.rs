//! One contract, two vector stores: the embedded qdrant-edge store on real files (always) and
//! a Qdrant server (when one is given). Creating the collection, upserts that overwrite,
//! context-filtered search best first, `get` leaving out missing items, delete, the data
//! surviving a reopen, a dimension mismatch at start-up, points of the wrong dimension refused
//! for good without a panic, and concurrent writes. The edge store is also checked to be on
//! disk when an upsert returns.
//!
//! The server run is ignored unless asked for: `QDRANT_URL=http://127.0.0.1:6334 cargo test
//! --test vector_stores -- --ignored` (the API key, if any, from `EMBEDQ_QDRANT_API_KEY`). Each
//! run uses its own collection and drops it at the end.

use embedq::config::{Secret, Settings, VectorBackend, VectorSettings};
use embedq::domain::{ContentHash, ContextId, ItemId};
use embedq::vectors::{EdgeVectorStore, QdrantServerStore, VectorError, VectorPoint, VectorStore};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

const DIM: usize = 8;

/// A distinct unit vector per seed: the stores use cosine distance, so they keep vectors
/// normalised and a unit vector reads back as written.
fn unit_vector(seed: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..DIM)
        .map(|j| ((seed * 7 + j * 3) as f32 * 0.37).sin() + 0.1 * j as f32)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

fn item(i: usize) -> ItemId {
    ItemId::parse(format!("item-{i:03}")).unwrap()
}

fn context_of(i: usize) -> ContextId {
    ContextId::parse(["ctx-a", "ctx-b"][i % 2]).unwrap()
}

fn hash(text: &str) -> ContentHash {
    ContentHash::of(text)
}

fn point(i: usize, seed: usize, version: &str) -> VectorPoint {
    VectorPoint {
        item_id: item(i),
        context_id: context_of(i),
        content_hash: hash(version),
        model: "test-model".into(),
        vector: unit_vector(seed),
    }
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 1e-5, "{actual:?} != {expected:?}");
    }
}

type Opened = Pin<Box<dyn Future<Output = Arc<dyn VectorStore>>>>;

/// The contract every store keeps. `reopen` opens the same collection anew (a new process's
/// view of it).
async fn contract(store: Arc<dyn VectorStore>, reopen: impl Fn() -> Opened) {
    // Nothing is written before the collection exists.
    assert!(store.ensure_collection(0).await.is_err(), "dimension 0");
    // Creates the collection, and is idempotent.
    store.ensure_collection(DIM).await.unwrap();
    store.ensure_collection(DIM).await.unwrap();

    // 100 points over two contexts.
    store
        .upsert((0..100).map(|i| point(i, i, "v1")).collect())
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 100);

    // Writing an item again overwrites its point.
    store.upsert(vec![point(3, 1_000, "v2")]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 100);
    let got = store.get(&[item(3)]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item_id, item(3));
    assert_eq!(got[0].context_id, context_of(3));
    assert_eq!(got[0].content_hash, hash("v2"));
    assert_eq!(got[0].model, "test-model");
    assert_close(&got[0].vector, &unit_vector(1_000));

    // `get` leaves out missing items.
    let missing = ItemId::parse("never-written").unwrap();
    let got = store
        .get(&[item(4), missing.clone(), item(5)])
        .await
        .unwrap();
    let mut ids: Vec<&str> = got.iter().map(|p| p.item_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["item-004", "item-005"]);

    // Search stays inside one context, best first; the exact vector scores ~1.
    let ctx_a = ContextId::parse("ctx-a").unwrap();
    let hits = store.search(&ctx_a, unit_vector(10), 10).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].item_id, item(10));
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4,
        "score {}",
        hits[0].score
    );
    assert!(hits.iter().all(|h| h.context_id == ctx_a));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let all_a = store.search(&ctx_a, unit_vector(10), 1_000).await.unwrap();
    assert_eq!(all_a.len(), 50);
    let ctx_b = ContextId::parse("ctx-b").unwrap();
    let hits = store.search(&ctx_b, unit_vector(10), 5).await.unwrap();
    assert!(
        hits.iter()
            .all(|h| h.context_id == ctx_b && h.item_id != item(10))
    );
    let unknown = ContextId::parse("nobody").unwrap();
    assert!(
        store
            .search(&unknown, unit_vector(1), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .search(&ctx_a, unit_vector(0), 0)
            .await
            .unwrap()
            .is_empty()
    );

    // Delete; absent items are ignored.
    store.delete(&[item(10), item(11), missing]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(store.get(&[item(10), item(11)]).await.unwrap().is_empty());
    let hits = store.search(&ctx_a, unit_vector(10), 3).await.unwrap();
    assert!(hits.iter().all(|h| h.item_id != item(10)));

    // A point of the wrong dimension is refused for good, and a refused write writes nothing.
    let mut short = point(200, 1, "h");
    short.vector.truncate(3);
    match store.upsert(vec![point(201, 0, "h"), short]).await {
        Err(e @ VectorError::Rejected(_)) => assert!(!e.is_transient()),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(matches!(
        store.search(&ctx_a, vec![1.0; DIM + 1], 5).await,
        Err(VectorError::Rejected(_))
    ));

    // Concurrent writes and reads.
    let mut tasks = Vec::new();
    for batch in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let points = (300 + batch * 10..300 + batch * 10 + 10)
                .map(|i| point(i, i, "c"))
                .collect();
            store.upsert(points).await.unwrap();
            let ctx = ContextId::parse("ctx-a").unwrap();
            store.search(&ctx, unit_vector(batch), 5).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 178);
    let ids: Vec<ItemId> = (300..380).map(item).collect();
    let got: HashSet<ItemId> = store
        .get(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.item_id)
        .collect();
    assert_eq!(got.len(), 80);

    // Reopened: everything persisted.
    drop(store);
    let store = reopen().await;
    store.ensure_collection(DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 178);
    let got = store.get(&[item(3), item(10)]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_hash, hash("v2"));
    assert_close(&got[0].vector, &unit_vector(1_000));
    let hits = store.search(&ctx_a, unit_vector(20), 1).await.unwrap();
    assert_eq!(hits[0].item_id, item(20));

    // Another dimension is a start-up error.
    match store.ensure_collection(DIM * 2).await {
        Err(VectorError::DimensionMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (DIM * 2, DIM)),
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
}

fn edge_settings(dir: &Path) -> VectorSettings {
    let mut vectors = Settings::defaults().vectors;
    vectors.path = dir.to_string_lossy().into_owned();
    vectors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let settings = edge_settings(dir.path());
    let store = EdgeVectorStore::open(&settings).unwrap();
    assert_eq!(store.backend(), "qdrant-edge");
    assert!(
        matches!(store.count().await, Err(VectorError::Backend(_))),
        "no collection yet"
    );
    let reopen_settings = settings.clone();
    contract(Arc::new(store), move || {
        let settings = reopen_settings.clone();
        Box::pin(async move {
            Arc::new(EdgeVectorStore::open(&settings).unwrap()) as Arc<dyn VectorStore>
        })
    })
    .await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Durable on return: a copy of the files taken right after an upsert, as a crash would leave
/// them (the store is still open, so nothing was flushed on drop), holds every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_upsert_is_on_disk_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let settings = edge_settings(dir.path());
    let store = EdgeVectorStore::open(&settings).unwrap();
    store.ensure_collection(DIM).await.unwrap();
    store
        .upsert((0..50).map(|i| point(i, i, "v1")).collect())
        .await
        .unwrap();
    store.upsert(vec![point(3, 1_000, "v2")]).await.unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(
        &dir.path().join(&settings.collection),
        &snapshot.path().join(&settings.collection),
    );
    let copy = EdgeVectorStore::open(&edge_settings(snapshot.path())).unwrap();
    assert_eq!(copy.count().await.unwrap(), 50);
    assert_eq!(
        copy.get(&[item(3)]).await.unwrap()[0].content_hash,
        hash("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Qdrant server: QDRANT_URL=http://127.0.0.1:6334 cargo test --test vector_stores -- --ignored"]
async fn the_qdrant_server_store_keeps_the_contract() {
    let url = std::env::var("QDRANT_URL").expect(
        "QDRANT_URL must name the Qdrant server's gRPC address, e.g. http://127.0.0.1:6334",
    );
    let key = std::env::var("EMBEDQ_QDRANT_API_KEY").ok().map(Secret::new);
    let mut settings = Settings::defaults().vectors;
    settings.backend = VectorBackend::Qdrant;
    settings.url = url.clone();
    settings.collection = format!("embedq_test_{}", uuid::Uuid::new_v4().simple());

    let store = QdrantServerStore::connect(&settings, key.as_ref())
        .await
        .unwrap();
    assert_eq!(store.backend(), "qdrant");
    let (reopen_settings, reopen_key) = (settings.clone(), key.clone());
    contract(Arc::new(store), move || {
        let (settings, key) = (reopen_settings.clone(), reopen_key.clone());
        Box::pin(async move {
            Arc::new(
                QdrantServerStore::connect(&settings, key.as_ref())
                    .await
                    .unwrap(),
            ) as Arc<dyn VectorStore>
        })
    })
    .await;

    let admin = qdrant_client::Qdrant::from_url(&url)
        .api_key(key.as_ref().map(|k| k.expose().to_owned()))
        .skip_compatibility_check()
        .build()
        .unwrap();
    admin.delete_collection(&settings.collection).await.unwrap();
}
