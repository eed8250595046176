//! Schedules: each tick fires one job cluster-wide, a stale scheduler (its lease gone while it
//! was paused) fires nothing, and a tick missed while every daemon was down fires once on
//! start (or is skipped, as its schedule says).

mod support;

use embedq::config::{MissedTicks, ScheduleSettings, ScheduledJob};
use embedq::domain::{Cron, JobId, JobKind, JobScope, Priority, now_millis};
use embedq::store::{FireOutcome, Firing, NewJob, Store};
use serde_json::Value;
use sqlx::Row;
use std::collections::BTreeMap;
use std::time::Duration;
use support::daemon::{Daemon, owned_env};
use support::{Backend, TestApp, TestDatabase, redis_url};

fn scheduled_job(key: &str) -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: JobKind::Embed,
        scope: JobScope::Failed,
        model: "m".into(),
        priority: Priority::Normal,
        tenant: None,
        idempotency_key: Some(key.into()),
    }
}

async fn fenced_firings_refuse_a_lower_token(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let mut settings = embedq::config::Settings::defaults();
    settings.database.url = db.url.clone();
    let store = Store::connect(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    let fire = |tick: i64, fence: u64| {
        let store = store.clone();
        async move {
            store
                .fire_schedule(Firing {
                    schedule: "s",
                    tick_ms: tick,
                    fence,
                    fired_by: "d",
                    job: Some(scheduled_job(&format!("schedule:s:{tick}"))),
                })
                .await
                .unwrap()
        }
    };
    assert!(matches!(fire(1_000, 5).await, FireOutcome::Fired(Some(_))));
    assert!(matches!(fire(2_000, 6).await, FireOutcome::Fired(Some(_))));
    // The scheduler that held token 5 wakes up: whatever tick it fires is refused.
    match fire(3_000, 5).await {
        FireOutcome::Stale { highest } => assert_eq!(highest, 6),
        other => panic!("a stale token fired: {other:?}"),
    }
    assert!(matches!(fire(2_000, 6).await, FireOutcome::AlreadyFired));
    assert_eq!(store.claim_scheduler_fence(4).await.unwrap(), Err(6));
    assert_eq!(store.claim_scheduler_fence(7).await.unwrap(), Ok(()));
    match store.skip_schedule_to("s", 9_000, 6).await.unwrap() {
        FireOutcome::Stale { highest } => assert_eq!(highest, 7),
        other => panic!("a stale token moved the schedule: {other:?}"),
    }
    let jobs: i64 = sqlx::query("SELECT COUNT(*) FROM jobs")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 2, "one job per fired tick, none for the refused ones");
    let last = store.schedule_last_ticks().await.unwrap();
    assert_eq!(last.get("s"), Some(&2_000));
    let firings = store.recent_firings("s", 10).await.unwrap();
    let ticks: Vec<i64> = firings.iter().map(|f| f.tick_ms).collect();
    assert_eq!(ticks, vec![2_000, 1_000]);
    assert!(firings.iter().all(|f| f.job_id.is_some()));
}

#[tokio::test]
async fn fenced_firings_refuse_a_lower_token_postgres() {
    fenced_firings_refuse_a_lower_token(Backend::Postgres).await;
}

#[tokio::test]
async fn fenced_firings_refuse_a_lower_token_sqlite() {
    fenced_firings_refuse_a_lower_token(Backend::Sqlite).await;
}

/// Firings of a schedule by tick: (fired by, fence, job id).
async fn firings(store: &Store, schedule: &str) -> BTreeMap<i64, (String, i64, Option<String>)> {
    sqlx::query("SELECT tick_ms, fired_by, fence, job_id FROM schedule_firings WHERE schedule = $1")
        .bind(schedule.to_owned())
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// Jobs made by a schedule, by the tick their idempotency key names.
async fn scheduled_jobs(store: &Store, schedule: &str) -> BTreeMap<i64, Vec<String>> {
    let prefix = format!("schedule:{schedule}:");
    let mut jobs: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in sqlx::query("SELECT id, idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL")
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        let key: String = row.get(1);
        if let Some(tick) = key.strip_prefix(&prefix) {
            jobs.entry(tick.parse().unwrap())
                .or_default()
                .push(row.get(0));
        }
    }
    jobs
}

async fn schedules_of(http: &reqwest::Client, port: u16) -> Value {
    http.get(format!("http://127.0.0.1:{port}/v1/schedules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_fire_each_tick_once_and_a_paused_one_fires_nothing_after() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schedules.toml");
    std::fs::write(
        &config,
        r#"
[scheduler]
poll_ms = 100
lease_ms = 1500
misfire_grace_ms = 30000

[[schedules]]
name = "every-second"
cron = "* * * * * *"
job = { type = "embed", scope = { type = "failed" } }
"#,
    )
    .unwrap();
    let prefix = format!("embedq-test-{}", uuid::Uuid::new_v4().simple());
    let config_path = config.display().to_string();
    let redis = redis_url();
    let mut daemons: Vec<Daemon> = Vec::new();
    for i in 0..3 {
        let vectors = dir
            .path()
            .join(format!("vectors-{i}"))
            .display()
            .to_string();
        let name = format!("d{i}");
        let env = owned_env([
            ("EMBEDQ_CONFIG", config_path.as_str()),
            ("EMBEDQ__DATABASE__URL", db.url.as_str()),
            ("EMBEDQ__EMBEDDING__PROVIDER", "openai"),
            ("EMBEDQ__EMBEDDING__MODEL", "m"),
            ("EMBEDQ__EMBEDDING__DIMENSION", "8"),
            ("EMBEDQ__EMBEDDING__BASE_URL", "http://127.0.0.1:9/v1"),
            ("EMBEDQ__REDIS__URL", redis.as_str()),
            ("EMBEDQ__REDIS__PREFIX", prefix.as_str()),
            ("EMBEDQ__QUEUE__CONSUMER_NAME", name.as_str()),
            ("EMBEDQ__VECTORS__PATH", vectors.as_str()),
        ]);
        daemons.push(tokio::task::block_in_place(|| Daemon::start(env)));
    }
    let http = reqwest::Client::new();
    let store = Store::connect(&embedq::config::DatabaseSettings {
        url: db.url.clone(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let started = now_millis();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Exactly one daemon fires; pause it past its lease.
    let mut active = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        let view = schedules_of(&http, d.port).await;
        if view["scheduler"]["active"] == true {
            active.push(i);
        }
    }
    assert_eq!(
        active.len(),
        1,
        "one active scheduler among three: {active:?}"
    );
    let paused = active[0];
    let paused_name = format!("d{paused}");
    let pid = daemons[paused].pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let paused_at = now_millis();
    tokio::time::sleep(Duration::from_secs(4)).await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resumed_at = now_millis();
    tokio::time::sleep(Duration::from_millis(
        20_000u64.saturating_sub((resumed_at - started) as u64),
    ))
    .await;
    let ended = now_millis();
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let view = schedules_of(&http, daemons[paused].port).await;
    assert_eq!(
        view["scheduler"]["active"], false,
        "the paused daemon stood down: {view}"
    );
    let fired = firings(&store, "every-second").await;
    let jobs = scheduled_jobs(&store, "every-second").await;
    // Every tick from the first firing to the end fired once, through the pause: none was
    // lost while the lease passed, none fired twice.
    let first = *fired.keys().next().expect("the schedule fired");
    assert!(
        first <= started + 3_000,
        "first tick {first} long after the start {started}"
    );
    let mut tick = first;
    while tick <= ended - 1_000 {
        assert!(
            fired.contains_key(&tick),
            "tick {tick} did not fire (paused at {paused_at}, resumed at {resumed_at})"
        );
        assert_eq!(
            jobs.get(&tick).map(Vec::len),
            Some(1),
            "tick {tick}: one job"
        );
        tick += 1_000;
    }
    assert_eq!(jobs.len(), fired.len(), "each firing made one job");
    for (tick, (_, _, job)) in &fired {
        assert_eq!(
            job.as_ref(),
            jobs.get(tick).and_then(|j| j.first()),
            "tick {tick}"
        );
    }
    // The paused daemon fired nothing once its lease had passed; whoever fired after it did
    // so under a higher fencing token.
    let lease_gone = paused_at + 1_500;
    for (tick, (by, _, _)) in &fired {
        if *tick > lease_gone + 1_000 {
            assert_ne!(
                by, &paused_name,
                "tick {tick} fired by the paused daemon after its lease"
            );
        }
    }
    let owners: Vec<&String> = fired.values().map(|(by, _, _)| by).collect();
    let handovers = owners.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        handovers <= 1,
        "one handover (the pause), not firing by turns: {owners:?}"
    );
    let fences: Vec<i64> = fired.values().map(|(_, fence, _)| *fence).collect();
    assert!(
        fences.windows(2).all(|w| w[0] <= w[1]),
        "fences never go back: {fences:?}"
    );
    assert!(
        fences.first() < fences.last(),
        "the handover took a higher token: {fences:?}"
    );
    for d in &mut daemons {
        d.terminate();
    }
    support::delete_prefix(&redis, &prefix).await;
}

async fn missed_ticks_fire_once_or_are_skipped(backend: Backend) {
    let every_five = Cron::parse("*/5 * * * * *").unwrap();
    let app = TestApp::spawn_with(backend, |s| {
        s.scheduler.poll = Duration::from_millis(100);
        s.scheduler.lease = Duration::from_millis(1_000);
        s.scheduler.misfire_grace = Duration::from_millis(1_500);
        for (name, missed) in [
            ("catch", MissedTicks::CatchUpOnce),
            ("skip", MissedTicks::Skip),
        ] {
            s.schedules.push(ScheduleSettings {
                name: name.into(),
                cron: every_five.clone(),
                missed,
                job: ScheduledJob::Embed {
                    scope: JobScope::Failed,
                    priority: Some(Priority::Bulk),
                    tenant: None,
                },
            });
        }
    })
    .await;
    // The first tick after start fires for both; then every daemon is down past the next.
    assert!(
        support::wait_until(Duration::from_secs(8), || async {
            firings(&app.store, "catch").await.len() == 1
                && firings(&app.store, "skip").await.len() == 1
        })
        .await,
        "the first tick fired for both schedules"
    );
    let t0 = *firings(&app.store, "catch").await.keys().next().unwrap();
    let app = {
        let TestApp {
            settings,
            db,
            vectors_dir,
            vectors,
            shutdown,
            handle,
            ..
        } = app;
        shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(20), handle).await;
        drop(vectors);
        let down_until = t0 + 7_000;
        tokio::time::sleep(Duration::from_millis(
            (down_until - now_millis()).max(0) as u64
        ))
        .await;
        TestApp::start(settings, db, vectors_dir).await
    };
    let t1 = t0 + 5_000;
    let t2 = t0 + 10_000;
    assert!(
        support::wait_until(Duration::from_secs(8), || async {
            firings(&app.store, "skip").await.contains_key(&t2)
                && firings(&app.store, "catch").await.contains_key(&t2)
        })
        .await,
        "the next tick fired for both schedules"
    );
    let catch: Vec<i64> = firings(&app.store, "catch").await.keys().copied().collect();
    let skip: Vec<i64> = firings(&app.store, "skip").await.keys().copied().collect();
    assert_eq!(
        catch,
        vec![t0, t1, t2],
        "the missed tick fired once, on start"
    );
    assert_eq!(skip, vec![t0, t2], "the missed tick was skipped");
    let jobs = scheduled_jobs(&app.store, "catch").await;
    assert_eq!(jobs.keys().copied().collect::<Vec<_>>(), catch);
    // The scheduled jobs are real jobs, of the configured kind and priority, and end.
    for ids in jobs.values() {
        let job = app.wait_finished(&ids[0], Duration::from_secs(10)).await;
        assert_eq!(job["state"], "COMPLETED", "{job}");
        assert_eq!(job["priority"], "bulk", "{job}");
    }
    let (status, view) = app.get("/v1/schedules?firings=2").await;
    assert_eq!(status, 200, "{view}");
    let listed = &view["schedules"][0];
    assert_eq!(listed["name"], "catch");
    assert_eq!(listed["firings"].as_array().unwrap().len(), 2);
    assert_eq!(listed["firings"][0]["tick_ms"], t2);
    assert!(listed["next_tick_ms"].as_i64().unwrap() > t2);
    assert_eq!(view["scheduler"]["active"], true);
    let (status, _) = app.get("/v1/schedules?firings=101").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_fire_once_or_are_skipped_sqlite() {
    missed_ticks_fire_once_or_are_skipped(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_fire_once_or_are_skipped_postgres() {
    missed_ticks_fire_once_or_are_skipped(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_schedule_removes_old_dead_letters_and_a_reconcile_schedule_makes_reconcile_jobs() {
    let every_second = Cron::parse("* * * * * *").unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.scheduler.poll = Duration::from_millis(100);
        s.scheduler.lease = Duration::from_millis(1_000);
        s.scheduler.misfire_grace = Duration::from_millis(5_000);
        s.schedules.push(ScheduleSettings {
            name: "purge".into(),
            cron: every_second.clone(),
            missed: MissedTicks::Skip,
            job: ScheduledJob::PurgeDeadLetters { older_than_days: 7 },
        });
        s.schedules.push(ScheduleSettings {
            name: "reconcile".into(),
            cron: Cron::parse("*/2 * * * * *").unwrap(),
            missed: MissedTicks::Skip,
            job: ScheduledJob::Reconcile,
        });
    })
    .await;
    // Two dead letters written 8 days ago, one an hour ago.
    let mut conn = app.redis.clone();
    let stream = app.keys.dead_letters();
    let now = now_millis();
    for (i, at) in [
        now - 8 * 86_400_000,
        now - 8 * 86_400_000 + 1,
        now - 3_600_000,
    ]
    .into_iter()
    .enumerate()
    {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg(format!("{at}-0"))
            .arg("kind")
            .arg("item")
            .arg("item_id")
            .arg(format!("it-{i}"))
            .arg("reason")
            .arg("test")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let removed = || async {
        let fired = app.store.recent_firings("purge", 100).await.unwrap();
        fired
            .iter()
            .filter_map(|f| f.result.as_ref()?["dead_letters_removed"].as_u64())
            .sum::<u64>()
    };
    assert!(
        support::wait_until(Duration::from_secs(8), || async { removed().await >= 2 }).await,
        "the purge removed the old dead letters"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(removed().await, 2, "only the two older than 7 days, once");
    let left: Vec<Value> = app.get("/v1/dead-letters").await.1["dead_letters"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["item_id"], "it-2");
    let purges = app.store.recent_firings("purge", 100).await.unwrap();
    assert!(
        purges.iter().all(|f| f.job_id.is_none()),
        "a purge makes no job"
    );

    let reconciles = scheduled_jobs(&app.store, "reconcile").await;
    assert!(!reconciles.is_empty(), "the reconcile schedule fired");
    for ids in reconciles.values() {
        let job = app.wait_finished(&ids[0], Duration::from_secs(10)).await;
        assert_eq!(job["kind"], "reconcile", "{job}");
        assert_eq!(job["state"], "COMPLETED", "{job}");
    }

    // The operator's view of the same.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_embedq"))
            .args(["schedules", "--firings", "1"])
            .env("EMBEDQ_URL", &app.base)
            .env_remove("EMBEDQ_ADMIN_TOKEN")
            .output()
            .unwrap()
    });
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains("purge  * * * * * *  missed: skip"),
        "{listed}"
    );
    assert!(listed.contains("dead_letters_removed"), "{listed}");
    assert!(
        listed.contains("reconcile  */2 * * * * *") && listed.contains("    fired "),
        "{listed}"
    );
    assert!(
        listed.contains("this daemon fires the schedules"),
        "{listed}"
    );
    app.stop().await;
}
