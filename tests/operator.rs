//! The operator's surface: cancel, job listing, dead letters with requeue, the actor tree, the
//! live event stream, and the token on every admin route.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::invariants::Duplicates;
use support::mock_provider::{MockProvider, MockScript};
use support::{Backend, TestApp, app_with, script, wait_until};

async fn job_item_rows(app: &TestApp, job: &str) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM job_items WHERE job_id = $1 AND outcome IS NOT NULL")
        .bind(job.to_owned())
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn cancel_mid_job_keeps_counters_true(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        latency: Duration::from_millis(100),
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| {
        s.planner.task_size = 16;
        s.rate_limit.max_concurrency = 2;
    })
    .await;
    app.seed_items("ctx", "it", 3_000).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            app.job(&job).await["completed"].as_i64().unwrap_or(0) >= 100
        })
        .await
    );
    let (status, cancelled) = app
        .post_json(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "CANCELLED");
    // Items in flight finish; then nothing moves.
    let mut previous = -1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let done = app.job(&job).await["done"].as_i64().unwrap();
        if done == previous {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job kept moving after its cancel"
        );
        previous = done;
    }
    let end = app.job(&job).await;
    assert_eq!(end["state"], "CANCELLED", "{end}");
    let done = end["done"].as_i64().unwrap();
    assert!(done < 3_000, "cancel dropped nothing: {end}");
    assert_eq!(
        done,
        job_item_rows(&app, &job).await,
        "counters disagree with the items counted"
    );
    let completed = app
        .status_counts()
        .await
        .get("COMPLETED")
        .copied()
        .unwrap_or(0);
    assert_eq!(completed, end["completed"].as_i64().unwrap(), "{end}");
    assert_eq!(app.vectors.count().await.unwrap() as i64, completed);
    let (status, again) = app
        .post_json(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{again}");
    app.check_invariants(&[&job], Some(&mock)).await.expect(
        &format!("{backend:?} cancel mid-job"),
        Duplicates::zero("queued work of the cancelled job is dropped, not redone"),
    );
    app.stop().await;
}

async fn jobs_are_listed_with_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.pipeline.embed = false).await;
    app.seed_items("ctx", "it", 3).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_job(json!({"type": "context", "context_id": "ctx"}))
                .await,
        );
    }
    let empty = app.create_job(json!({"type": "failed"})).await;
    app.wait_planned(&empty, Duration::from_secs(10)).await;
    let (status, page) = app.get("/v1/jobs?limit=4").await;
    assert_eq!(status, 200, "{page}");
    let first: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(first[0], empty, "newest first");
    assert_eq!(first.len(), 4);
    let next = page["next_before"].as_str().unwrap();
    let (_, rest) = app.get(&format!("/v1/jobs?limit=4&before={next}")).await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2);
    assert!(rest["next_before"].is_null());
    let (_, completed) = app.get("/v1/jobs?state=COMPLETED").await;
    let done: Vec<&str> = completed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(done, [empty.as_str()]);
    for bad in [
        "/v1/jobs?state=DONE",
        "/v1/jobs?limit=0",
        "/v1/jobs?before=nope",
        "/v1/jobs?color=red",
    ] {
        assert_eq!(app.get(bad).await.0, 400, "{bad}");
    }
    app.stop().await;
}

async fn dead_letters_are_listed_and_requeued(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        max_tokens_per_input: 12,
        ..script()
    })
    .await;
    let app = app_with(backend, &mock, |s| s.planner.task_size = 4).await;
    app.seed_items("ctx", "it", 6).await;
    let (status, _) = app
        .post_json("/v1/contexts/ctx/items", &json!({"items": [
            {"id": "long-a", "content": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"},
            {"id": "long-b", "content": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"}
        ]}))
        .await;
    assert_eq!(status, 200);
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (done["failed"].as_i64(), done["completed"].as_i64()),
        (Some(2), Some(6)),
        "{done}"
    );
    let (status, list) = app.get("/v1/dead-letters").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    let letters = list["dead_letters"].as_array().unwrap();
    assert!(letters.iter().all(|d| {
        d["kind"] == "item"
            && d["job_id"] == job.as_str()
            && d["reason"]
                .as_str()
                .unwrap()
                .contains("maximum context length")
    }));

    // The provider's limit is raised; requeue one by id, then the rest by job.
    mock.set_script(script());
    let one = letters[0]["id"].as_str().unwrap();
    let (status, answer) = app
        .post_json("/v1/dead-letters/requeue", &json!({"ids": [one]}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["requeued"].as_u64(), answer["removed"].as_u64()),
        (Some(1), Some(1))
    );
    let requeue_job = answer["jobs"][0].as_str().unwrap().to_owned();
    let mut requeue_jobs = vec![requeue_job.clone()];
    let done = app
        .wait_finished(&requeue_job, Duration::from_secs(30))
        .await;
    assert_eq!(
        (done["state"].as_str(), done["completed"].as_i64()),
        (Some("COMPLETED"), Some(1)),
        "{done}"
    );
    let (_, answer) = app
        .post_json("/v1/dead-letters/requeue", &json!({"job_id": job}))
        .await;
    assert_eq!(answer["requeued"], 1);
    requeue_jobs.push(answer["jobs"][0].as_str().unwrap().to_owned());
    let done = app
        .wait_finished(answer["jobs"][0].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(app.get("/v1/dead-letters").await.1["total"], 0);
    assert_eq!(app.status_counts().await.get("COMPLETED"), Some(&8));
    // The first job's dead letters were requeued away on purpose: check the requeue jobs.
    let checked: Vec<&str> = requeue_jobs.iter().map(String::as_str).collect();
    app.check_invariants(&checked, Some(&mock)).await.expect(
        &format!("{backend:?} dead letters requeued"),
        Duplicates::zero("a refused input embeds nothing"),
    );
    for (body, want) in [
        (json!({}), 422),
        (json!({"all": true, "job_id": job}), 422),
        (json!({"ids": ["not-an-id"]}), 422),
        (json!({"ids": ["1-0"]}), 404),
    ] {
        assert_eq!(
            app.post_json("/v1/dead-letters/requeue", &body).await.0,
            want,
            "{body}"
        );
    }
    app.stop().await;
}

async fn the_actor_tree_and_events_are_served(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    let (status, tree) = app.get("/v1/actors").await;
    assert_eq!(status, 200, "{tree}");
    let children = tree["supervisor"]["children"].as_array().unwrap();
    assert!(children.len() >= 9, "{tree}");
    assert!(
        children
            .iter()
            .all(|c| c["state"] == "running" && c["restarts"] == 0)
    );

    // Follow the event stream while a job runs, until its progress reaches its total.
    let mut response = app.http.get(app.url("/v1/events")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    app.seed_items("ctx", "it", 200).await;
    let job = app
        .create_job(json!({"type": "context", "context_id": "ctx"}))
        .await;
    let mut buffer = String::new();
    let mut finished: Option<Value> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while finished.is_none() && std::time::Instant::now() < deadline {
        let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), response.chunk()).await
        else {
            break;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if event.contains("event: job_progress") {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                let progress: Value = serde_json::from_str(data).unwrap();
                if progress["job_id"] == job.as_str() && progress["state"] == "COMPLETED" {
                    finished = Some(progress);
                }
            }
        }
    }
    let progress = finished.expect("no final job_progress event");
    assert_eq!(
        (progress["done"].as_i64(), progress["total"].as_i64()),
        (Some(200), Some(200))
    );
    app.stop().await;
}

async fn every_admin_route_needs_the_token(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.pipeline.embed = false;
        s.secrets.admin_token = Some(embedq::config::Secret::new("operator-token-0123456789"));
    })
    .await;
    let routes = [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/x"),
        ("PATCH", "/v1/jobs/x"),
        ("POST", "/v1/jobs/x/cancel"),
        ("GET", "/v1/items/x"),
        ("DELETE", "/v1/items/x"),
        ("POST", "/v1/contexts/c/items"),
        ("DELETE", "/v1/contexts/c"),
        ("POST", "/v1/contexts/c/search"),
        ("POST", "/v1/contexts/c/documents"),
        ("DELETE", "/v1/documents/x"),
        ("GET", "/v1/schedules"),
        ("GET", "/v1/dead-letters"),
        ("POST", "/v1/dead-letters/requeue"),
        ("DELETE", "/v1/dead-letters/1-0"),
        ("GET", "/v1/actors"),
        ("GET", "/v1/events"),
        ("POST", "/v1/pause"),
        ("POST", "/v1/resume"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        let r = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["reason"].as_str().unwrap().contains("Bearer"),
            "{method} {path}: {body}"
        );
    }
    // Every operation the OpenAPI document marks as needing the token, so a new route cannot
    // slip past this list.
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secured = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["security"]
                .as_array()
                .is_none_or(|s| s.is_empty())
            {
                continue;
            }
            let concrete = path
                .replace("{id}", "1-0")
                .replace("{job_id}", "x")
                .replace("{item_id}", "x")
                .replace("{document_id}", "x")
                .replace("{context_id}", "c");
            let r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {path} (documented)");
            secured += 1;
        }
    }
    assert_eq!(
        secured,
        routes.len(),
        "documented secured operations vs this list"
    );
    let ok = app
        .http
        .get(app.url("/v1/actors"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    app.stop().await;
}

on_both_backends!(
    cancel_mid_job_keeps_counters_true,
    jobs_are_listed_with_filters_and_pages,
    dead_letters_are_listed_and_requeued,
    the_actor_tree_and_events_are_served,
    every_admin_route_needs_the_token,
);
