//! The planner: each scope expands to tasks of bounded size holding each item exactly once,
//! with its attempt count; planning waits while the tasks stream is full; a malformed job
//! entry is dead-lettered and does not stop the next job.
//!
//! These apps plan only (`pipeline.embed = false`), so the tasks stay on the stream to be
//! inspected.

mod support;

use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use support::{Backend, TestApp, wait_until, xadd};

fn assert_exactly_once(ids: &[String], expected: &HashSet<String>) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an item was planned twice");
    let got: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(&got, expected);
}

async fn context_scope_plans_every_item_once_in_bounded_tasks(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.pipeline.embed = false;
        s.planner.page_size = 100;
        s.planner.task_size = 16;
        // Nothing consumes the tasks here: room for all 66 of them.
        s.planner.max_queued_tasks = 1_000;
    })
    .await;
    app.seed_items("ctx", "it", 1_050).await;
    app.seed_items("other", "ot", 20).await;
    sqlx::query("UPDATE items SET attempts = 2 WHERE id = 'it-000007'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let planned = app.wait_planned(&job, Duration::from_secs(20)).await;
    assert_eq!(planned["total"], 1_050);

    let ids = app.planned_item_ids().await;
    let expected: HashSet<String> = (0..1_050).map(|i| format!("it-{i:06}")).collect();
    assert_exactly_once(&ids, &expected);

    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(app.keys.tasks_stream(embedq::domain::Priority::Normal))
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let mut saw_attempt = false;
    for entry in &reply.ids {
        let Some(redis::Value::BulkString(raw)) = entry.map.get("task") else {
            panic!()
        };
        let task: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(task["job_id"], job.as_str());
        let items = task["items"].as_array().unwrap();
        assert!(
            !items.is_empty() && items.len() <= 16,
            "task of {} items",
            items.len()
        );
        for item in items {
            if item["id"] == "it-000007" {
                assert_eq!(item["attempt"], 2);
                saw_attempt = true;
            }
        }
    }
    assert!(saw_attempt);
    // The job message was acknowledged and removed once planned.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            redis::cmd("XLEN")
                .arg(app.keys.jobs_stream())
                .query_async::<u64>(&mut app.redis.clone())
                .await
                .unwrap()
                == 0
        })
        .await
    );
    app.stop().await;
}

async fn every_scope_selects_its_items(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.pipeline.embed = false;
        s.planner.page_size = 7;
    })
    .await;
    app.seed_items("a", "a", 30).await;
    app.seed_items("b", "b", 12).await;
    sqlx::query("UPDATE items SET status = 'FAILED' WHERE id IN ('a-000003', 'b-000011')")
        .execute(app.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE items SET embedded_model = $1, status = 'COMPLETED' WHERE context_id = 'b' AND id <> 'b-000011'")
        .bind(app.settings.embedding.model.clone())
        .execute(app.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE items SET embedded_model = 'old-model' WHERE id = 'a-000000'")
        .execute(app.store.pool())
        .await
        .unwrap();

    let all: HashSet<String> = (0..30)
        .map(|i| format!("a-{i:06}"))
        .chain((0..12).map(|i| format!("b-{i:06}")))
        .collect();
    let stale: HashSet<String> = (0..30)
        .map(|i| format!("a-{i:06}"))
        .chain(["b-000011".to_string()])
        .collect();
    let cases = vec![
        (json!({"type": "all"}), all),
        (
            json!({"type": "failed"}),
            ["a-000003", "b-000011"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        (json!({"type": "stale_model"}), stale),
        (
            json!({"type": "items", "item_ids": ["b-000002", "a-000009", "b-000002", "a-000029"]}),
            ["b-000002", "a-000009", "a-000029"]
                .iter()
                .map(|s| s.to_string())
                .collect::<HashSet<_>>(),
        ),
    ];
    for (scope, expected) in cases {
        redis::cmd("DEL")
            .arg(&app.keys.tasks_streams()[..])
            .query_async::<()>(&mut app.redis.clone())
            .await
            .unwrap();
        let job = app.create_job(scope.clone()).await;
        let planned = app.wait_planned(&job, Duration::from_secs(20)).await;
        assert_eq!(planned["total"], expected.len() as i64, "{scope}");
        assert_exactly_once(&app.planned_item_ids().await, &expected);
    }
    app.stop().await;
}

async fn empty_scope_completes_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 3).await;
    let job = app.create_job(json!({"type": "failed"})).await;
    let planned = app.wait_planned(&job, Duration::from_secs(10)).await;
    assert_eq!(planned["total"], 0);
    assert_eq!(planned["state"], "COMPLETED");
    app.stop().await;
}

async fn planning_waits_while_the_tasks_stream_is_full(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.pipeline.embed = false;
        s.planner.page_size = 10;
        s.planner.task_size = 10;
        s.planner.max_queued_tasks = 3;
    })
    .await;
    app.seed_items("ctx", "it", 100).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let mut conn = app.redis.clone();
    let stream = app.keys.tasks_stream(embedq::domain::Priority::Normal);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            redis::cmd("XLEN")
                .arg(&stream)
                .query_async::<u64>(&mut conn.clone())
                .await
                .unwrap()
                >= 3
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let len: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 3, "planning went past max_queued_tasks");
    assert_eq!(app.job(&job).await["planned"], false);

    // Drain the stream as a consumer would; planning then goes on to the end.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.job(&job).await["planned"] != true {
        assert!(
            std::time::Instant::now() < deadline,
            "planning did not finish"
        );
        seen.extend(drain(&mut conn, &stream).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.extend(drain(&mut conn, &stream).await);
    let expected: HashSet<String> = (0..100).map(|i| format!("it-{i:06}")).collect();
    assert_exactly_once(&seen, &expected);
    app.stop().await;
}

async fn malformed_job_entries_are_dead_lettered(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 5).await;
    let mut conn = app.redis.clone();
    let jobs = app.keys.jobs_stream();
    xadd(&mut conn, &jobs, &[("garbage", "1")]).await;
    xadd(&mut conn, &jobs, &[("v", "1"), ("job_id", "not-a-uuid")]).await;
    // A well-formed message for a job that does not exist is acknowledged and skipped.
    let unknown = uuid::Uuid::now_v7().to_string();
    xadd(&mut conn, &jobs, &[("v", "1"), ("job_id", &unknown)]).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    app.wait_planned(&job, Duration::from_secs(10)).await;

    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(app.keys.dead_letters())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 2, "{dead:?}");
    let reasons: Vec<String> = dead
        .ids
        .iter()
        .map(|e| match e.map.get("reason") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("no reason: {other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("schema version"), "{reasons:?}");
    assert!(reasons[1].contains("not a UUID"), "{reasons:?}");
    let left: u64 = redis::cmd("XLEN")
        .arg(&jobs)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "every job entry acknowledged");
    app.stop().await;
}

/// Reads the task entries on the stream and deletes exactly those, as a consumer would.
async fn drain(conn: &mut redis::aio::ConnectionManager, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for entry in &reply.ids {
        let Some(redis::Value::BulkString(raw)) = entry.map.get("task") else {
            panic!()
        };
        let task: serde_json::Value = serde_json::from_slice(raw).unwrap();
        for item in task["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        redis::cmd("XDEL")
            .arg(stream)
            .arg(&entry.id)
            .query_async::<()>(conn)
            .await
            .unwrap();
    }
    ids
}

on_both_backends!(
    context_scope_plans_every_item_once_in_bounded_tasks,
    every_scope_selects_its_items,
    empty_scope_completes_at_once,
    planning_waits_while_the_tasks_stream_is_full,
    malformed_job_entries_are_dead_lettered,
);
