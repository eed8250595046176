//! The embedded vector store (qdrant-edge) on real files: creating the collection, upserts that
//! overwrite and are on disk when they return, context-filtered search, delete, data surviving
//! a reopen, a dimension mismatch, bad input refused without a panic, and concurrent writes.

use embedq::config::{Settings, VectorSettings};
use embedq::domain::{ContextId, ItemId};
use embedq::vectors::{EdgeVectorStore, VectorError, VectorPoint, VectorStore};
use std::collections::HashSet;
use std::path::Path;

const DIM: usize = 8;

fn settings(dir: &tempfile::TempDir) -> VectorSettings {
    let mut vectors = Settings::defaults().vectors;
    vectors.path = dir.path().to_string_lossy().into_owned();
    vectors
}

/// A distinct unit vector per seed: the store uses cosine distance, so it keeps vectors
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

fn point(i: usize, seed: usize, hash: &str) -> VectorPoint {
    VectorPoint {
        item_id: item(i),
        context_id: context_of(i),
        content_hash: hash.into(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_round_trip_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&dir);
    let store = EdgeVectorStore::open(&settings).unwrap();
    assert_eq!(store.backend(), "qdrant-edge");

    // Creates the shard, and is idempotent.
    store.ensure_collection(DIM).await.unwrap();
    store.ensure_collection(DIM).await.unwrap();
    assert!(dir.path().join(&settings.collection).is_dir());

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
    assert_eq!(got[0].content_hash, "v2");
    assert_eq!(got[0].model, "test-model");
    assert_close(&got[0].vector, &unit_vector(1_000));

    // Durable on return: a copy of the files taken now, as a crash would leave them (the
    // store is still open, so nothing was flushed on drop), holds every write.
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(
        &dir.path().join(&settings.collection),
        &snapshot.path().join(&settings.collection),
    );
    let mut snapshot_settings = settings.clone();
    snapshot_settings.path = snapshot.path().to_string_lossy().into_owned();
    let copy = EdgeVectorStore::open(&snapshot_settings).unwrap();
    assert_eq!(copy.count().await.unwrap(), 100);
    let got = copy.get(&[item(3)]).await.unwrap();
    assert_eq!(got[0].content_hash, "v2");
    drop(copy);

    // `get` leaves out missing items.
    let missing = ItemId::parse("never-written").unwrap();
    let got = store.get(&[item(4), missing, item(5)]).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|p| p.item_id.as_str()).collect();
    assert_eq!(ids, ["item-004", "item-005"]);

    // Search stays inside one context, best first; the exact vector scores ~1.
    let ctx_a = ContextId::parse("ctx-a").unwrap();
    let hits = store.search(&ctx_a, unit_vector(10), 10).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].item_id, "item-010");
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4,
        "score {}",
        hits[0].score
    );
    assert!(hits.iter().all(|h| h.context_id == "ctx-a"));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let all_a = store.search(&ctx_a, unit_vector(10), 1_000).await.unwrap();
    assert_eq!(all_a.len(), 50);
    let ctx_b = ContextId::parse("ctx-b").unwrap();
    let hits = store.search(&ctx_b, unit_vector(10), 5).await.unwrap();
    assert!(hits.iter().all(|h| h.context_id == "ctx-b"));
    assert!(hits.iter().all(|h| h.item_id != "item-010"));
    let unknown = ContextId::parse("nobody").unwrap();
    assert!(
        store
            .search(&unknown, unit_vector(1), 5)
            .await
            .unwrap()
            .is_empty()
    );

    // Delete; absent items are ignored.
    store
        .delete(&[item(10), item(11), ItemId::parse("never-written").unwrap()])
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(store.get(&[item(10), item(11)]).await.unwrap().is_empty());
    let hits = store.search(&ctx_a, unit_vector(10), 3).await.unwrap();
    assert!(hits.iter().all(|h| h.item_id != "item-010"));

    // Reopen from the same directory: everything persisted.
    drop(store);
    let store = EdgeVectorStore::open(&settings).unwrap();
    store.ensure_collection(DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    let got = store.get(&[item(3), item(10)]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_hash, "v2");
    assert_close(&got[0].vector, &unit_vector(1_000));
    let hits = store.search(&ctx_a, unit_vector(20), 1).await.unwrap();
    assert_eq!(hits[0].item_id, "item-020");

    // Another dimension is a start-up error.
    match store.ensure_collection(DIM * 2).await {
        Err(VectorError::DimensionMismatch {
            collection,
            expected,
            found,
        }) => {
            assert_eq!(collection, settings.collection);
            assert_eq!((expected, found), (DIM * 2, DIM));
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeVectorStore::open(&settings(&dir)).unwrap();

    // Nothing exists before ensure_collection.
    assert!(matches!(store.count().await, Err(VectorError::Backend(_))));
    assert!(matches!(
        store.upsert(vec![point(1, 1, "h")]).await,
        Err(VectorError::Backend(_))
    ));
    assert!(store.ensure_collection(0).await.is_err());

    store.ensure_collection(DIM).await.unwrap();
    let mut short = point(1, 1, "h");
    short.vector.truncate(3);
    assert!(matches!(
        store.upsert(vec![point(0, 0, "h"), short]).await,
        Err(VectorError::Backend(_))
    ));
    let ctx = ContextId::parse("ctx-a").unwrap();
    assert!(matches!(
        store.search(&ctx, vec![1.0; DIM + 1], 5).await,
        Err(VectorError::Backend(_))
    ));
    // A refused batch writes nothing; the store still works.
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(
        store
            .search(&ctx, unit_vector(0), 0)
            .await
            .unwrap()
            .is_empty()
    );
    store.upsert(vec![point(0, 0, "h")]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EdgeVectorStore::open(&settings(&dir)).unwrap());
    store.ensure_collection(DIM).await.unwrap();

    let mut tasks = Vec::new();
    for batch in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let points = (batch * 10..batch * 10 + 10)
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
    assert_eq!(store.count().await.unwrap(), 80);
    let ids: Vec<ItemId> = (0..80).map(item).collect();
    let got: HashSet<String> = store
        .get(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.item_id.as_str().to_owned())
        .collect();
    assert_eq!(got.len(), 80);
}
