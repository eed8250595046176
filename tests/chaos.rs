//! Failures from outside the daemon, each ending with the full invariant check and a printed
//! duplicate count with its reason: SIGKILL and SIGTERM mid-job, Redis restarting during
//! blocking reads, PostgreSQL and the provider unreachable, 429 storms with and without
//! Retry-After, an exhausted quota, overlapping jobs, a consumer name given twice, pause and
//! resume with work in flight, malformed stream entries, and an update that changes nothing.

mod support;

use embedq::queue::Keys;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, owned_env};
use support::invariants::{Duplicates, Report, Scene, check};
use support::mock_provider::{MockProvider, MockScript};
use support::proxy::Proxy;
use support::redis_server::RedisServer;
use support::{
    Backend, TestApp, TestDatabase, context_job, redis_url, script_with_latency, wait_until, xadd,
};

const MODEL: &str = "text-embedding-3-small";

/// Items the daemon child process holds in memory at most: 64 task credits (the default) × 32
/// items per task (its environment).
const HELD: u64 = 64 * 32;
/// Items an in-process app of these scenarios holds at most: 64 task credits × 16 per task.
const HELD_REDIS: u64 = 64 * 16;

/// An app embedding through `provider_url`, with small tasks and pages.
async fn app_with(
    backend: Backend,
    provider_url: &str,
    adjust: impl FnOnce(&mut embedq::config::Settings),
) -> TestApp {
    support::app_at(backend, provider_url, move |s| {
        s.planner.task_size = 16;
        s.planner.page_size = 200;
        adjust(s);
    })
    .await
}

async fn wait_completed(app: &TestApp, job: &str, at_least: i64) {
    assert!(
        wait_until(Duration::from_secs(60), || async {
            app.job(job).await["completed"].as_i64().unwrap_or(0) >= at_least
        })
        .await,
        "job {job} did not reach {at_least} completed"
    );
}

/// Seeds `items` items in `ctx`, starts a job over them and waits until `at_least` are
/// completed: the moment the scenarios strike.
async fn job_under_way(app: &TestApp, items: usize, at_least: i64) -> String {
    app.seed_items("ctx", "it", items).await;
    let job = context_job(app).await;
    wait_completed(app, &job, at_least).await;
    job
}

/// Waits for the job to finish and asserts it completed.
async fn completed(app: &TestApp, job: &str, within: Duration) -> Value {
    let done = app.wait_finished(job, within).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    done
}

/// How every in-process scenario ends: the full invariant check over `jobs`, its duplicate
/// count printed under `scenario` with `why`, and the app stopped.
async fn conclude(
    app: TestApp,
    jobs: &[&str],
    mock: &MockProvider,
    scenario: &str,
    duplicates: Duplicates,
) {
    let report = app.check_invariants(jobs, Some(mock)).await;
    report.expect(scenario, duplicates);
    app.stop().await;
}

/// An app whose daemon reaches PostgreSQL through a proxy the test controls, while the app's
/// own store (used by the checks) connects directly.
async fn app_behind_a_postgres_proxy(
    mock: &MockProvider,
    adjust: impl FnOnce(&mut embedq::config::Settings),
) -> (TestApp, Proxy) {
    let db = TestDatabase::create(Backend::Postgres).await;
    let proxy = Proxy::for_url(&db.url).await;
    let direct_url = db.url.clone();
    let vectors_dir = tempfile::tempdir().unwrap().keep();
    let mut settings = support::test_settings(&proxy.rewrite(&db.url), &vectors_dir);
    settings.embedding.base_url = mock.base_url();
    settings.planner.task_size = 16;
    adjust(&mut settings);
    let mut app = TestApp::start(settings, db, vectors_dir).await;
    let mut direct = app.settings.database.clone();
    direct.url = direct_url;
    app.store = embedq::store::Store::connect(&direct).await.unwrap();
    (app, proxy)
}

/// Stalls the proxy for 3 s, slows it for 2 s, then restores it.
async fn stall_then_slow(proxy: &Proxy) {
    proxy.stall();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.slow(Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
}

// ---------------------------------------------------------------------------------------------
// The daemon as a child process: SIGKILL and SIGTERM mid-job
// ---------------------------------------------------------------------------------------------

struct DaemonSetup {
    db: TestDatabase,
    prefix: String,
    _vectors: tempfile::TempDir,
    vector_settings: embedq::config::VectorSettings,
    http: reqwest::Client,
}

impl DaemonSetup {
    async fn new(backend: Backend) -> Self {
        let vectors = tempfile::tempdir().unwrap();
        Self {
            db: TestDatabase::create(backend).await,
            prefix: format!("embedq-test-{}", uuid::Uuid::new_v4().simple()),
            vector_settings: support::vectors::settings(vectors.path()),
            _vectors: vectors,
            http: reqwest::Client::new(),
        }
    }

    fn env(&self, provider: &str, visibility_ms: u64) -> Vec<(String, String)> {
        let visibility = visibility_ms.to_string();
        let mut env = support::vectors::env(&self.vector_settings);
        env.extend(owned_env([
            ("EMBEDQ__DATABASE__URL", self.db.url.as_str()),
            ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
            ("EMBEDQ__EMBEDDING__MODEL", MODEL),
            ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
            ("EMBEDQ__EMBEDDING__BASE_URL", provider),
            ("EMBEDQ__REDIS__URL", &redis_url()),
            ("EMBEDQ__REDIS__PREFIX", &self.prefix),
            ("EMBEDQ__QUEUE__VISIBILITY_TIMEOUT_MS", visibility.as_str()),
            ("EMBEDQ__QUEUE__BLOCK_MS", "200"),
            ("EMBEDQ__PLANNER__TASK_SIZE", "32"),
            ("EMBEDQ__PIPELINE__STATUS_FLUSH_MS", "20"),
            ("EMBEDQ__RETRY__BASE_BACKOFF_MS", "50"),
            ("EMBEDQ__RETRY__MAX_BACKOFF_MS", "1000"),
        ]));
        env
    }

    async fn post(&self, daemon: &Daemon, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", daemon.port))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn job(&self, daemon: &Daemon, id: &str) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}/v1/jobs/{id}", daemon.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn seed_and_start(&self, daemon: &Daemon, n: usize) -> String {
        for start in (0..n).step_by(1000) {
            let items: Vec<Value> = (start..(start + 1000).min(n))
                .map(|i| json!({"id": format!("it-{i:06}"), "content": format!("passage {i} of ctx")}))
                .collect();
            self.post(daemon, "/v1/contexts/ctx/items", json!({"items": items}))
                .await;
        }
        let job = self
            .post(
                daemon,
                "/v1/jobs",
                json!({"scope": {"type": "context", "context_id": "ctx"}}),
            )
            .await;
        job["job_id"].as_str().unwrap().to_owned()
    }

    async fn wait_finished(&self, daemon: &Daemon, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(daemon, id).await;
            if matches!(job["state"].as_str(), Some("COMPLETED" | "FAILED")) {
                return job;
            }
            assert!(Instant::now() < deadline, "not finished: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most `within`) until nothing is left on any tasks stream.
    async fn wait_drained(&self, within: Duration) {
        let streams = Keys::new(self.prefix.clone()).tasks_streams();
        let mut redis =
            redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
                .await
                .unwrap();
        let drained = wait_until(within, || {
            let mut redis = redis.clone();
            let streams = streams.clone();
            async move {
                let mut left = 0u64;
                for stream in &streams {
                    left += redis::cmd("XLEN")
                        .arg(stream)
                        .query_async::<u64>(&mut redis)
                        .await
                        .unwrap();
                }
                left == 0
            }
        })
        .await;
        let _ = &mut redis;
        assert!(drained, "the tasks streams did not drain within {within:?}");
    }

    /// The invariant check, once the daemon is gone (the vector files are one process's).
    async fn check(&self, job: &str, mock: &MockProvider) -> Report {
        self.check_jobs(&[job], mock).await
    }

    /// [`DaemonSetup::check`] over several jobs.
    async fn check_jobs(&self, jobs: &[&str], mock: &MockProvider) -> Report {
        let mut db = embedq::config::Settings::defaults().database;
        db.url = self.db.url.clone();
        db.max_connections = 2;
        let store = embedq::store::Store::connect(&db).await.unwrap();
        let vectors = support::vectors::open(&self.vector_settings).await;
        let redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
            .await
            .unwrap();
        let keys = Keys::new(self.prefix.clone());
        let scene = Scene {
            store: &store,
            redis,
            keys: &keys,
            vectors: vectors.as_ref(),
            max_retries: 3,
            model: MODEL,
            dimension: support::TEST_DIMENSION,
        };
        let report = check(&scene, jobs, &Default::default(), Some(&mock.audit())).await;
        store.close().await;
        report
    }

    async fn cleanup(self) {
        support::delete_prefix(&redis_url(), &self.prefix).await;
        support::vectors::clean_up(&self.vector_settings).await;
    }
}

const KILL_ITEMS: usize = 2_000;

async fn sigkill_mid_batch_completes_after_the_visibility_timeout(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(150)).await;
    let setup = DaemonSetup::new(backend).await;
    let visibility = Duration::from_millis(3_000);
    let env = setup.env(&mock.base_url(), visibility.as_millis() as u64);
    let mut daemon = tokio::task::block_in_place(|| Daemon::start(env));
    let job = setup.seed_and_start(&daemon, KILL_ITEMS).await;
    let started = Instant::now();
    let mut completed = 0;
    while completed < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        completed = setup.job(&daemon, &job).await["completed"]
            .as_i64()
            .unwrap();
    }
    let rate = completed as f64 / started.elapsed().as_secs_f64();
    let in_flight_requests = mock.audit().requests;
    tokio::task::block_in_place(|| daemon.kill());
    let at_kill = mock.audit();
    tokio::task::block_in_place(|| daemon.restart());
    let restarted = Instant::now();
    let done = setup
        .wait_finished(&daemon, &job, Duration::from_secs(120))
        .await;
    let took = restarted.elapsed();
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let remaining = KILL_ITEMS as f64 - completed as f64;
    let work = Duration::from_secs_f64(remaining / rate);
    println!(
        "[{backend:?} SIGKILL mid-batch] killed at {completed}/{KILL_ITEMS} completed ({} requests, {} inputs embedded before the kill); \
         job completed {:.2} s after the restart: visibility timeout {:.1} s + remaining work ≈ {:.2} s ({remaining:.0} items at {rate:.0}/s)",
        in_flight_requests,
        at_kill.inputs_embedded,
        took.as_secs_f64(),
        visibility.as_secs_f64(),
        work.as_secs_f64()
    );
    // What the killed daemon had committed but not acknowledged is reclaimed after the
    // visibility timeout and acknowledged by the new one (its items are final): wait for that
    // with the daemon running, then check.
    setup.wait_drained(visibility * 4).await;
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success(), "{status}");
    let report = setup.check(&job, &mock).await;
    report.expect(
        &format!("{backend:?} SIGKILL mid-batch"),
        Duplicates::at_most(
            HELD,
            "the items held in memory at the kill, embedded but not yet committed (≤ queue.task_credits × planner.task_size)",
        ),
    );
    setup.cleanup().await;
}

/// SIGKILL while requests mix the tasks of a normal job and of an interactive one (requests of
/// 48 inputs over tasks of 32): after the restart both jobs complete, each item counted once,
/// and what was embedded twice is at most what the killed daemon held.
async fn sigkill_while_requests_mix_two_jobs(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(150)).await;
    let setup = DaemonSetup::new(backend).await;
    let visibility = Duration::from_millis(3_000);
    let mut env = setup.env(&mock.base_url(), visibility.as_millis() as u64);
    env.push((
        "EMBEDQ__EMBEDDING__MAX_INPUTS_PER_REQUEST".into(),
        "48".into(),
    ));
    let mut daemon = tokio::task::block_in_place(|| Daemon::start(env));
    let bulk = setup.seed_and_start(&daemon, KILL_ITEMS).await;
    let edits: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("ed-{i:06}"), "content": format!("edit {i}")}))
        .collect();
    setup
        .post(&daemon, "/v1/contexts/edits/items", json!({"items": edits}))
        .await;
    let mut completed = 0;
    while completed < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        completed = setup.job(&daemon, &bulk).await["completed"]
            .as_i64()
            .unwrap();
    }
    let ids: Vec<String> = (0..60).map(|i| format!("ed-{i:06}")).collect();
    let edit = setup
        .post(
            &daemon,
            "/v1/jobs",
            json!({"scope": {"type": "items", "item_ids": ids}}),
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(setup.job(&daemon, &edit).await["priority"], "interactive");
    // Kill once the edit's first inputs went out beside the bulk job's.
    let started = Instant::now();
    while !mock.audit().embedded.contains_key("edit 0") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edit never went out"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::task::block_in_place(|| daemon.kill());
    tokio::task::block_in_place(|| daemon.restart());
    for job in [&bulk, &edit] {
        let done = setup
            .wait_finished(&daemon, job, Duration::from_secs(120))
            .await;
        assert_eq!(done["state"], "COMPLETED", "{done}");
    }
    setup.wait_drained(visibility * 4).await;
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success(), "{status}");
    let report = setup.check_jobs(&[&bulk, &edit], &mock).await;
    report.expect(
        &format!("{backend:?} SIGKILL while requests mix two jobs"),
        Duplicates::at_most(
            2 * HELD,
            "the items held in memory at the kill, embedded but not yet committed (task credits × task size, for each of the two priorities in use)",
        ),
    );
    setup.cleanup().await;
}

async fn sigterm_mid_job_finishes_in_flight_batches(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(150)).await;
    let setup = DaemonSetup::new(backend).await;
    // A long visibility timeout: the restarted daemon must not have to wait for it.
    let visibility = Duration::from_secs(60);
    let env = setup.env(&mock.base_url(), visibility.as_millis() as u64);
    let mut daemon = tokio::task::block_in_place(|| Daemon::start(env));
    let job = setup.seed_and_start(&daemon, KILL_ITEMS).await;
    while setup.job(&daemon, &job).await["completed"]
        .as_i64()
        .unwrap()
        < 400
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let status = tokio::task::block_in_place(|| daemon.terminate());
    let stopping = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(stopping < Duration::from_secs(15), "{stopping:?}");
    tokio::task::block_in_place(|| daemon.restart());
    let restarted = Instant::now();
    let done = setup
        .wait_finished(&daemon, &job, Duration::from_secs(60))
        .await;
    let took = restarted.elapsed();
    assert_eq!(done["state"], "COMPLETED", "{done}");
    println!(
        "[{backend:?} SIGTERM mid-job] stopped in {:.2} s (exit 0); after the restart the job completed in {:.2} s (visibility timeout {} s: unfinished entries were released, not left to time out)",
        stopping.as_secs_f64(),
        took.as_secs_f64(),
        visibility.as_secs()
    );
    assert!(took < visibility / 2, "{took:?}");
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success());
    let report = setup.check(&job, &mock).await;
    report.expect(
        &format!("{backend:?} SIGTERM mid-job"),
        Duplicates::zero("batches in flight finished and were committed before the exit"),
    );
    setup.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Backends going away
// ---------------------------------------------------------------------------------------------

/// Redis (persisting, as in production) is SIGKILLed while the intakes block in XREADGROUP
/// mid-job, and comes back a second later: every consumer notices and resumes.
async fn redis_restart_during_blocking_reads_mid_job(backend: Backend) {
    let mut redis = RedisServer::start_persistent();
    let mock = MockProvider::start(script_with_latency(30)).await;
    let url = redis.url();
    let app = app_with(backend, &mock.base_url(), |s| {
        s.redis.url = url.clone();
        s.queue.block = Duration::from_millis(1_000);
    })
    .await;
    let job = job_under_way(&app, 800, 200).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.restart();
    let restarted = Instant::now();
    completed(&app, &job, Duration::from_secs(60)).await;
    println!(
        "[{backend:?} Redis restart] job completed {:.2} s after Redis came back",
        restarted.elapsed().as_secs_f64()
    );
    conclude(
        app,
        &[&job],
        &mock,
        &format!("{backend:?} Redis restart mid-job"),
        Duplicates::at_most(
            HELD_REDIS,
            "items held when Redis died whose acknowledgement or retry failed are processed again (those committed skip)",
        ),
    )
    .await;
}

/// Redis stalls (connections open, nothing answers) for 3 s mid-job, then answers slowly: the
/// command and blocking-read time-outs notice, reconnect, and nobody stays stuck.
async fn redis_stalled_then_slow_mid_job(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(20)).await;
    let proxy = Proxy::for_url(&redis_url()).await;
    let proxied = proxy.rewrite(&redis_url());
    let mut app = app_with(backend, &mock.base_url(), |s| {
        s.redis.url = proxied.clone();
        s.redis.command_timeout = Duration::from_millis(1_000);
    })
    .await;
    app.redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
        .await
        .unwrap();
    let job = job_under_way(&app, 1_000, 200).await;
    stall_then_slow(&proxy).await;
    let back = Instant::now();
    completed(&app, &job, Duration::from_secs(60)).await;
    println!(
        "[{backend:?} Redis stalled 3 s, slow 2 s] job completed {:.2} s after Redis answered normally again",
        back.elapsed().as_secs_f64()
    );
    conclude(
        app,
        &[&job],
        &mock,
        &format!("{backend:?} Redis stalled then slow"),
        Duplicates::at_most(
            HELD_REDIS,
            "items held whose acknowledgement timed out are processed again (those committed skip)",
        ),
    )
    .await;
}

/// PostgreSQL stalls (queries hang, connections stay open) for 3 s mid-job, then answers
/// slowly for 2 s: work waits and resumes; nothing is lost or counted twice.
async fn postgres_stalled_then_slow_mid_job(backend: Backend) {
    assert_eq!(backend, Backend::Postgres);
    let mock = MockProvider::start(script_with_latency(20)).await;
    let (app, proxy) = app_behind_a_postgres_proxy(&mock, |_| {}).await;
    let job = job_under_way(&app, 1_000, 200).await;
    stall_then_slow(&proxy).await;
    completed(&app, &job, Duration::from_secs(60)).await;
    conclude(
        app,
        &[&job],
        &mock,
        "PostgreSQL stalled then slow",
        Duplicates::zero("queries wait, nothing is redone"),
    )
    .await;
}

/// Outage length for the proxy scenarios.
const OUTAGE: Duration = Duration::from_secs(10);

/// PostgreSQL unreachable (connections reset, new ones refused) for 10 s mid-job.
async fn postgres_unreachable_mid_job(backend: Backend) {
    assert_eq!(backend, Backend::Postgres);
    if std::env::var("EMBEDQ_TEST_LOG").is_ok() {
        embedq::telemetry::init(false, embedq::telemetry::DEFAULT_FILTER);
    }
    let mock = MockProvider::start(script_with_latency(20)).await;
    let (app, proxy) = app_behind_a_postgres_proxy(&mock, |s| {
        s.database.acquire_timeout = Duration::from_millis(1_000)
    })
    .await;
    let job = job_under_way(&app, 1_000, 200).await;
    let before = app.job(&job).await["completed"].as_i64().unwrap();
    proxy.cut();
    tokio::time::sleep(OUTAGE).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "readiness must see the database gone: {ready}");
    proxy.restore();
    let back = Instant::now();
    completed(&app, &job, Duration::from_secs(60)).await;
    println!(
        "[PostgreSQL unreachable {} s] {before} completed at the cut; job completed {:.2} s after the database came back",
        OUTAGE.as_secs(),
        back.elapsed().as_secs_f64()
    );
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert!(
        report.max_attempts <= 1,
        "a database outage must not use attempts"
    );
    report.expect(
        "PostgreSQL unreachable 10 s",
        Duplicates::zero("nothing is embedded while items cannot be loaded; embedded items wait in the status writer until it commits"),
    );
    app.stop().await;
}

/// The provider unreachable mid-job (connections reset, then refused): calls wait behind the
/// open circuit without using attempts, and the job completes once it is back.
async fn provider_unreachable_mid_job(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(20)).await;
    let proxy = Proxy::for_url(&mock.base_url()).await;
    let app = app_with(backend, &proxy.rewrite(&mock.base_url()), |_| {}).await;
    let job = job_under_way(&app, 1_000, 200).await;
    proxy.down();
    let outage = if backend == Backend::Postgres {
        OUTAGE
    } else {
        Duration::from_secs(4)
    };
    tokio::time::sleep(outage).await;
    let during = mock.audit().requests;
    proxy.restore();
    let back = Instant::now();
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    println!(
        "[{backend:?} provider unreachable {} s] job {} {:.2} s after the provider came back ({during} requests reached it before/while it was cut)",
        outage.as_secs(),
        done["state"],
        back.elapsed().as_secs_f64()
    );
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert!(
        report.max_attempts <= 2,
        "an unreachable provider must not use attempts (the requests cut in flight may use one)"
    );
    report.expect(
        &format!("{backend:?} provider unreachable"),
        Duplicates::at_most(
            support::held_items(&app.settings),
            "the requests in flight when it went down, if the provider had already embedded them",
        ),
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Provider storms and limits
// ---------------------------------------------------------------------------------------------

async fn storm(backend: Backend, retry_after: bool) {
    let mock = MockProvider::start(MockScript {
        storm_429: 25,
        retry_after_on_429: retry_after,
        ..script_with_latency(5)
    })
    .await;
    let app = app_with(backend, &mock.base_url(), |s| {
        s.retry.max_retries = 5;
    })
    .await;
    app.seed_items("ctx", "it", 300).await;
    let job = context_job(&app).await;
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    let audit = mock.audit();
    assert_eq!(
        audit.by_status.get(&429),
        Some(&25),
        "{:?}",
        audit.by_status
    );
    assert_eq!(done["state"], "COMPLETED", "{done}");
    conclude(
        app,
        &[&job],
        &mock,
        &format!(
            "{backend:?} 429 storm {} Retry-After",
            if retry_after { "with" } else { "without" }
        ),
        Duplicates::zero("a 429 embeds nothing"),
    )
    .await;
}

async fn a_429_storm_with_retry_after(backend: Backend) {
    storm(backend, true).await
}

async fn a_429_storm_without_retry_after(backend: Backend) {
    storm(backend, false).await
}

/// An exhausted quota pauses intake after one request, burns no attempt and says why; once the
/// quota is back an operator resumes and the job completes.
async fn exhausted_quota_pauses_until_resumed(backend: Backend) {
    let mock = MockProvider::start(MockScript {
        insufficient_quota: true,
        ..script_with_latency(5)
    })
    .await;
    let app = app_with(backend, &mock.base_url(), |_| {}).await;
    app.seed_items("ctx", "it", 200).await;
    let job = context_job(&app).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let (status, body) = app.get("/readyz").await;
            status == 503
                && body["checks"]["pipeline"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("quota"))
        })
        .await,
        "readiness does not say the quota is exhausted: {}",
        app.get("/readyz").await.1
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mock.audit().requests,
        1,
        "requests after the quota error: {:?}",
        mock.audit().by_status
    );
    assert_eq!(
        app.max_attempts().await,
        0,
        "the quota error burnt attempts"
    );
    mock.set_script(script_with_latency(5));
    assert_eq!(app.post_json("/v1/resume", &json!({})).await.0, 202);
    completed(&app, &job, Duration::from_secs(30)).await;
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert_eq!(report.max_attempts, 1);
    report.expect(
        &format!("{backend:?} exhausted quota"),
        Duplicates::zero("the refused request embedded nothing"),
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Jobs and operators
// ---------------------------------------------------------------------------------------------

/// Two jobs over the same items at once: each counts every item once; an item is embedded
/// again only if both jobs had it in flight at the same moment.
async fn the_same_items_in_two_overlapping_jobs(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(20)).await;
    let app = app_with(backend, &mock.base_url(), |_| {}).await;
    app.seed_items("ctx", "it", 600).await;
    let first = context_job(&app).await;
    let ids: Vec<String> = (0..600).step_by(2).map(|i| format!("it-{i:06}")).collect();
    let second = app
        .create_job(json!({"type": "items", "item_ids": ids}))
        .await;
    for job in [&first, &second] {
        completed(&app, job, Duration::from_secs(60)).await;
    }
    let report = app.check_invariants(&[&first, &second], Some(&mock)).await;
    let second_job = app.job(&second).await;
    println!(
        "[{backend:?} overlapping jobs] second job: {} completed, {} skipped",
        second_job["completed"], second_job["skipped"]
    );
    report.expect(
        &format!("{backend:?} overlapping jobs"),
        Duplicates::at_most(
            support::held_items(&app.settings),
            "items loaded by both jobs before either committed them are embedded twice; later ones are skipped",
        ),
    );
    app.stop().await;
}

/// A second daemon given the same consumer name is refused while the first works; the first
/// completes its job untouched.
async fn a_consumer_name_given_twice_is_refused_mid_job(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(20)).await;
    // Unique per test: actor names derive from it, and tests share one process.
    let name = format!("replica-{}", uuid::Uuid::new_v4().simple());
    let app = app_with(backend, &mock.base_url(), |s| {
        s.queue.consumer_name = name.clone();
    })
    .await;
    let job = job_under_way(&app, 400, 50).await;
    let db = TestDatabase::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::test_settings(&db.url, dir.path());
    settings.redis.prefix = app.settings.redis.prefix.clone();
    settings.queue.consumer_name = name.clone();
    let refused = embedq::startup::Application::build(settings).await;
    let err = refused.err().expect("the second daemon must not start");
    // The lease's own refusal (not some other start-up error that happens to name it).
    assert!(
        matches!(
            &err,
            embedq::startup::StartupError::Queue(embedq::queue::QueueError::ConsumerNameTaken(n))
                if *n == name
        ),
        "{err}"
    );
    completed(&app, &job, Duration::from_secs(60)).await;
    conclude(
        app,
        &[&job],
        &mock,
        &format!("{backend:?} consumer name given twice"),
        Duplicates::zero("the second daemon never consumed"),
    )
    .await;
}

/// Pause with work in flight: what was taken finishes, then nothing moves; resume finishes.
async fn pause_with_work_in_flight_then_resume(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(100)).await;
    let app = app_with(backend, &mock.base_url(), |s| {
        s.queue.task_credits = 8;
    })
    .await;
    let job = job_under_way(&app, 800, 64).await;
    assert_eq!(app.post_json("/v1/pause", &json!({})).await.0, 202);
    // In-flight work settles, then the job stands still.
    let mut previous = -1;
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let done = app.job(&job).await["done"].as_i64().unwrap();
        if done == previous {
            break;
        }
        previous = done;
    }
    let requests = mock.audit().requests;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mock.audit().requests, requests, "requests while paused");
    assert!(previous < 800, "the pause stopped nothing");
    let (_, ready) = app.get("/readyz").await;
    assert!(
        ready.to_string().contains("paused by an operator"),
        "{ready}"
    );
    assert_eq!(app.post_json("/v1/resume", &json!({})).await.0, 202);
    completed(&app, &job, Duration::from_secs(60)).await;
    conclude(
        app,
        &[&job],
        &mock,
        &format!("{backend:?} pause then resume ({previous} done while paused)"),
        Duplicates::zero("paused work waits, nothing is redone"),
    )
    .await;
}

/// Malformed entries written straight to the tasks stream mid-job are dead-lettered with their
/// reason; the daemon keeps working.
async fn malformed_task_entries_are_dead_lettered(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(10)).await;
    let app = app_with(backend, &mock.base_url(), |_| {}).await;
    app.seed_items("ctx", "it", 300).await;
    let job = context_job(&app).await;
    let mut redis = app.redis.clone();
    let stream = app.keys.tasks_stream(embedq::domain::Priority::Normal);
    for fields in [
        vec![("v", "1"), ("task", "not json")],
        vec![("v", "9"), ("task", "{}")],
        vec![("nothing", "useful")],
        vec![("v", "1"), ("task", r#"{"job_id":"x","items":[]}"#)],
    ] {
        xadd(&mut redis, &stream, &fields).await;
    }
    completed(&app, &job, Duration::from_secs(60)).await;
    let report = app.check_invariants(&[&job], Some(&mock)).await;
    assert_eq!(report.malformed_dead_letters, 4);
    assert_eq!(app.get("/readyz").await.0, 200);
    report.expect(
        &format!("{backend:?} malformed task entries"),
        Duplicates::zero("nothing is sent twice"),
    );
    app.stop().await;
}

/// Items upserted again with the same content stay as they are; a job over them embeds
/// nothing and counts every item skipped.
async fn an_update_that_does_not_change_content(backend: Backend) {
    let mock = MockProvider::start(script_with_latency(5)).await;
    let app = app_with(backend, &mock.base_url(), |_| {}).await;
    app.seed_items("ctx", "it", 200).await;
    let first = context_job(&app).await;
    app.wait_finished(&first, Duration::from_secs(30)).await;
    let calls = mock.audit().requests;
    let items: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("it-{i:06}"), "content": format!("passage {i} of ctx")}))
        .collect();
    let (status, counts) = app
        .post_json("/v1/contexts/ctx/items", &json!({"items": items}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (counts["unchanged"].as_u64(), counts["changed"].as_u64()),
        (Some(200), Some(0)),
        "{counts}"
    );
    let second = context_job(&app).await;
    let done = app.wait_finished(&second, Duration::from_secs(30)).await;
    assert_eq!(
        (done["state"].as_str(), done["skipped"].as_i64()),
        (Some("COMPLETED"), Some(200)),
        "{done}"
    );
    assert_eq!(
        mock.audit().requests,
        calls,
        "unchanged content was embedded"
    );
    conclude(
        app,
        &[&first, &second],
        &mock,
        &format!("{backend:?} update without a content change"),
        Duplicates::zero("nothing changed, nothing is embedded again"),
    )
    .await;
}

on_both_backends!(
    sigkill_mid_batch_completes_after_the_visibility_timeout,
    sigkill_while_requests_mix_two_jobs,
    sigterm_mid_job_finishes_in_flight_batches,
    redis_restart_during_blocking_reads_mid_job,
    provider_unreachable_mid_job,
    a_429_storm_with_retry_after,
    a_429_storm_without_retry_after,
    exhausted_quota_pauses_until_resumed,
    the_same_items_in_two_overlapping_jobs,
    a_consumer_name_given_twice_is_refused_mid_job,
    pause_with_work_in_flight_then_resume,
    malformed_task_entries_are_dead_lettered,
    an_update_that_does_not_change_content,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_10_s_mid_job() {
    postgres_unreachable_mid_job(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stalled_then_slow() {
    postgres_stalled_then_slow_mid_job(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_then_slow() {
    redis_stalled_then_slow_mid_job(Backend::Postgres).await
}
