//! The whole life of an item against the running daemon, on PostgreSQL and SQLite (and on a
//! Qdrant server when `QDRANT_URL` is set): a delete racing its own embedding, a large job
//! whose scope is deleted from, changed and re-labelled while it runs, metadata that reaches
//! the payload and the search filter without an embedding call, and what the API could not
//! apply to the vector store being applied later by the reconciler.

mod support;

use embedq::domain::{ContextId, ItemContent, ItemId, Metadata};
use embedq::store::NewItem;
use serde_json::{Value, json};
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::MockProvider;
use support::{Backend, TestApp, app_with, context_job, script, script_with_latency, wait_until};

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app.http.delete(app.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn point_of(app: &TestApp, id: &str) -> Option<embedq::vectors::VectorPoint> {
    let id = ItemId::parse(id).unwrap();
    app.vectors.get(&[id]).await.unwrap().into_iter().next()
}

/// An item deleted while the provider holds its embedding: when the answer comes, the vector
/// is dropped (not written back), the job counts the item DELETED, and no point is left.
async fn a_delete_during_its_embedding_leaves_no_point(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 20).await;
    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "doomed", "content": "the doomed passage"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    mock.hold_inputs_containing("doomed");
    let job = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(20), || async { mock.held() >= 1 }).await,
        "the provider never received the doomed item"
    );
    let (status, body) = delete(&app, "/v1/items/doomed").await;
    assert_eq!((status, &body["deleted"]), (200, &json!(1)), "{body}");
    mock.release();
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(
        (&done["total"], &done["completed"], &done["deleted"]),
        (&json!(21), &json!(20), &json!(1)),
        "{done}"
    );
    assert!(
        point_of(&app, "doomed").await.is_none(),
        "the deleted item's point came back"
    );
    assert_eq!(
        mock.audit().embedded.get("the doomed passage"),
        Some(&1),
        "the doomed item was embedded (the write was what had to be dropped)"
    );
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        "delete during embedding",
        Duplicates::zero("no crash, no retry"),
    );
    app.stop().await;
}

/// 10,000 items; while their job runs, 10% are deleted, 10% change content and 10% change
/// metadata only. The job's counters are exact, no point is left without an item, the
/// metadata-only items are embedded exactly once (no call for their change), every changed
/// item ends embedded with its new content (by this job, or by the next one for those it had
/// embedded before the change), and every point carries its item's metadata.
async fn a_job_whose_scope_changes_under_it(backend: Backend) {
    const N: usize = 10_000;
    let mock = MockProvider::start(script_with_latency(100)).await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.max_inputs_per_request = 50;
        s.pipeline.workers = 2;
    })
    .await;
    let id = |i: usize| format!("it-{i:06}");
    let text = |i: usize| format!("passage {i} of ctx");
    for start in (0..N).step_by(1_000) {
        let items: Vec<Value> = (start..start + 1_000)
            .map(|i| json!({"id": id(i), "content": text(i), "metadata": {"n": i % 10, "tag": "before"}}))
            .collect();
        let (status, body) = app
            .post_json("/v1/contexts/ctx/items", &json!({ "items": items }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let job = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            app.job(&job).await["completed"].as_i64().unwrap_or(0) >= 500
        })
        .await,
        "the job never got going"
    );

    // Deletes (i % 10 == 0), content changes (== 1), metadata-only changes (== 2), mixed in
    // the same requests, 500 ids per request.
    let (mut deleted, mut changed, mut relabelled) = (0, 0, 0);
    for start in (0..N).step_by(1_500) {
        let range = start..(start + 1_500).min(N);
        let delete_ids: Vec<String> = range.clone().filter(|i| i % 10 == 0).map(id).collect();
        let items: Vec<Value> = range
            .filter(|i| i % 10 == 1 || i % 10 == 2)
            .map(|i| {
                if i % 10 == 1 {
                    json!({"id": id(i), "content": format!("{} (edited)", text(i))})
                } else {
                    json!({"id": id(i), "content": text(i), "metadata": {"n": 2, "tag": "after"}})
                }
            })
            .collect();
        let (status, body) = app
            .post_json(
                "/v1/contexts/ctx/items",
                &json!({"items": items, "delete": delete_ids}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        deleted += body["deleted"].as_u64().unwrap();
        changed += body["changed"].as_u64().unwrap();
        relabelled += body["metadata_changed"].as_u64().unwrap();
    }
    assert_eq!((deleted, changed, relabelled), (1_000, 1_000, 1_000));
    let first = app.wait_finished(&job, Duration::from_secs(180)).await;
    assert_eq!(first["state"], "COMPLETED", "{first}");
    let counted: i64 = ["completed", "failed", "skipped", "deleted"]
        .iter()
        .map(|k| first[k].as_i64().unwrap())
        .sum();
    assert_eq!(counted, first["total"].as_i64().unwrap(), "{first}");
    assert!(
        first["deleted"].as_i64().unwrap() > 0,
        "no delete landed mid-job, so the scenario proved nothing: {first}"
    );
    println!(
        "[scope changes under a job] first job: total {} completed {} skipped {} deleted {}",
        first["total"], first["completed"], first["skipped"], first["deleted"]
    );

    // Items the first job embedded before their change are PENDING again; a second job
    // embeds them (and only them).
    let pending = app.items_with_status("PENDING").await;
    assert!(
        pending.iter().all(|i| {
            let n: usize = i[3..].parse().unwrap();
            n % 10 == 1
        }),
        "only content changes may be left to embed: {pending:?}"
    );
    let second = context_job(&app).await;
    let second_done = app.wait_finished(&second, Duration::from_secs(60)).await;
    assert_eq!(
        second_done["completed"].as_u64().unwrap(),
        pending.len() as u64,
        "{second_done}"
    );

    let audit = mock.audit();
    for i in (0..N).filter(|i| i % 10 == 2) {
        assert_eq!(
            audit.embedded.get(&text(i)),
            Some(&1),
            "item {} (metadata changed only) was embedded {:?} times",
            id(i),
            audit.embedded.get(&text(i))
        );
    }
    for i in (0..N).filter(|i| i % 10 == 1) {
        assert_eq!(
            audit.embedded.get(&format!("{} (edited)", text(i))),
            Some(&1),
            "item {}'s new content was not embedded exactly once",
            id(i)
        );
    }
    let report = app.check_invariants(&[&job, &second], Some(&mock)).await;
    report.expect(
        "scope changes under a job",
        Duplicates::zero("no crash, no retry; a change is a new text, not the same one again"),
    );
    assert_eq!(report.points, (N - 1_000) as u64);
    app.stop().await;
}

/// Metadata is written into the payload and filters search; a change of metadata alone
/// reaches the payload (and the filter) at once without any call to the provider.
async fn metadata_filters_search_and_changes_without_embedding(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    let items: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": format!("doc-{i}"), "content": format!("document number {i}"),
                "metadata": {"tenant": if i < 3 { "acme" } else { "globex" }, "year": 2020 + i}})
        })
        .collect();
    app.post_json("/v1/contexts/ctx/items", &json!({ "items": items }))
        .await;
    let job = context_job(&app).await;
    app.wait_finished(&job, Duration::from_secs(30)).await;

    let search = |filter: Value| {
        let app = &app;
        async move {
            let (status, body) = app
                .post_json(
                    "/v1/contexts/ctx/search",
                    &json!({"query": "document", "k": 10, "filter": filter}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let mut ids: Vec<String> = body["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["item_id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            (ids, body)
        }
    };
    let (ids, body) = search(json!({"tenant": "acme"})).await;
    assert_eq!(ids, ["doc-0", "doc-1", "doc-2"]);
    assert_eq!(body["hits"][0]["metadata"]["tenant"], "acme", "{body}");
    assert_eq!(body["generation"], 1, "{body}");
    let (ids, _) = search(json!({"tenant": ["acme", "globex"], "year": [2021, 2024]})).await;
    assert_eq!(ids, ["doc-1", "doc-4"]);
    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/search",
            &json!({"query": "x", "filter": {"tenant": 1.5}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["reason"].as_str().unwrap().contains("filter"),
        "{body}"
    );

    let calls = mock.audit().requests;
    let (_, body) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "doc-5", "content": "document number 5",
                "metadata": {"tenant": "acme", "year": 2025}}]}),
        )
        .await;
    assert_eq!(body["metadata_changed"], 1, "{body}");
    let point = point_of(&app, "doc-5").await.expect("doc-5 has a point");
    assert_eq!(point.metadata.as_map()["tenant"], "acme");
    assert_eq!(point.version, 2);
    assert_eq!(
        mock.audit().requests,
        calls,
        "a metadata change called the provider"
    );
    let (ids, _) = search(json!({"tenant": "acme"})).await;
    assert_eq!(ids, ["doc-0", "doc-1", "doc-2", "doc-5"]);
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        "metadata",
        Duplicates::at_most(
            3,
            "the same search query, embedded for each of four searches",
        ),
    );
    app.stop().await;
}

/// Deletes and metadata changes committed without their vector-store follow-up (as when the
/// store failed right after the commit) are applied by the reconciler's sweep.
async fn what_the_vector_store_is_owed_is_applied_later(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    app.seed_items("ctx", "it", 10).await;
    let job = context_job(&app).await;
    app.wait_finished(&job, Duration::from_secs(30)).await;
    assert!(point_of(&app, "it-000003").await.is_some());

    // Straight to the store: SQL changes, the vector store is not told.
    let context = ContextId::parse("ctx").unwrap();
    let report = app
        .store
        .upsert_items(
            &context,
            &[NewItem {
                id: ItemId::parse("it-000004").unwrap(),
                content: ItemContent::parse("passage 4 of ctx".into(), 1_000).unwrap(),
                metadata: Some(Metadata::parse(json!({"moved": true}), 1_000).unwrap()),
            }],
            &[ItemId::parse("it-000003").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (report.counts.metadata_changed, report.counts.deleted),
        (1, 1)
    );
    assert!(
        point_of(&app, "it-000003").await.is_some(),
        "nothing told the store yet"
    );

    assert!(
        wait_until(Duration::from_secs(20), || async {
            point_of(&app, "it-000003").await.is_none()
                && point_of(&app, "it-000004")
                    .await
                    .is_some_and(|p| p.metadata.as_map().contains_key("moved"))
        })
        .await,
        "the reconciler did not apply the delete and the metadata"
    );
    // The reconciler reports what it applied (once its round is over).
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let figures = app.get("/readyz").await.1;
            let reconciler = &figures["checks"]["reconciler"];
            reconciler["points_removed"] == 1 && reconciler["payloads_updated"] == 1
        })
        .await,
        "the reconciler's figures do not show the sweep: {}",
        app.get("/readyz").await.1["checks"]["reconciler"]
    );
    let owed: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) AS n FROM payload_updates")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    };
    assert_eq!(owed, 0, "the outbox still holds applied changes");
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        "owed vector work",
        Duplicates::zero("nothing embedded twice"),
    );
    app.stop().await;
}

/// A context deleted while its job runs: the job ends at once with every unfinished item
/// counted DELETED, and no point of the context is left.
async fn a_context_deleted_under_its_job(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(200)).await;
    let app = app_with(backend, &mock, |s| {
        s.embedding.max_inputs_per_request = 20;
        s.pipeline.workers = 1;
    })
    .await;
    app.seed_items("ctx", "it", 400).await;
    app.seed_items("keep", "kp", 5).await;
    let job = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            app.job(&job).await["completed"].as_i64().unwrap_or(0) >= 20
        })
        .await
    );
    let (status, body) = delete(&app, "/v1/contexts/ctx").await;
    assert_eq!((status, &body["deleted"]), (200, &json!(400)), "{body}");
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert!(done["deleted"].as_i64().unwrap() > 0, "{done}");
    // The check waits for the tasks in flight at the delete to be settled, then pages
    // through every point: none of the context may be left.
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    report.expect(
        "context deleted under its job",
        Duplicates::zero("no crash"),
    );
    assert_eq!(report.points, 0, "points left after the context's delete");
    app.stop().await;
}

on_both_backends!(
    a_delete_during_its_embedding_leaves_no_point,
    a_job_whose_scope_changes_under_it,
    metadata_filters_search_and_changes_without_embedding,
    what_the_vector_store_is_owed_is_applied_later,
    a_context_deleted_under_its_job,
);
