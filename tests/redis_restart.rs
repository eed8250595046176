//! Redis restarts (without persistence) while the intake is blocked in XREADGROUP: the
//! intake reconnects, recreates its consumer group and takes the next job by itself, and the
//! job planned before the restart — whose tasks Redis forgot — is planned again from SQL.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::redis_server::RedisServer;
use support::{Backend, TestApp, wait_until};

async fn intake_resumes_after_a_redis_restart(backend: Backend) {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(backend, |s| {
        s.redis.url = url.clone();
        s.queue.block = Duration::from_millis(1_000);
        s.pipeline.embed = false;
    })
    .await;
    app.seed_items("ctx", "it", 50).await;
    let first = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    app.wait_planned(&first, Duration::from_secs(10)).await;

    // The intake is now blocked in XREADGROUP (block 1 s) on the jobs stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "readiness must notice Redis is gone: {ready}");
    redis.restart();
    let restarted = Instant::now();

    // The first request after the restart may still meet the old connection; the API says
    // so with 503 and the caller retries, as any client of a queue would.
    let deadline = Instant::now() + Duration::from_secs(5);
    let job = loop {
        let (status, body) = app
            .post_json(
                "/v1/jobs",
                &json!({"scope": {"type": "context", "context_id": "ctx"}}),
            )
            .await;
        if status == 202 {
            break body["job_id"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the API did not accept a job after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let planned = app.wait_planned(&job, Duration::from_secs(10)).await;
    println!(
        "intake resumed and planned a job {:.2} s after the Redis restart",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(planned["total"], 50);
    // The group was recreated; the task stream holds the new job's 50 items, and the first
    // job's 50 again (planned again by the reconciler: Redis forgot them).
    assert!(
        wait_until(Duration::from_secs(10), || async {
            app.planned_item_ids().await.len() == 100
        })
        .await,
        "tasks on the stream: {}",
        app.planned_item_ids().await.len()
    );
    let ids = app.planned_item_ids().await;
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 50, "each item once per job");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            app.get("/readyz").await.0 == 200
        })
        .await
    );
    app.stop().await;
}

on_both_backends!(intake_resumes_after_a_redis_restart);
