//! Test support: the whole application on a random port with a fresh database (a new
//! PostgreSQL database, or a temporary SQLite file) and its own Redis key prefix, so tests run
//! in parallel against the machine's real Redis and PostgreSQL. Also: a throw-away
//! `redis-server` the test can kill and restart, and the daemon as a child process the test
//! can SIGKILL.

#![allow(dead_code)]

pub mod daemon;
pub mod invariants;
pub mod mock_provider;
pub mod proxy;
pub mod redis_server;
pub mod vectors;

use embedq::config::Settings;
use embedq::queue::Keys;
use embedq::shutdown::Shutdown;
use embedq::startup::Application;
use embedq::store::Store;
use mock_provider::{MockProvider, MockScript};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};

/// PostgreSQL server used by the tests; `EMBEDQ_TEST_PG` overrides it.
pub fn postgres_server() -> String {
    std::env::var("EMBEDQ_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis used by the tests; `EMBEDQ_TEST_REDIS` overrides it.
pub fn redis_url() -> String {
    std::env::var("EMBEDQ_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                use sqlx::Connection;
                let name = format!("embedq_test_{}", uuid::Uuid::new_v4().simple());
                let admin = format!("{}/postgres", postgres_server());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running for the tests");
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .expect("create test database");
                Self {
                    url: format!("{}/{name}", postgres_server()),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("embedq.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }
}

/// The dimension the mock provider's vectors have in tests.
pub const TEST_DIMENSION: usize = 8;

/// Settings for a test: defaults, a random port, the given database, vectors under
/// `vectors_dir` (or a collection of its own on `QDRANT_URL`, see [`vectors`]), a fresh Redis
/// prefix, short timeouts, and a provider URL where nothing listens (tests that embed point
/// it at a mock provider).
pub fn test_settings(database_url: &str, vectors_dir: &std::path::Path) -> Settings {
    let mut s = Settings::defaults();
    s.server.listen = "127.0.0.1:0".parse().unwrap();
    s.database.url = database_url.to_owned();
    s.vectors = vectors::settings(vectors_dir);
    s.embedding.provider = embedq::config::Provider::Openai;
    s.embedding.model = "text-embedding-3-small".into();
    s.embedding.dimension = TEST_DIMENSION;
    s.embedding.base_url = format!("http://127.0.0.1:{}/v1", free_port());
    s.embedding.timeout = Duration::from_millis(5_000);
    s.retry.base_backoff = Duration::from_millis(50);
    s.retry.max_backoff = Duration::from_millis(1_000);
    s.pipeline.status_flush = Duration::from_millis(20);
    s.database.max_connections = 4;
    s.redis.url = redis_url();
    s.redis.prefix = format!("embedq-test-{}", uuid::Uuid::new_v4().simple());
    s.queue.block = Duration::from_millis(200);
    s.queue.visibility_timeout = Duration::from_millis(3_000);
    s
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub settings: Settings,
    pub shutdown: Shutdown,
    pub handle: tokio::task::JoinHandle<Result<(), embedq::startup::StartupError>>,
    pub db: TestDatabase,
    pub vectors: std::sync::Arc<dyn embedq::vectors::VectorStore>,
    /// Removed by `stop`; kept when a test panics, since the engine flushes into it while the
    /// runtime shuts down.
    pub vectors_dir: std::path::PathBuf,
    /// The daemon's consumer name (faults are armed per instance).
    pub instance: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        tracing_subscriber_init();
        let db = TestDatabase::create(backend).await;
        let vectors_dir = tempfile::tempdir().expect("temp dir").keep();
        let mut settings = test_settings(&db.url, &vectors_dir);
        adjust(&mut settings);
        Self::start(settings, db, vectors_dir).await
    }

    pub async fn start(
        settings: Settings,
        db: TestDatabase,
        vectors_dir: std::path::PathBuf,
    ) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("app starts");
        let vectors = app.vector_store();
        let instance = app.consumer_name().to_owned();
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown();
        let handle = tokio::spawn(app.run_until_stopped());
        let mut store_settings = settings.database.clone();
        store_settings.max_connections = 2;
        let store = Store::connect(&store_settings).await.expect("test store");
        let redis = redis::aio::ConnectionManager::new_lazy_with_config(
            redis::Client::open(settings.redis.url.as_str()).unwrap(),
            redis::aio::ConnectionManagerConfig::new(),
        )
        .expect("test redis");
        Self {
            base,
            http: reqwest::Client::new(),
            store,
            redis,
            keys: Keys::new(settings.redis.prefix.clone()),
            settings,
            shutdown,
            handle,
            db,
            vectors,
            vectors_dir,
            instance,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Upserts `n` items `{prefix}-{i:06}` into `context`, in requests of 1,000.
    pub async fn seed_items(&self, context: &str, prefix: &str, n: usize) {
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(1000) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"id": format!("{prefix}-{i:06}"), "content": format!("passage {i} of {context}")}))
                .collect();
            let (status, body) = self
                .post_json(
                    &format!("/v1/contexts/{context}/items"),
                    &json!({"items": items}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }

    pub async fn create_job(&self, scope: Value) -> String {
        let (status, body) = self.post_json("/v1/jobs", &json!({"scope": scope})).await;
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the job's planning is finished and returns the job.
    pub async fn wait_planned(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if job["planned"].as_bool() == Some(true) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not planned within {within:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every item id on the tasks streams, in stream order, interactive first (duplicates
    /// kept).
    pub async fn planned_item_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for stream in self.keys.tasks_streams() {
            ids.extend(tasks_on_stream(&mut self.redis.clone(), &stream).await);
        }
        ids
    }

    pub async fn item_count(&self) -> i64 {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) AS n FROM items")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    pub async fn job_count(&self) -> i64 {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) AS n FROM jobs")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// Waits until the job reaches a final state and returns it.
    pub async fn wait_finished(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if matches!(
                job["state"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            ) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not finished within {within:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Items by status.
    pub async fn status_counts(&self) -> std::collections::BTreeMap<String, i64> {
        use sqlx::Row;
        sqlx::query("SELECT status, COUNT(*) AS n FROM items GROUP BY status")
            .fetch_all(self.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("status").unwrap(), r.try_get("n").unwrap()))
            .collect()
    }

    /// Ids of the items in `status` now (the scope a `failed` job will have, say).
    pub async fn items_with_status(&self, status: &str) -> std::collections::HashSet<String> {
        use sqlx::Row;
        sqlx::query("SELECT id FROM items WHERE status = $1")
            .bind(status.to_owned())
            .fetch_all(self.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("id").unwrap())
            .collect()
    }

    /// Highest attempt count of any item.
    pub async fn max_attempts(&self) -> i64 {
        use sqlx::Row;
        sqlx::query("SELECT COALESCE(MAX(attempts), 0) AS n FROM items")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// Entries in the dead-letter stream.
    pub async fn dead_letters(&self) -> Vec<std::collections::HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.dead_letters())
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|e| {
                e.map
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                            other => format!("{other:?}"),
                        };
                        (k, text)
                    })
                    .collect()
            })
            .collect()
    }

    /// Stops the daemon and starts it again on the same database, Redis prefix and vectors,
    /// with `adjust` applied to its settings (an operator fixing a setting).
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Settings)) -> Self {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        drop(self.vectors);
        let mut settings = self.settings;
        adjust(&mut settings);
        Self::start(settings, self.db, self.vectors_dir).await
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        delete_prefix(&self.settings.redis.url, self.keys.prefix()).await;
        drop(self.vectors);
        vectors::clean_up(&self.settings.vectors).await;
        let _ = std::fs::remove_dir_all(&self.vectors_dir);
    }
}

/// Removes every key under a test's prefix, so runs leave the shared Redis as they found it.
pub async fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(Keys::new(prefix).pattern())
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

/// Inserts `n` items `it-0000001…` into `context` with one SQL statement, for tests and
/// benches that need many items fast. The content hash is a stand-in; planning ignores it.
pub async fn bulk_seed(store: &embedq::store::Store, context: &str, n: i64) {
    use embedq::store::Backend as Db;
    sqlx::query("INSERT INTO contexts (id, created_at, updated_at) VALUES ($1, 0, 0) ON CONFLICT (id) DO NOTHING")
        .bind(context.to_owned())
        .execute(store.pool())
        .await
        .unwrap();
    let sql = match store.backend() {
        Db::Postgres => {
            "INSERT INTO items (id, context_id, content, content_hash, status, attempts, created_at, updated_at) \
             SELECT 'it-' || lpad(g::text, 7, '0'), $1, 'passage ' || g, md5(g::text), 'PENDING', 0, 0, 0 \
             FROM generate_series(1, $2) AS g"
        }
        Db::Sqlite => {
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $2) \
             INSERT INTO items (id, context_id, content, content_hash, status, attempts, created_at, updated_at) \
             SELECT printf('it-%07d', g), $1, 'passage ' || g, hex(g), 'PENDING', 0, 0, 0 FROM s"
        }
    };
    sqlx::query(sql)
        .bind(context.to_owned())
        .bind(n)
        .execute(store.pool())
        .await
        .unwrap();
}

/// Item ids of every task message on a stream.
pub async fn tasks_on_stream(conn: &mut ConnectionManager, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for entry in reply.ids {
        let Some(redis::Value::BulkString(raw)) = entry.map.get("task") else {
            panic!("task entry without payload: {entry:?}");
        };
        let task: Value = serde_json::from_slice(raw).unwrap();
        for item in task["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

/// The mock provider's script for tests: vectors of [`TEST_DIMENSION`], nothing provoked.
pub fn script() -> MockScript {
    MockScript {
        dimension: TEST_DIMENSION,
        ..MockScript::default()
    }
}

/// [`script`] answering after `latency_ms`.
pub fn script_with_latency(latency_ms: u64) -> MockScript {
    MockScript {
        latency: Duration::from_millis(latency_ms),
        ..script()
    }
}

/// An app embedding through the provider at `provider_url` (the mock, or a proxy in front of
/// it), with `adjust` applied to its settings.
pub async fn app_at(
    backend: Backend,
    provider_url: &str,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let url = provider_url.to_owned();
    TestApp::spawn_with(backend, move |s| {
        s.embedding.base_url = url;
        adjust(s);
    })
    .await
}

/// An app embedding through `mock`, with `adjust` applied to its settings.
pub async fn app_with(
    backend: Backend,
    mock: &MockProvider,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    app_at(backend, &mock.base_url(), adjust).await
}

/// Creates a job over context `ctx`.
pub async fn context_job(app: &TestApp) -> String {
    app.create_job(json!({"type": "context", "context_id": "ctx"}))
        .await
}

/// Adds an entry with these raw fields to `stream`, as a client other than the daemon would.
pub async fn xadd(conn: &mut ConnectionManager, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query_async(conn).await.unwrap()
}

/// Polls `check` every 25 ms until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn tracing_subscriber_init() {
    if std::env::var("EMBEDQ_TEST_LOG").is_ok() {
        embedq::telemetry::init(false, embedq::telemetry::DEFAULT_FILTER);
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Items a daemon with these settings holds in memory at most (task credits × items per task):
/// the bound on what a crash can make it embed again.
pub fn held_items(s: &Settings) -> u64 {
    (s.queue.task_credits * s.planner.task_size) as u64
}

/// Runs one scenario on PostgreSQL and on SQLite, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario($crate::support::Backend::Postgres).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario($crate::support::Backend::Sqlite).await
                }
            }
        )+
    };
}
