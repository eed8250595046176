//! The soak: rounds of a 50,000-item job through the `embedq` binary while a seeded random
//! sequence of faults hits it — SIGKILL and SIGTERM with restarts, actor panics, failed store
//! calls and slow batches armed through `EMBEDQ_FAULTS` at each start, Redis killed and
//! restarted, PostgreSQL and the provider unreachable, 429 storms with and without
//! Retry-After, an exhausted quota, 5xx and broken answers, pause and resume, malformed stream
//! entries, overlapping jobs and unchanged updates — each round ending with the full invariant
//! check.
//!
//! ```sh
//! cargo test --release --test soak -- --rounds 20 [--seed N] [--items 50000] [--backend postgres|sqlite]
//! ```
//!
//! Without `--rounds` it does nothing, so a plain `cargo test` passes over it. Each round prints
//! its seed (round r uses seed N + r), the faults injected and fired, the time it took and the
//! invariant check; the run ends with a summary and exits non-zero if any round failed.

mod support;

use embedq::queue::Keys;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::{Daemon, owned_env};
use support::invariants::{Duplicates, Report, Scene, check};
use support::mock_provider::{MockProvider, MockScript};
use support::proxy::Proxy;
use support::redis_server::RedisServer;
use support::{Backend, TestDatabase};

const MODEL: &str = "text-embedding-3-small";
const VISIBILITY_MS: u64 = 4_000;

struct Options {
    rounds: u64,
    seed: u64,
    items: usize,
    backend: Backend,
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds = value("--rounds")?.parse().expect("--rounds N");
    let seed = value("--seed")
        .map(|s| s.parse().expect("--seed N"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    let items = value("--items")
        .map(|s| s.parse().expect("--items N"))
        .unwrap_or(50_000);
    let backend = match value("--backend").as_deref() {
        None | Some("postgres") => Backend::Postgres,
        Some("sqlite") => Backend::Sqlite,
        Some(other) => panic!("--backend postgres|sqlite, not {other}"),
    };
    Some(Options {
        rounds,
        seed,
        items,
        backend,
    })
}

fn main() {
    let Some(opts) = options() else {
        println!("soak: give --rounds N to run it (see tests/soak.rs)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "soak: {} rounds of {} items on {:?}, seeds {}..{}",
        opts.rounds,
        opts.items,
        opts.backend,
        opts.seed,
        opts.seed + opts.rounds - 1
    );
    let mut failed = Vec::new();
    let started = Instant::now();
    for round in 0..opts.rounds {
        let seed = opts.seed + round;
        let outcome = runtime.block_on(async {
            tokio::spawn(run_round(round + 1, seed, opts.items, opts.backend)).await
        });
        match outcome {
            Ok(()) => {}
            Err(e) => {
                let why = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_else(|| "cancelled".into());
                println!("round {} seed {seed}: FAILED\n{why}", round + 1);
                failed.push(seed);
            }
        }
    }
    println!(
        "soak: {} of {} rounds passed in {:.0} s; failed seeds: {failed:?}",
        opts.rounds - failed.len() as u64,
        opts.rounds,
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// Rules for `EMBEDQ_FAULTS` at one start of the daemon: up to three, at random.
fn random_faults(rng: &mut StdRng, items: usize) -> String {
    const PANICKY: &[&str] = &[
        "task_intake",
        "task_intake_interactive",
        "job_intake",
        "planner",
        "rate_limiter",
        "embedding_pool",
        "embedding_worker",
        "vector_writer",
        "status_writer",
        "retry_scheduler",
    ];
    let count = rng.random_range(0..=3);
    let mut rules = Vec::new();
    for _ in 0..count {
        let n = rng.random_range(1..300);
        let rule = match rng.random_range(0..10) {
            0..=3 => format!("{}:panic@{n}", PANICKY[rng.random_range(0..PANICKY.len())]),
            4 => format!("vector_writer:fail_store@{n}x{}", rng.random_range(1..=3)),
            5 => format!("status_writer:fail_store@{n}x{}", rng.random_range(1..=3)),
            6 => format!(
                "embedding_worker:fail_store@{n}x{}",
                rng.random_range(1..=3)
            ),
            7 => format!("planner:fail_store@{}", rng.random_range(1..20)),
            8 => format!(
                "embedding_worker:delay={}ms@{n}",
                VISIBILITY_MS + rng.random_range(0..VISIBILITY_MS)
            ),
            _ => format!(
                "embedding_worker:panic@1x0#it-{:06}",
                rng.random_range(0..items)
            ),
        };
        rules.push(rule);
    }
    rules.join(",")
}

fn script() -> MockScript {
    MockScript {
        hang_for: Duration::from_secs(2),
        ..support::script_with_latency(3)
    }
}

/// Items the daemon holds in memory at most: 64 task credits × 64 items per task (defaults).
const HELD: u64 = 64 * 64;

struct Round {
    http: reqwest::Client,
    daemon: Daemon,
    store: embedq::store::Store,
    log: Vec<String>,
    started: Instant,
}

impl Round {
    fn note(&mut self, what: String) {
        let line = format!("{:6.1}s {what}", self.started.elapsed().as_secs_f64());
        self.log.push(line);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.daemon.port)
    }

    /// A POST that may meet a daemon briefly unavailable: retried for a while.
    async fn post(&self, path: &str, body: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.post(self.url(path)).json(&body).send().await {
                let status = r.status();
                if status.is_success() {
                    return r.json().await.unwrap_or(Value::Null);
                }
                assert!(
                    status.as_u16() == 503,
                    "{path}: {status} {:?}",
                    r.text().await
                );
            }
            assert!(Instant::now() < deadline, "{path} kept failing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finished(&self, jobs: &[String]) -> bool {
        for job in jobs {
            let id = embedq::domain::JobId::parse(job).unwrap();
            match self.store.get_job(id).await {
                Ok(Some(j)) if j.state.is_final() => {}
                _ => return false,
            }
        }
        true
    }
}

async fn run_round(number: u64, seed: u64, items: usize, backend: Backend) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut redis = RedisServer::start_persistent();
    let mock = MockProvider::start(script()).await;
    let provider = Proxy::for_url(&mock.base_url()).await;
    let db = TestDatabase::create(backend).await;
    let pg = match backend {
        Backend::Postgres => Some(Proxy::for_url(&db.url).await),
        Backend::Sqlite => None,
    };
    let prefix = format!("embedq-soak-{}", uuid::Uuid::new_v4().simple());
    let vectors = tempfile::tempdir().unwrap();
    let fault_log = vectors.path().join("faults.log");

    let mut direct = embedq::config::Settings::defaults().database;
    direct.url = db.url.clone();
    direct.max_connections = 2;
    let store = embedq::store::Store::connect(&direct).await.unwrap();
    store.migrate().await.unwrap();
    let context = embedq::domain::ContextId::parse("soak".to_string()).unwrap();
    let content = |i: usize| format!("passage {i} of the soak");
    for start in (0..items).step_by(1000) {
        let batch: Vec<embedq::store::NewItem> = (start..(start + 1000).min(items))
            .map(|i| embedq::store::NewItem {
                id: embedq::domain::ItemId::parse(format!("it-{i:06}")).unwrap(),
                content: embedq::domain::ItemContent::parse(content(i), 65_536).unwrap(),
                metadata: None,
            })
            .collect();
        store.upsert_items(&context, &batch, &[]).await.unwrap();
    }

    let db_url = pg
        .as_ref()
        .map(|p| p.rewrite(&db.url))
        .unwrap_or(db.url.clone());
    let provider_url = provider.rewrite(&mock.base_url());
    let vectors_path = vectors.path().display().to_string();
    let faults = random_faults(&mut rng, items);
    let env = owned_env([
        ("EMBEDQ_FAULTS", faults.as_str()),
        ("EMBEDQ_FAULTS_LOG", &fault_log.display().to_string()),
        ("EMBEDQ__DATABASE__URL", db_url.as_str()),
        ("EMBEDQ__DATABASE__ACQUIRE_TIMEOUT_MS", "2000"),
        ("EMBEDQ__VECTORS__PATH", vectors_path.as_str()),
        ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
        ("EMBEDQ__EMBEDDING__MODEL", MODEL),
        ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
        ("EMBEDQ__EMBEDDING__BASE_URL", provider_url.as_str()),
        ("EMBEDQ__EMBEDDING__TIMEOUT_MS", "3000"),
        ("EMBEDQ__REDIS__URL", &redis.url()),
        ("EMBEDQ__REDIS__PREFIX", &prefix),
        (
            "EMBEDQ__QUEUE__VISIBILITY_TIMEOUT_MS",
            &VISIBILITY_MS.to_string(),
        ),
        ("EMBEDQ__QUEUE__BLOCK_MS", "500"),
        // 40 requests/s: a round lasts long enough for its faults (and the limiter is exercised).
        ("EMBEDQ__RATE_LIMIT__REQUESTS_PER_MINUTE", "2400"),
        ("EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE", "100000000"),
        ("EMBEDQ__RETRY__BASE_BACKOFF_MS", "100"),
        ("EMBEDQ__RETRY__MAX_BACKOFF_MS", "2000"),
        ("EMBEDQ__SUPERVISION__MAX_RESTARTS", "1000"),
        ("EMBEDQ__SUPERVISION__RESTART_BACKOFF_MS", "50"),
        ("EMBEDQ__PIPELINE__STATUS_FLUSH_MS", "20"),
    ]);
    // Blocking calls on the daemon leave the runtime's other work (proxies, mock) running.
    let daemon = tokio::task::block_in_place(|| Daemon::start(env));
    let mut r = Round {
        http: reqwest::Client::new(),
        daemon,
        store,
        log: Vec::new(),
        started: Instant::now(),
    };
    r.note(format!("started with EMBEDQ_FAULTS={faults:?}"));
    let job = r
        .post(
            "/v1/jobs",
            json!({"scope": {"type": "context", "context_id": "soak"}}),
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut jobs = vec![job.clone()];
    let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(redis.url()).unwrap())
        .await
        .unwrap();
    let keys = Keys::new(prefix.clone());

    let events = rng.random_range(6..=10);
    for _ in 0..events {
        let pause = Duration::from_millis(rng.random_range(300..2_500));
        tokio::time::sleep(pause).await;
        if r.finished(&jobs).await {
            r.note("job finished; no more faults".into());
            break;
        }
        match rng.random_range(0..13) {
            0 | 1 => {
                let faults = random_faults(&mut rng, items);
                r.daemon.set_env("EMBEDQ_FAULTS", &faults);
                tokio::task::block_in_place(|| r.daemon.restart());
                r.note(format!("SIGKILL; restarted with EMBEDQ_FAULTS={faults:?}"));
            }
            2 => {
                let status = tokio::task::block_in_place(|| r.daemon.terminate());
                assert!(status.success(), "SIGTERM: exit status {status}");
                let faults = random_faults(&mut rng, items);
                r.daemon.set_env("EMBEDQ_FAULTS", &faults);
                tokio::task::block_in_place(|| r.daemon.restart());
                r.note(format!(
                    "SIGTERM (exit 0); restarted with EMBEDQ_FAULTS={faults:?}"
                ));
            }
            3 => {
                let down = Duration::from_millis(rng.random_range(200..1_500));
                redis.kill();
                tokio::time::sleep(down).await;
                redis.restart();
                r.note(format!("Redis SIGKILLed, back after {down:?}"));
            }
            4 => match &pg {
                Some(pg) => {
                    let down = Duration::from_millis(rng.random_range(1_000..4_000));
                    pg.cut();
                    tokio::time::sleep(down).await;
                    pg.restore();
                    r.note(format!("PostgreSQL unreachable for {down:?}"));
                }
                None => r.note("(no PostgreSQL to cut with SQLite)".into()),
            },
            5 => {
                let down = Duration::from_millis(rng.random_range(1_000..4_000));
                provider.down();
                tokio::time::sleep(down).await;
                provider.restore();
                r.note(format!("provider unreachable for {down:?}"));
            }
            6 => {
                let storm = rng.random_range(10..60);
                let retry_after = rng.random_bool(0.5);
                mock.set_script(MockScript {
                    storm_429: storm,
                    retry_after_on_429: retry_after,
                    ..script()
                });
                r.note(format!(
                    "429 storm of {storm} {} Retry-After",
                    if retry_after { "with" } else { "without" }
                ));
            }
            7 => {
                mock.set_script(MockScript {
                    insufficient_quota: true,
                    ..script()
                });
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
                mock.set_script(script());
                r.post("/v1/resume", json!({})).await;
                r.note("quota exhausted, restored, resumed".into());
            }
            8 => {
                let ratio = rng.random_range(0.02..0.15);
                mock.set_script(MockScript {
                    server_error_ratio: ratio,
                    bad_body_ratio: ratio / 4.0,
                    hang_ratio: ratio / 20.0,
                    seed: rng.random(),
                    ..script()
                });
                let lasting = Duration::from_millis(rng.random_range(1_000..3_000));
                tokio::time::sleep(lasting).await;
                mock.set_script(script());
                r.note(format!(
                    "{:.0}% 5xx (+ broken bodies, hangs) for {lasting:?}",
                    ratio * 100.0
                ));
            }
            9 => {
                r.post("/v1/pause", json!({})).await;
                let paused = Duration::from_millis(rng.random_range(500..2_000));
                tokio::time::sleep(paused).await;
                r.post("/v1/resume", json!({})).await;
                r.note(format!("paused for {paused:?}, resumed"));
            }
            10 => {
                let n = rng.random_range(1..=3);
                for i in 0..n {
                    let _: Result<String, _> = redis::cmd("XADD")
                        .arg(keys.tasks_stream(embedq::domain::Priority::Normal))
                        .arg("*")
                        .arg("v")
                        .arg(if i % 2 == 0 { "1" } else { "7" })
                        .arg("task")
                        .arg("{broken")
                        .query_async(&mut conn)
                        .await;
                }
                r.note(format!("{n} malformed task entries"));
            }
            11 => {
                let ids: Vec<String> = (0..rng.random_range(50..500))
                    .map(|_| format!("it-{:06}", rng.random_range(0..items)))
                    .collect();
                let answer = r
                    .post(
                        "/v1/jobs",
                        json!({"scope": {"type": "items", "item_ids": ids}}),
                    )
                    .await;
                jobs.push(answer["job_id"].as_str().unwrap().to_owned());
                r.note(format!("an overlapping job over {} items", ids.len()));
            }
            _ => {
                let ids: std::collections::BTreeSet<usize> = (0..rng.random_range(50..500))
                    .map(|_| rng.random_range(0..items))
                    .collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .map(|&i| json!({"id": format!("it-{i:06}"), "content": content(i)}))
                    .collect();
                let answer = r
                    .post("/v1/contexts/soak/items", json!({"items": batch}))
                    .await;
                assert_eq!(answer["changed"], 0, "{answer}");
                r.note(format!(
                    "{} items upserted again unchanged",
                    answer["unchanged"]
                ));
            }
        }
    }

    // Everything back to normal; the jobs must finish.
    mock.set_script(script());
    provider.restore();
    if let Some(pg) = &pg {
        pg.restore();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !r.finished(&jobs).await {
        assert!(
            Instant::now() < deadline,
            "round {number} seed {seed}: jobs not finished within 10 minutes\n{}",
            r.log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = r.started.elapsed();
    let status = tokio::task::block_in_place(|| r.daemon.terminate());
    assert!(status.success(), "final SIGTERM: exit status {status}");

    let fired: Vec<String> = std::fs::read_to_string(&fault_log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, rule)| rule)
                .unwrap_or(l)
                .to_owned()
        })
        .collect();
    let mut vs = embedq::config::Settings::defaults().vectors;
    vs.path = vectors_path.clone();
    let vector_store = embedq::vectors::EdgeVectorStore::open(&vs).unwrap();
    let scene = Scene {
        store: &r.store,
        redis: conn.clone(),
        keys: &keys,
        vectors: &vector_store,
        max_retries: 3,
        model: MODEL,
        dimension: support::TEST_DIMENSION,
    };
    let job_refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    let scopes = std::collections::HashMap::new();
    let audit = mock.audit();
    // Each fault fired, each kill or outage, may make the items held then be embedded again.
    let disruptions = 1
        + fired.len() as u64
        + r.log
            .iter()
            .filter(|l| {
                ["SIGKILL", "SIGTERM", "Redis", "5xx", "cut", "stall"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .count() as u64;
    let log = r.log.join("\n  ");
    let report: Report = {
        let result = std::panic::AssertUnwindSafe(check(&scene, &job_refs, &scopes, Some(&audit)));
        match futures_catch(result).await {
            Ok(report) => report,
            Err(why) => panic!(
                "round {number} seed {seed}: invariants violated\n  {log}\n  fired: {fired:?}\n{why}"
            ),
        }
    };
    let main_job = r
        .store
        .get_job(embedq::domain::JobId::parse(&job).unwrap())
        .await
        .unwrap()
        .unwrap();
    println!(
        "round {number} seed {seed}: PASS in {:.1} s (job {} {:?}: {} completed, {} failed, {} skipped; {} jobs in all)\n  {log}\n  faults fired ({}): {fired:?}\n  provider: {} requests {:?}",
        took.as_secs_f64(),
        job,
        main_job.state,
        main_job.completed,
        main_job.failed,
        main_job.skipped,
        jobs.len(),
        fired.len(),
        audit.requests,
        audit.by_status,
    );
    report.expect(
        &format!("round {number} seed {seed}"),
        Duplicates::at_most(
            disruptions * HELD,
            "the items held in memory at each SIGKILL, crash, outage or lost answer",
        ),
    );
    r.store.close().await;
    drop(vector_store);
    support::delete_prefix(&redis.url(), &prefix).await;
}

/// Runs the check, turning its panic (the list of violations) into an error.
async fn futures_catch<F: std::future::Future<Output = Report>>(
    future: std::panic::AssertUnwindSafe<F>,
) -> Result<Report, String> {
    use std::panic::catch_unwind;
    let mut future = std::pin::pin!(future.0);
    std::future::poll_fn(move |cx| {
        match catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(report)) => std::task::Poll::Ready(Ok(report)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default())),
        }
    })
    .await
}
