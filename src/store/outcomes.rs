//! The pipeline's writes: loading a task's items in one query, and committing a batch of item
//! outcomes in one transaction — item rows, each job's per-item outcome (recorded once, so a
//! task processed twice never counts an item twice), the job counters grown by exactly the rows
//! that changed, and the job's final state when its counters reach its total.

use super::placeholders;
use super::{Store, StoreError};
use crate::domain::{ContentHash, ContextId, ItemId, ItemStatus, JobId, Metadata, now_millis};
use crate::messages::{ItemOutcome, OutcomeKind};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// One settled task's part of a commit: its job, its items' outcomes, and the tokens the
/// provider billed for its requests.
#[derive(Debug, Clone, Copy)]
pub struct TaskOutcomes<'a> {
    pub job_id: JobId,
    pub outcomes: &'a [ItemOutcome],
    pub billed_tokens: u64,
}

/// An item as the embedding step needs it, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskItemRow {
    pub id: ItemId,
    pub context_id: ContextId,
    pub content: String,
    pub content_hash: ContentHash,
    pub status: ItemStatus,
    pub embedded_model: Option<String>,
    pub embedded_hash: Option<ContentHash>,
}

/// One requested item as loaded: its row, or why the stored row cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadedItem {
    Row(TaskItemRow),
    Corrupt { id: ItemId, reason: String },
}

impl LoadedItem {
    pub fn id(&self) -> &ItemId {
        match self {
            Self::Row(row) => &row.id,
            Self::Corrupt { id, .. } => id,
        }
    }
}

/// An item as a search hit shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HitRow {
    pub content: String,
    pub metadata: Metadata,
}

/// Outcomes newly counted into one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub completed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub deleted: i64,
}

/// What one commit counted, per job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub counted: BTreeMap<JobId, OutcomeCounts>,
    /// Jobs that reached their total in this commit.
    pub finished: Vec<JobId>,
    /// (job, item) of the FAILED outcomes this commit counted: each gets its one dead letter.
    pub newly_failed: Vec<(JobId, ItemId)>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Parses one loaded row (the caller knows its id, the one it asked for).
fn task_item_row(id: &ItemId, r: &sqlx::any::AnyRow) -> Result<TaskItemRow, String> {
    let text = |c: &str| r.try_get::<String, _>(c).map_err(|e| format!("{c}: {e}"));
    let optional = |c: &str| {
        r.try_get::<Option<String>, _>(c)
            .map_err(|e| format!("{c}: {e}"))
    };
    let context = text("context_id")?;
    Ok(TaskItemRow {
        id: id.clone(),
        context_id: ContextId::parse(context).map_err(|e| format!("context id: {e}"))?,
        content: text("content")?,
        content_hash: ContentHash::from_stored(text("content_hash")?),
        status: ItemStatus::parse(&text("status")?).map_err(|e| e.0)?,
        embedded_model: optional("embedded_model")?,
        embedded_hash: optional("embedded_hash")?.map(ContentHash::from_stored),
    })
}

/// How much an outcome says, to choose between two outcomes of one item in one commit (a task
/// processed twice, or a retry settled with the task that sent it): a final outcome beats a
/// retry, a success beats a failure, then the later attempt wins.
fn weight(o: &ItemOutcome) -> (u8, u32) {
    let kind = match o.kind {
        OutcomeKind::Deleted => 4,
        OutcomeKind::Completed { .. } => 3,
        OutcomeKind::Failed { .. } => 2,
        OutcomeKind::Skipped => 1,
        OutcomeKind::Retrying { .. } => 0,
    };
    (kind, o.attempts)
}

/// One outcome per key, the weightiest, in order of first appearance.
fn strongest<'a, K: std::hash::Hash + Eq + Clone>(
    outcomes: impl Iterator<Item = (K, &'a ItemOutcome)>,
) -> Vec<(K, &'a ItemOutcome)> {
    let mut chosen: Vec<(K, &ItemOutcome)> = Vec::new();
    let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    for (key, o) in outcomes {
        match index.get(&key) {
            Some(&at) => {
                if weight(o) >= weight(chosen[at].1) {
                    chosen[at].1 = o;
                }
            }
            None => {
                index.insert(key.clone(), chosen.len());
                chosen.push((key, o));
            }
        }
    }
    chosen
}

/// Rows per statement, far below both engines' parameter limits.
const CHUNK: usize = 400;

impl Store {
    /// The rows of these items (those that exist), each parsed or marked corrupt.
    pub async fn load_task_items(&self, ids: &[ItemId]) -> Result<Vec<LoadedItem>, StoreError> {
        let mut rows = Vec::with_capacity(ids.len());
        let asked: HashMap<&str, &ItemId> = ids.iter().map(|i| (i.as_str(), i)).collect();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, context_id, content, content_hash, status, embedded_model, embedded_hash \
                 FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str().to_owned());
            }
            for r in q.fetch_all(&self.pool).await? {
                let raw: String = r.try_get("id")?;
                let Some(id) = asked.get(raw.as_str()) else {
                    continue;
                };
                rows.push(match task_item_row(id, &r) {
                    Ok(row) => LoadedItem::Row(row),
                    Err(reason) => LoadedItem::Corrupt {
                        id: (*id).clone(),
                        reason,
                    },
                });
            }
        }
        Ok(rows)
    }

    /// Commits outcomes of several tasks at once. `model` is recorded for completed items.
    /// Billed tokens are added to each job's `tokens` (every request paid for counts, a
    /// retried one too: the provider was paid for each).
    pub async fn commit_outcomes(
        &self,
        batch: &[TaskOutcomes<'_>],
        model: &str,
    ) -> Result<CommitReport, StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;

        // 1. Item rows: one UPDATE per chunk, one row per item (an UPDATE ... FROM with an id
        //    twice would pick either row). A completed item is written only if its content is
        //    still the content that was embedded. A failure or a retry never overwrites an item
        //    already embedded with its current content and model, and a retry never overwrites
        //    a failure that used as many attempts: those outcomes are stale (a task processed
        //    twice, the slower copy reporting last).
        let updates: Vec<&ItemOutcome> = strongest(
            batch
                .iter()
                .flat_map(|t| t.outcomes.iter())
                .filter(|o| !matches!(o.kind, OutcomeKind::Skipped | OutcomeKind::Deleted))
                .map(|o| (o.item_id.as_str(), o)),
        )
        .into_iter()
        .map(|(_, o)| o)
        .collect();
        for chunk in updates.chunks(CHUNK) {
            let sql = format!(
                "WITH v(id, status, attempts, last_error, hash) AS (VALUES {}) \
                 UPDATE items SET \
                   status = v.status, \
                   attempts = CASE WHEN CAST(v.attempts AS BIGINT) > items.attempts \
                              THEN CAST(v.attempts AS BIGINT) ELSE items.attempts END, \
                   last_error = v.last_error, \
                   embedded_model = CASE WHEN v.status = 'COMPLETED' THEN ${m} ELSE items.embedded_model END, \
                   embedded_hash = CASE WHEN v.status = 'COMPLETED' THEN v.hash ELSE items.embedded_hash END, \
                   updated_at = ${n} \
                 FROM v WHERE items.id = v.id \
                   AND (v.status <> 'COMPLETED' OR items.content_hash = v.hash) \
                   AND (v.status = 'COMPLETED' OR NOT (items.status = 'COMPLETED' \
                        AND items.embedded_hash = items.content_hash \
                        AND items.embedded_model = ${m})) \
                   AND (v.status <> 'PROCESSING' OR items.status <> 'FAILED' \
                        OR CAST(v.attempts AS BIGINT) > items.attempts)",
                placeholders::tuples_with(chunk.len(), 5, ""),
                m = chunk.len() * 5 + 1,
                n = chunk.len() * 5 + 2,
            );
            let mut q = sqlx::query(&sql);
            for o in chunk {
                let (status, error, hash) = match &o.kind {
                    OutcomeKind::Completed { content_hash } => {
                        ("COMPLETED", None, Some(content_hash.as_str().to_owned()))
                    }
                    OutcomeKind::Failed { reason } => ("FAILED", Some(reason.clone()), None),
                    OutcomeKind::Retrying { reason } => ("PROCESSING", Some(reason.clone()), None),
                    OutcomeKind::Skipped | OutcomeKind::Deleted => unreachable!("filtered above"),
                };
                q = q
                    .bind(o.item_id.as_str().to_owned())
                    .bind(status)
                    .bind(o.attempts.to_string())
                    .bind(error)
                    .bind(hash);
            }
            q.bind(model.to_owned()).bind(now).execute(&mut *tx).await?;
        }

        // 2. Per-job outcomes, recorded once: a membership row without an outcome gets it (a row
        //    is made if the job planned before rows were kept); the rows really written are what
        //    counts.
        let mut report = CommitReport::default();
        let finals: Vec<(JobId, &ItemOutcome, &'static str)> =
            strongest(batch.iter().flat_map(|t| {
                t.outcomes
                    .iter()
                    .filter(|o| o.final_label().is_some())
                    .map(move |o| ((t.job_id, o.item_id.as_str()), o))
            }))
            .into_iter()
            .map(|((job, _), o)| (job, o, o.final_label().expect("filtered above")))
            .collect();
        for chunk in finals.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO job_items (job_id, item_id, outcome) VALUES {} \
                 ON CONFLICT (job_id, item_id) DO UPDATE SET outcome = excluded.outcome \
                 WHERE job_items.outcome IS NULL RETURNING job_id, item_id, outcome",
                placeholders::tuples_with(chunk.len(), 3, "")
            );
            let mut q = sqlx::query(&sql);
            for (job, o, label) in chunk {
                q = q
                    .bind(job.to_string())
                    .bind(o.item_id.as_str().to_owned())
                    .bind(*label);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let job: String = row.try_get("job_id")?;
                let job = JobId::parse(&job).map_err(|e| corrupt("job_items.job_id", e))?;
                let outcome: String = row.try_get("outcome")?;
                if outcome == "FAILED" {
                    let item: String = row.try_get("item_id")?;
                    let item = ItemId::parse(item).map_err(|e| corrupt("job_items.item_id", e))?;
                    report.newly_failed.push((job, item));
                }
                let entry = report.counted.entry(job).or_default();
                match outcome.as_str() {
                    "COMPLETED" => entry.completed += 1,
                    "FAILED" => entry.failed += 1,
                    "DELETED" => entry.deleted += 1,
                    _ => entry.skipped += 1,
                }
            }
        }

        // 3. Counters and tokens, then the final state of jobs that reached their total.
        let mut billed: BTreeMap<JobId, u64> = BTreeMap::new();
        for t in batch.iter().filter(|t| t.billed_tokens > 0) {
            *billed.entry(t.job_id).or_default() += t.billed_tokens;
        }
        let jobs: std::collections::BTreeSet<JobId> = report
            .counted
            .keys()
            .chain(billed.keys())
            .copied()
            .collect();
        for job in jobs {
            let counts = report.counted.get(&job).copied().unwrap_or_default();
            let tokens = billed.get(&job).copied().unwrap_or(0);
            sqlx::query(
                "UPDATE jobs SET completed = completed + $2, failed = failed + $3, \
                 skipped = skipped + $4, deleted = deleted + $5, tokens = tokens + $6, \
                 updated_at = $7 WHERE id = $1",
            )
            .bind(job.to_string())
            .bind(counts.completed)
            .bind(counts.failed)
            .bind(counts.skipped)
            .bind(counts.deleted)
            .bind(i64::try_from(tokens).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if report.counted.contains_key(&job)
                && super::jobs::finish_if_done(&mut tx, job, now).await?
            {
                report.finished.push(job);
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Contents and metadata of items, for showing search hits (deleted items are absent).
    pub async fn item_contents(
        &self,
        ids: &[ItemId],
    ) -> Result<HashMap<ItemId, HitRow>, StoreError> {
        let asked: HashMap<&str, &ItemId> = ids.iter().map(|i| (i.as_str(), i)).collect();
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, content, metadata FROM items WHERE id IN ({})",
                placeholders::list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str().to_owned());
            }
            for r in q.fetch_all(&self.pool).await? {
                let id: String = r.try_get("id")?;
                if let Some(id) = asked.get(id.as_str()) {
                    let metadata: Option<String> = r.try_get("metadata")?;
                    out.insert(
                        (*id).clone(),
                        HitRow {
                            content: r.try_get("content")?,
                            metadata: Metadata::from_stored(metadata.as_deref())
                                .map_err(|e| corrupt("items.metadata", e))?,
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}
