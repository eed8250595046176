//! One checker of every invariant after a scenario (DESIGN.md I1–I3, I7), so each scenario
//! ends with the same proof:
//!
//! - every item in each checked job's scope is in a final state (COMPLETED or FAILED), unless
//!   the job was cancelled;
//! - each job is final, planned, and its counters are exact: completed + failed + skipped +
//!   deleted == total == its per-item outcome rows, counted by outcome; its rows cover the
//!   items of its scope still alive, and every other row is an item deleted since (for
//!   `failed` and `stale_model` jobs, the scope the test recorded when it made the job; a
//!   reconcile job's rows are the items it repaired, so only "every other row" holds); a
//!   DELETED outcome is an item that is gone; COMPLETED iff nothing failed;
//! - the vector store holds one point per COMPLETED item and no other — every stored point is
//!   paged through, so a point left by a deleted item is found by id — each with the mock
//!   provider's vector of its current content (the mock's vectors are SHA-256 of the text,
//!   [`MockProvider::vector_for`]), its content hash, the model, the item's metadata, and a
//!   version no higher than the item's;
//! - attempts within bounds: no item used more than the configured maximum (retries + 1), and
//!   an item embedded used at least one;
//! - every FAILED outcome counted has exactly one dead letter, whose reason and attempts are
//!   the item's, and every dead letter has a reason;
//! - nothing is left behind: no job entry or task pending, queued or waiting for a retry;
//! - the provider's audit: how many inputs were embedded more than once, asserted against what
//!   the scenario expects ([`Report::expect`]).
//!
//! A failure to read any of it (Redis, SQL, the vector store) fails the check; it never reads
//! as "nothing there". It collects every violation and panics once, listing them all.

use super::TestApp;
use super::mock_provider::{Audit, MockProvider};
use embedq::domain::{ContentHash, ItemId, JobId, JobKind, JobScope, JobState};
use embedq::queue::{DeadLetters, Keys, PIPELINE_GROUP, PLANNER_GROUP};
use embedq::store::Store;
use embedq::vectors::VectorStore;
use redis::aio::ConnectionManager;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Where a scenario's state is.
pub struct Scene<'a> {
    pub store: &'a Store,
    pub redis: ConnectionManager,
    pub keys: &'a Keys,
    pub vectors: &'a dyn VectorStore,
    /// `retry.max_retries` of the daemon.
    pub max_retries: u32,
    /// `embedding.model` of the daemon.
    pub model: &'a str,
    /// `embedding.dimension` of the daemon.
    pub dimension: usize,
}

/// How many inputs a scenario may embed twice, and why.
#[derive(Debug, Clone)]
pub enum Duplicates {
    /// None may be: the reason says why.
    Zero(String),
    /// At most this many, for the reason given.
    AtMost(u64, String),
}

impl Duplicates {
    pub fn zero(why: impl Into<String>) -> Self {
        Self::Zero(why.into())
    }

    pub fn at_most(n: u64, why: impl Into<String>) -> Self {
        Self::AtMost(n, why.into())
    }
}

/// What the check found (all invariants held, or it panicked).
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub items: usize,
    pub completed: usize,
    pub failed: usize,
    pub skipped: i64,
    pub deleted: i64,
    pub points: u64,
    pub max_attempts: i64,
    pub dead_letters: usize,
    pub malformed_dead_letters: usize,
    /// Inputs the provider embedded more than once: sum over texts of (times - 1).
    pub duplicates: u64,
    /// Provider requests, by status.
    pub by_status: BTreeMap<u16, u64>,
}

impl Report {
    /// Prints the scenario's line and asserts its duplicate count is what it expects.
    pub fn expect(&self, scenario: &str, duplicates: Duplicates) {
        let (bound, why) = match &duplicates {
            Duplicates::Zero(why) => (0, why.as_str()),
            Duplicates::AtMost(n, why) => (*n, why.as_str()),
        };
        println!(
            "[{scenario}] invariants hold: {} items ({} completed, {} failed, {} skipped, {} deleted), {} points, max attempts {}, {} dead letters ({} malformed entries); duplicates: {} (at most {bound}: {why})",
            self.items,
            self.completed,
            self.failed,
            self.skipped,
            self.deleted,
            self.points,
            self.max_attempts,
            self.dead_letters,
            self.malformed_dead_letters,
            self.duplicates,
        );
        assert!(
            self.duplicates <= bound,
            "[{scenario}] {} inputs embedded twice; expected at most {bound} ({why})",
            self.duplicates
        );
    }
}

struct ItemRow {
    id: String,
    context_id: String,
    content: String,
    content_hash: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    embedded_hash: Option<String>,
    embedded_model: Option<String>,
    version: i64,
    metadata: embedq::domain::Metadata,
}

/// Ids of deleted items (tombstones).
async fn deleted_items(store: &Store) -> HashSet<String> {
    sqlx::query("SELECT id FROM item_tombstones")
        .fetch_all(store.pool())
        .await
        .expect("read tombstones")
        .iter()
        .map(|r| r.try_get("id").unwrap())
        .collect()
}

async fn all_items(store: &Store) -> HashMap<String, ItemRow> {
    sqlx::query(
        "SELECT id, context_id, content, content_hash, status, attempts, last_error, \
         embedded_hash, embedded_model, version, metadata FROM items",
    )
    .fetch_all(store.pool())
    .await
    .expect("read items")
    .iter()
    .map(|r| {
        let row = ItemRow {
            id: r.try_get("id").unwrap(),
            context_id: r.try_get("context_id").unwrap(),
            content: r.try_get("content").unwrap(),
            content_hash: r.try_get("content_hash").unwrap(),
            status: r.try_get("status").unwrap(),
            attempts: r.try_get("attempts").unwrap(),
            last_error: r.try_get("last_error").unwrap(),
            embedded_hash: r.try_get("embedded_hash").unwrap(),
            embedded_model: r.try_get("embedded_model").unwrap(),
            version: r.try_get("version").unwrap(),
            metadata: embedq::domain::Metadata::from_stored(
                r.try_get::<Option<String>, _>("metadata")
                    .unwrap()
                    .as_deref(),
            )
            .expect("stored metadata parses"),
        };
        (row.id.clone(), row)
    })
    .collect()
}

/// (item, outcome) rows of one job: every item it planned, with its outcome once final.
async fn job_items(store: &Store, job: &str) -> Vec<(String, Option<String>)> {
    sqlx::query("SELECT item_id, outcome FROM job_items WHERE job_id = $1")
        .bind(job.to_owned())
        .fetch_all(store.pool())
        .await
        .expect("read job_items")
        .iter()
        .map(|r| (r.try_get("item_id").unwrap(), r.try_get("outcome").unwrap()))
        .collect()
}

/// Entries pending in a group; a missing stream or group counts as none pending (it was never
/// created, or Redis restarted), any other error fails the check.
async fn pending(redis: &mut ConnectionManager, stream: &str, group: &str) -> u64 {
    let reply: Result<redis::Value, redis::RedisError> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(redis)
        .await;
    match reply {
        Ok(redis::Value::Array(v)) => match v.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XPENDING {stream} {group}: unexpected reply {other:?}"),
        },
        Ok(other) => panic!("XPENDING {stream} {group}: unexpected reply {other:?}"),
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => panic!("XPENDING {stream} {group}: {e}"),
    }
}

/// What is still queued: (job entries pending, on the jobs stream, tasks pending, on the tasks
/// streams of every priority, retries waiting).
async fn leftovers(redis: &mut ConnectionManager, keys: &Keys) -> [u64; 5] {
    let jobs_pending = pending(redis, &keys.jobs_stream(), PLANNER_GROUP).await;
    let mut tasks_pending = 0;
    let mut tasks = 0;
    for stream in keys.tasks_streams() {
        tasks_pending += pending(redis, &stream, PIPELINE_GROUP).await;
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(redis)
            .await
            .expect("read a tasks stream's length (XLEN)");
        tasks += len;
    }
    let (jobs, retries): (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(keys.jobs_stream())
        .cmd("ZCARD")
        .arg(keys.retries())
        .query_async(redis)
        .await
        .expect("read queue lengths (XLEN, ZCARD)");
    [jobs_pending, jobs, tasks_pending, tasks, retries]
}

/// Checks every invariant for `jobs` (ids); `scopes` gives the item ids of jobs whose scope
/// the end state cannot tell (`failed`, `stale_model`); `audit` is the mock provider's, when
/// one was used. Panics listing every violation; returns the figures otherwise.
pub async fn check(
    scene: &Scene<'_>,
    jobs: &[&str],
    scopes: &HashMap<String, HashSet<String>>,
    audit: Option<&Audit>,
) -> Report {
    let mut problems: Vec<String> = Vec::new();
    let mut report = Report::default();
    let mut redis = scene.redis.clone();

    // Nothing left behind (acknowledgement follows the commit that finished the job, so wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = leftovers(&mut redis, scene.keys).await;
    while left != [0; 5] && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = leftovers(&mut redis, scene.keys).await;
    }
    if left != [0; 5] {
        problems.push(format!(
            "left behind: {} job entries pending, {} on the jobs stream, {} tasks pending, {} on the tasks stream, {} retries waiting",
            left[0], left[1], left[2], left[3], left[4]
        ));
    }

    let items = all_items(scene.store).await;
    let deleted = deleted_items(scene.store).await;
    let limit = i64::from(scene.max_retries) + 1;
    let dead = DeadLetters::new(scene.redis.clone(), scene.keys)
        .all()
        .await
        .expect("read dead letters");
    let mut dead_items: HashMap<(String, String), Vec<&embedq::queue::DeadLetter>> = HashMap::new();
    for d in &dead {
        if d.reason.trim().is_empty() {
            problems.push(format!("dead letter {} has no reason", d.id));
        }
        if d.kind == "item" {
            let key = (
                d.job_id.clone().unwrap_or_default(),
                d.item_id.clone().unwrap_or_default(),
            );
            dead_items.entry(key).or_default().push(d);
        } else {
            report.malformed_dead_letters += 1;
        }
    }
    report.dead_letters = dead.len();

    let mut in_scope: HashSet<String> = HashSet::new();
    for &job in jobs {
        let id = JobId::parse(job).expect("job id");
        let Some(record) = scene.store.get_job(id).await.expect("read job") else {
            problems.push(format!("job {job} does not exist"));
            continue;
        };
        let all_rows = job_items(scene.store, job).await;
        let unfinished: Vec<&String> = all_rows
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
            .collect();
        let rows: Vec<(String, String)> = all_rows
            .iter()
            .filter_map(|(i, o)| o.clone().map(|o| (i.clone(), o)))
            .collect();
        let mut by_outcome: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, outcome) in &rows {
            *by_outcome.entry(outcome.as_str()).or_default() += 1;
        }
        let counted = (
            by_outcome.get("COMPLETED").copied().unwrap_or(0),
            by_outcome.get("FAILED").copied().unwrap_or(0),
            by_outcome.get("SKIPPED").copied().unwrap_or(0),
            by_outcome.get("DELETED").copied().unwrap_or(0),
        );
        let counters = (
            record.completed,
            record.failed,
            record.skipped,
            record.deleted,
        );
        if counters != counted {
            problems.push(format!(
                "job {job}: counters (completed, failed, skipped, deleted) {counters:?} but outcome rows {counted:?}"
            ));
        }
        for (item, outcome) in &rows {
            if outcome == "DELETED" && items.contains_key(item) {
                problems.push(format!(
                    "job {job}: item {item} counted DELETED but it exists"
                ));
            }
        }
        report.skipped += record.skipped;
        report.deleted += record.deleted;
        let done = record.completed + record.failed + record.skipped + record.deleted;
        if record.state == JobState::Cancelled {
            // Items in flight at the cancel finish and count; queued work is dropped.
            if done > record.total && record.planned_at.is_some() {
                problems.push(format!(
                    "cancelled job {job}: {done} counted of {}",
                    record.total
                ));
            }
        } else {
            if record.planned_at.is_none() {
                problems.push(format!("job {job} was never fully planned"));
            }
            if !unfinished.is_empty() {
                problems.push(format!(
                    "job {job} is {:?} with {} planned items without an outcome, e.g. {:?}",
                    record.state,
                    unfinished.len(),
                    &unfinished[..unfinished.len().min(5)]
                ));
            }
            if done != record.total {
                problems.push(format!(
                    "job {job}: completed + failed + skipped + deleted = {done}, total {} ({:?})",
                    record.total, record.state
                ));
            }
            let want = if record.failed > 0 {
                JobState::Failed
            } else {
                JobState::Completed
            };
            if record.state != want {
                problems.push(format!(
                    "job {job} is {:?} with {} failed; expected {want:?}",
                    record.state, record.failed
                ));
            }
            let scope: Option<HashSet<String>> = match &record.scope {
                JobScope::Context { context_id } => Some(
                    items
                        .values()
                        .filter(|i| i.context_id == context_id.as_str())
                        .map(|i| i.id.clone())
                        .collect(),
                ),
                JobScope::Items { item_ids } => {
                    Some(item_ids.iter().map(|i| i.as_str().to_owned()).collect())
                }
                JobScope::All => Some(items.keys().cloned().collect()),
                JobScope::Failed | JobScope::StaleModel => scopes.get(job).cloned(),
            };
            let rows_ids: HashSet<String> = all_rows.iter().map(|(i, _)| i.clone()).collect();
            if record.total != rows_ids.len() as i64 {
                problems.push(format!(
                    "job {job}: total {} but {} items planned",
                    record.total,
                    rows_ids.len()
                ));
            }
            match scope {
                Some(scope) => {
                    // Alive items of the scope are all planned; what else was planned, or
                    // what an explicit list names that was not, was deleted meanwhile.
                    let alive: HashSet<&String> =
                        scope.iter().filter(|i| items.contains_key(*i)).collect();
                    // A reconcile job plans only the items it repairs.
                    let repairs_only = record.kind == JobKind::Reconcile;
                    let missing: Vec<&&String> = alive
                        .iter()
                        .filter(|_| !repairs_only)
                        .filter(|i| !rows_ids.contains(**i))
                        .take(5)
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "job {job}: items of its scope without an outcome, e.g. {missing:?}"
                        ));
                    }
                    let extra: Vec<&String> = rows_ids
                        .iter()
                        .filter(|i| !alive.contains(i) && !deleted.contains(*i))
                        .take(5)
                        .collect();
                    if !extra.is_empty() {
                        problems.push(format!(
                            "job {job}: outcomes of items outside its scope, e.g. {extra:?}"
                        ));
                    }
                }
                None => problems.push(format!(
                    "job {job} ({}): give its scope as recorded when it was made (Scopes)",
                    record.scope.kind()
                )),
            }
            in_scope.extend(rows_ids);
        }
        // Each FAILED outcome counted has exactly one dead letter naming the job and item, with
        // the item's reason and attempts while it is still FAILED.
        for (item, outcome) in &rows {
            let letters = dead_items
                .remove(&(job.to_owned(), item.clone()))
                .unwrap_or_default();
            match (outcome.as_str(), letters.as_slice()) {
                ("FAILED", [letter]) => {
                    if let Some(row) = items.get(item)
                        && row.status == "FAILED"
                    {
                        if letter.attempts.map(i64::from) != Some(row.attempts) {
                            problems.push(format!(
                                "item {item}: its dead letter says {:?} attempts, the item {}",
                                letter.attempts, row.attempts
                            ));
                        }
                        if row.last_error.as_deref() != Some(letter.reason.as_str()) {
                            problems.push(format!(
                                "item {item}: its dead letter says {:?}, the item {:?}",
                                letter.reason, row.last_error
                            ));
                        }
                    }
                }
                ("FAILED", letters) => problems.push(format!(
                    "job {job}: item {item} FAILED with {} dead letters (want 1)",
                    letters.len()
                )),
                (_, []) => {}
                (o, letters) => problems.push(format!(
                    "job {job}: item {item} counted {o} but has {} dead letters",
                    letters.len()
                )),
            }
        }
    }
    let checked: HashSet<&str> = jobs.iter().copied().collect();
    for ((job, item), letters) in &dead_items {
        if checked.contains(job.as_str()) {
            problems.push(format!(
                "{} dead letters for item {item} of job {job}, which was not counted FAILED",
                letters.len()
            ));
        }
    }

    // Items: final, attempts within bounds, a reason for each failure.
    for id in &in_scope {
        let Some(item) = items.get(id) else { continue };
        match item.status.as_str() {
            "COMPLETED" => report.completed += 1,
            "FAILED" => {
                report.failed += 1;
                if item.last_error.as_deref().unwrap_or("").trim().is_empty() {
                    problems.push(format!("item {id} FAILED without a reason"));
                }
            }
            other => problems.push(format!("item {id} is {other}, not final")),
        }
    }
    report.items = in_scope.len();
    for item in items.values() {
        report.max_attempts = report.max_attempts.max(item.attempts);
        if item.attempts > limit {
            problems.push(format!(
                "item {} used {} attempts; the limit is {limit}",
                item.id, item.attempts
            ));
        }
        if item.status == "COMPLETED" && item.attempts < 1 {
            problems.push(format!(
                "item {} is COMPLETED with {} attempts",
                item.id, item.attempts
            ));
        }
    }

    // Vectors: one point per COMPLETED item and no other. Every stored point is paged
    // through, so a point whose item is gone is found by its id.
    let mut stored: HashMap<String, embedq::vectors::PointRecord> = HashMap::new();
    let mut from = None;
    loop {
        let page = scene
            .vectors
            .scroll(from, 1_000)
            .await
            .expect("page points");
        for p in page.points {
            if stored
                .insert(p.item_id.as_str().to_owned(), p.clone())
                .is_some()
            {
                problems.push(format!("item {} has two points", p.item_id));
            }
        }
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    report.points = stored.len() as u64;
    let counted = scene.vectors.count().await.expect("count points");
    if counted != report.points {
        problems.push(format!(
            "the store counts {counted} points but paging finds {}",
            report.points
        ));
    }
    for (id, p) in &stored {
        match items.get(id) {
            None => problems.push(format!(
                "a point of item {id} whose item does not exist{} (an orphan)",
                if deleted.contains(id) {
                    ", deleted"
                } else {
                    ""
                }
            )),
            Some(item) if item.status != "COMPLETED" => {
                problems.push(format!("item {id} is {} but has a point", item.status))
            }
            Some(item) if p.version > item.version => problems.push(format!(
                "point of {id} holds version {}, the item is at {}",
                p.version, item.version
            )),
            Some(_) => {}
        }
        if p.dimension != scene.dimension || p.model != scene.model {
            problems.push(format!(
                "point of {id} names model {} of dimension {}",
                p.model, p.dimension
            ));
        }
    }
    let completed: Vec<&ItemRow> = items.values().filter(|i| i.status == "COMPLETED").collect();
    for chunk in completed.chunks(500) {
        let ids: Vec<ItemId> = chunk
            .iter()
            .map(|i| ItemId::parse(i.id.clone()).unwrap())
            .collect();
        let points: HashMap<String, embedq::vectors::VectorPoint> = scene
            .vectors
            .get(&ids)
            .await
            .expect("read points")
            .into_iter()
            .map(|p| (p.item_id.as_str().to_owned(), p))
            .collect();
        for item in chunk {
            let Some(point) = points.get(&item.id) else {
                problems.push(format!("item {} is COMPLETED but has no point", item.id));
                continue;
            };
            if item.embedded_hash.as_deref() != Some(item.content_hash.as_str())
                || item.embedded_model.as_deref() != Some(scene.model)
            {
                problems.push(format!(
                    "item {} COMPLETED but embedded {:?} with {:?}, content is {}",
                    item.id, item.embedded_hash, item.embedded_model, item.content_hash
                ));
            }
            let current = ContentHash::of(&item.content);
            if point.content_hash.as_str() != item.content_hash || point.content_hash != current {
                problems.push(format!(
                    "point of {} holds hash {}, the content's is {}",
                    item.id, point.content_hash, item.content_hash
                ));
            }
            if point.model != scene.model {
                problems.push(format!("point of {} names model {}", item.id, point.model));
            }
            if point.metadata != item.metadata {
                problems.push(format!(
                    "point of {} holds metadata {}, the item's is {}",
                    item.id,
                    point.metadata.to_text(),
                    item.metadata.to_text()
                ));
            }
            let expected = MockProvider::vector_for(&item.content, scene.dimension);
            let diff = point
                .vector
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if point.vector.len() != expected.len() || diff > 1e-4 {
                problems.push(format!(
                    "point of {} holds another vector than its content's (max diff {diff})",
                    item.id
                ));
            }
        }
    }

    if let Some(audit) = audit {
        report.duplicates = audit.duplicates();
        report.by_status = audit.by_status.clone();
    }
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(40).collect();
        panic!(
            "{} invariant violations:\n  {}",
            problems.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    report
}

impl TestApp {
    /// The scene of this in-process app.
    pub fn scene(&self) -> Scene<'_> {
        Scene {
            store: &self.store,
            redis: self.redis.clone(),
            keys: &self.keys,
            vectors: self.vectors.as_ref(),
            max_retries: self.settings.retry.max_retries,
            model: &self.settings.embedding.model,
            dimension: self.settings.embedding.dimension,
        }
    }

    /// Checks every invariant for `jobs` (see [`check`]).
    pub async fn check_invariants(&self, jobs: &[&str], mock: Option<&MockProvider>) -> Report {
        self.check_invariants_with(jobs, &HashMap::new(), mock)
            .await
    }

    /// [`TestApp::check_invariants`] with the recorded scopes of `failed` or `stale_model`
    /// jobs.
    pub async fn check_invariants_with(
        &self,
        jobs: &[&str],
        scopes: &HashMap<String, HashSet<String>>,
        mock: Option<&MockProvider>,
    ) -> Report {
        let audit = mock.map(|m| m.audit());
        check(&self.scene(), jobs, scopes, audit.as_ref()).await
    }
}
