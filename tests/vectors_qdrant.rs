//! The server vector store against a real Qdrant, only when `QDRANT_URL` is set (for example
//! `http://127.0.0.1:6334`; the API key, if any, from `EMBEDQ_QDRANT_API_KEY`). Without it the
//! test says it was skipped and passes. Each run uses its own collection and drops it at the end.

use embedq::config::{Secret, Settings, VectorSettings};
use embedq::domain::{ContextId, ItemId};
use embedq::vectors::{QdrantServerStore, VectorError, VectorPoint, VectorStore};

const DIM: usize = 8;

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

async fn scenario(settings: &VectorSettings, key: Option<&Secret>) {
    let store = QdrantServerStore::connect(settings, key).await.unwrap();
    assert_eq!(store.backend(), "qdrant");
    store.ensure_collection(DIM).await.unwrap();
    store.ensure_collection(DIM).await.unwrap();

    store
        .upsert((0..100).map(|i| point(i, i, "v1")).collect())
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 100);

    store.upsert(vec![point(3, 1_000, "v2")]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 100);
    let got = store.get(&[item(3)]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].context_id, context_of(3));
    assert_eq!(got[0].content_hash, "v2");
    assert_close(&got[0].vector, &unit_vector(1_000));

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

    store.delete(&[item(10), item(11)]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    assert!(store.get(&[item(10), item(11)]).await.unwrap().is_empty());

    // A new client sees the same data.
    drop(store);
    let store = QdrantServerStore::connect(settings, key).await.unwrap();
    store.ensure_collection(DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 98);
    let got = store.get(&[item(3)]).await.unwrap();
    assert_close(&got[0].vector, &unit_vector(1_000));

    match store.ensure_collection(DIM * 2).await {
        Err(VectorError::DimensionMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (DIM * 2, DIM)),
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_store_round_trip() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        println!("skipped: QDRANT_URL is not set (e.g. QDRANT_URL=http://127.0.0.1:6334)");
        return;
    };
    let key = std::env::var("EMBEDQ_QDRANT_API_KEY").ok().map(Secret::new);
    let mut settings = Settings::defaults().vectors;
    settings.backend = "qdrant".into();
    settings.url = url.clone();
    settings.collection = format!("embedq_test_{}", uuid::Uuid::new_v4().simple());

    scenario(&settings, key.as_ref()).await;

    let admin = qdrant_client::Qdrant::from_url(&url)
        .api_key(key.as_ref().map(|k| k.expose().to_owned()))
        .skip_compatibility_check()
        .build()
        .unwrap();
    admin.delete_collection(&settings.collection).await.unwrap();
}
