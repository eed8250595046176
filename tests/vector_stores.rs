//! One contract, two vector stores: the embedded qdrant-edge store on real files (always) and
//! a Qdrant server (when one is given). Creating the collection, upserts that overwrite, the
//! version gate (a stale upsert, metadata update or delete leaves a newer point alone),
//! metadata in the payload and search filtered on it, context-filtered search best first,
//! `get` leaving out missing items, paging through every point, the provenance in each
//! point, the data surviving a reopen, a dimension mismatch at start-up, points of the wrong
//! dimension refused for good without a panic, concurrent writes, and dropping the
//! collection. The edge store is also checked to be on disk when an upsert returns.
//!
//! The server run is ignored unless asked for: `QDRANT_URL=http://127.0.0.1:6334 cargo test
//! --test vector_stores -- --ignored` (the API key, if any, from `EMBEDQ_QDRANT_API_KEY`). Each
//! run uses its own collection and drops it at the end.

use embedq::config::{Secret, Settings, VectorBackend, VectorSettings};
use embedq::domain::{ContentHash, ContextId, ItemId, Metadata, MetadataFilter};
use embedq::vectors::{
    EdgeVectorStore, MetadataUpdate, QdrantServerStore, VectorError, VectorPoint, VectorStore,
};
use serde_json::json;
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

/// Item `i`'s point at version 1, its vector from `seed`, its hash from `content`.
fn point(i: usize, seed: usize, content: &str) -> VectorPoint {
    at_version(i, seed, content, 1)
}

fn at_version(i: usize, seed: usize, content: &str, version: i64) -> VectorPoint {
    VectorPoint {
        item_id: item(i),
        context_id: context_of(i),
        content_hash: hash(content),
        model: "test-model".into(),
        generation: 1,
        version,
        metadata: Metadata::default(),
        vector: unit_vector(seed),
    }
}

fn none() -> MetadataFilter {
    MetadataFilter::default()
}

fn filter(value: serde_json::Value) -> MetadataFilter {
    MetadataFilter::parse(value).unwrap()
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

    // Writing an item again at a higher version overwrites its point.
    store
        .upsert(vec![at_version(3, 1_000, "v2", 2)])
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 100);
    let got = store.get(&[item(3)]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item_id, item(3));
    assert_eq!(got[0].context_id, context_of(3));
    assert_eq!(got[0].content_hash, hash("v2"));
    assert_eq!(got[0].model, "test-model");
    assert_eq!((got[0].generation, got[0].version), (1, 2));
    assert_close(&got[0].vector, &unit_vector(1_000));

    // The version gate: a write of a lower version is dropped (in a batch with one that
    // applies), the same version applies again.
    store
        .upsert(vec![
            at_version(3, 2_000, "stale", 1),
            at_version(4, 2_001, "v2", 2),
        ])
        .await
        .unwrap();
    let got = store.get(&[item(3), item(4)]).await.unwrap();
    let by_id = |id: ItemId| got.iter().find(|p| p.item_id == id).unwrap().clone();
    assert_eq!(by_id(item(3)).content_hash, hash("v2"), "a stale write won");
    assert_close(&by_id(item(3)).vector, &unit_vector(1_000));
    assert_eq!(by_id(item(4)).content_hash, hash("v2"));
    store
        .upsert(vec![at_version(4, 2_002, "v2-again", 2)])
        .await
        .unwrap();
    assert_eq!(
        store.get(&[item(4)]).await.unwrap()[0].content_hash,
        hash("v2-again")
    );

    // Metadata: updated in place for a lower version only, vector untouched; then filterable.
    let acme = Metadata::parse(json!({"tenant": "acme", "year": 2025}), 1_000).unwrap();
    let old = Metadata::parse(json!({"tenant": "old"}), 1_000).unwrap();
    store
        .set_metadata(vec![
            MetadataUpdate {
                item_id: item(4),
                version: 3,
                metadata: acme.clone(),
            },
            MetadataUpdate {
                item_id: ItemId::parse("never-written").unwrap(),
                version: 3,
                metadata: acme.clone(),
            },
        ])
        .await
        .unwrap();
    store
        .set_metadata(vec![MetadataUpdate {
            item_id: item(4),
            version: 2,
            metadata: old,
        }])
        .await
        .unwrap();
    let got = store.get(&[item(4)]).await.unwrap();
    assert_eq!((got[0].version, &got[0].metadata), (3, &acme));
    // The same version again repairs a payload that drifted from it.
    let mut drifted = got[0].clone();
    drifted.metadata = Metadata::default();
    store.upsert(vec![drifted]).await.unwrap();
    store
        .set_metadata(vec![MetadataUpdate {
            item_id: item(4),
            version: 3,
            metadata: acme.clone(),
        }])
        .await
        .unwrap();
    let got = store.get(&[item(4)]).await.unwrap();
    assert_eq!((got[0].version, &got[0].metadata), (3, &acme));
    assert_close(&got[0].vector, &unit_vector(2_002));
    assert_eq!(store.count().await.unwrap(), 100, "an update made no point");

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
    let hits = store
        .search(&ctx_a, unit_vector(10), 10, &none())
        .await
        .unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].item_id, item(10));
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4,
        "score {}",
        hits[0].score
    );
    assert!(hits.iter().all(|h| h.context_id == ctx_a));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let all_a = store
        .search(&ctx_a, unit_vector(10), 1_000, &none())
        .await
        .unwrap();
    assert_eq!(all_a.len(), 50);
    let ctx_b = ContextId::parse("ctx-b").unwrap();
    let hits = store
        .search(&ctx_b, unit_vector(10), 5, &none())
        .await
        .unwrap();
    assert!(
        hits.iter()
            .all(|h| h.context_id == ctx_b && h.item_id != item(10))
    );
    let unknown = ContextId::parse("nobody").unwrap();
    assert!(
        store
            .search(&unknown, unit_vector(1), 5, &none())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .search(&ctx_a, unit_vector(0), 0, &none())
            .await
            .unwrap()
            .is_empty()
    );

    // Search filtered on metadata: a value, one of several, every field, none matching.
    for (f, expected) in [
        (json!({"tenant": "acme"}), vec![item(4)]),
        (
            json!({"tenant": ["x", "acme"], "year": 2025}),
            vec![item(4)],
        ),
        (json!({"tenant": "acme", "year": 2024}), vec![]),
        (json!({"tenant": "nobody"}), vec![]),
    ] {
        let hits = store
            .search(&ctx_a, unit_vector(4), 10, &filter(f.clone()))
            .await
            .unwrap();
        let ids: Vec<ItemId> = hits.into_iter().map(|h| h.item_id).collect();
        assert_eq!(ids, expected, "filter {f}");
    }
    // The filter holds within the context: item 4 is in ctx-a only.
    assert!(
        store
            .search(
                &ctx_b,
                unit_vector(4),
                10,
                &filter(json!({"tenant": "acme"}))
            )
            .await
            .unwrap()
            .is_empty()
    );

    // Delete up to a version: a point of a higher version stays; absent items are ignored.
    store
        .delete(&[(item(10), 1), (item(11), 0), (missing, 9)])
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 99);
    assert_eq!(
        store.get(&[item(11)]).await.unwrap().len(),
        1,
        "a newer point went"
    );
    store.delete(&[(item(11), 5)]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(store.get(&[item(10), item(11)]).await.unwrap().is_empty());
    let hits = store
        .search(&ctx_a, unit_vector(10), 3, &none())
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.item_id != item(10)));

    // Paging through every point, in pages of 7: each once, with its provenance.
    let mut seen = HashSet::new();
    let mut from = None;
    loop {
        let page = store.scroll(from, 7).await.unwrap();
        assert!(page.points.len() <= 7);
        for p in &page.points {
            assert!(seen.insert(p.item_id.clone()), "{} twice", p.item_id);
            assert_eq!(p.point_id, embedq::vectors::point_id(&p.item_id));
            assert_eq!(
                (p.dimension, p.generation, p.model.as_str()),
                (DIM, 1, "test-model")
            );
        }
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 98);
    assert!(!seen.contains(&item(10)) && seen.contains(&item(3)));

    // A point of the wrong dimension is refused for good, and a refused write writes nothing.
    let mut short = point(200, 1, "h");
    short.vector.truncate(3);
    match store.upsert(vec![point(201, 0, "h"), short]).await {
        Err(e @ VectorError::Rejected(_)) => assert!(!e.is_transient()),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(matches!(
        store.search(&ctx_a, vec![1.0; DIM + 1], 5, &none()).await,
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
            store
                .search(&ctx, unit_vector(batch), 5, &MetadataFilter::default())
                .await
                .unwrap();
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
    let hits = store
        .search(&ctx_a, unit_vector(20), 1, &none())
        .await
        .unwrap();
    assert_eq!(hits[0].item_id, item(20));
    assert_eq!(store.get(&[item(4)]).await.unwrap()[0].metadata, acme);

    // Another dimension is a start-up error.
    match store.ensure_collection(DIM * 2).await {
        Err(VectorError::DimensionMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (DIM * 2, DIM)),
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }

    // Dropped: gone, twice is harmless, and it can be made again, empty.
    store.drop_collection().await.unwrap();
    store.drop_collection().await.unwrap();
    let store = reopen().await;
    store.ensure_collection(DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    store.drop_collection().await.unwrap();
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
    store
        .upsert(vec![at_version(3, 1_000, "v2", 2)])
        .await
        .unwrap();
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
}
