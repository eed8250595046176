//! Committing item outcomes when a task was processed twice, or a retry is settled together
//! with (or after) the outcome that sent it: one row per item decides (a final outcome beats a
//! retry, a success beats a failure), a stale failure or retry never overwrites an item already
//! embedded with its current content, and each FAILED outcome is reported once for its single
//! dead letter.

mod support;

use embedq::domain::{ContextId, ItemContent, ItemId, JobId, JobKind, JobScope};
use embedq::messages::{ItemOutcome, OutcomeKind};
use embedq::store::{NewItem, NewJob, Store, TaskOutcomes};
use support::{Backend, TestDatabase};

const MODEL: &str = "text-embedding-3-small";

async fn store_with_items(backend: Backend, n: usize) -> (TestDatabase, Store, JobId) {
    let db = TestDatabase::create(backend).await;
    let mut settings = embedq::config::Settings::defaults().database;
    settings.url = db.url.clone();
    let store = Store::connect(&settings).await.unwrap();
    store.migrate().await.unwrap();
    let ctx = ContextId::parse("ctx").unwrap();
    let items: Vec<NewItem> = (0..n)
        .map(|i| NewItem {
            id: ItemId::parse(format!("it-{i}")).unwrap(),
            content: ItemContent::parse(format!("text {i}"), 1000).unwrap(),
            metadata: None,
        })
        .collect();
    store.upsert_items(&ctx, &items, &[]).await.unwrap();
    let job = store
        .create_job(NewJob {
            id: JobId::new(),
            kind: JobKind::Embed,
            scope: JobScope::Context { context_id: ctx },
            model: MODEL.into(),
            priority: embedq::domain::Priority::Normal,
            tenant: None,
            idempotency_key: None,
        })
        .await
        .unwrap()
        .job
        .id;
    (db, store, job)
}

fn outcome(item: usize, kind: OutcomeKind, attempts: u32) -> ItemOutcome {
    ItemOutcome {
        item_id: ItemId::parse(format!("it-{item}")).unwrap(),
        kind,
        attempts,
    }
}

fn completed(item: usize, attempts: u32) -> ItemOutcome {
    let hash = embedq::domain::ContentHash::of(&format!("text {item}"));
    outcome(
        item,
        OutcomeKind::Completed { content_hash: hash },
        attempts,
    )
}

fn retrying(item: usize, attempts: u32) -> ItemOutcome {
    outcome(
        item,
        OutcomeKind::Retrying {
            reason: "5xx".into(),
        },
        attempts,
    )
}

fn failed(item: usize, attempts: u32) -> ItemOutcome {
    outcome(
        item,
        OutcomeKind::Failed {
            reason: "refused".into(),
        },
        attempts,
    )
}

async fn status(store: &Store, item: usize) -> (String, i64) {
    let record = store
        .get_item(&ItemId::parse(format!("it-{item}")).unwrap())
        .await
        .unwrap()
        .unwrap();
    (record.status.as_str().to_owned(), record.attempts)
}

fn task(job: JobId, outcomes: &[ItemOutcome], billed_tokens: u64) -> TaskOutcomes<'_> {
    TaskOutcomes {
        job_id: job,
        outcomes,
        billed_tokens,
    }
}

async fn duplicates_and_stale_outcomes_are_resolved(backend: Backend) {
    let (_db, store, job) = store_with_items(backend, 4).await;
    // One commit holding a task and its retry: the retry's success wins whatever the order.
    let first = [retrying(0, 1), failed(1, 1), retrying(2, 1)];
    let second = [completed(0, 2), completed(1, 2), failed(2, 4)];
    let report = store
        .commit_outcomes(&[task(job, &first, 120), task(job, &second, 30)], MODEL)
        .await
        .unwrap();
    assert_eq!(
        report.counted.get(&job),
        Some(&embedq::store::OutcomeCounts {
            completed: 2,
            failed: 1,
            skipped: 0,
            deleted: 0,
        }),
        "{report:?}"
    );
    assert_eq!(
        report.newly_failed,
        vec![(job, ItemId::parse("it-2").unwrap())]
    );
    assert_eq!(status(&store, 0).await, ("COMPLETED".into(), 2));
    assert_eq!(status(&store, 1).await, ("COMPLETED".into(), 2));
    assert_eq!(status(&store, 2).await, ("FAILED".into(), 4));

    // Stale outcomes from a slower copy of the same tasks change nothing.
    let stale = [retrying(0, 1), failed(1, 1), retrying(2, 3), failed(2, 4)];
    let report = store
        .commit_outcomes(&[task(job, &stale, 7)], MODEL)
        .await
        .unwrap();
    assert!(report.counted.is_empty(), "{report:?}");
    assert!(
        report.newly_failed.is_empty(),
        "a failure dead-lettered twice"
    );
    assert_eq!(status(&store, 0).await, ("COMPLETED".into(), 2));
    assert_eq!(status(&store, 1).await, ("COMPLETED".into(), 2));
    assert_eq!(status(&store, 2).await, ("FAILED".into(), 4));

    // A genuine retry of a failed item (more attempts) still shows as in progress.
    store
        .commit_outcomes(&[task(job, &[failed(3, 1)], 0)], MODEL)
        .await
        .unwrap();
    store
        .commit_outcomes(&[task(job, &[retrying(3, 2)], 0)], MODEL)
        .await
        .unwrap();
    assert_eq!(status(&store, 3).await, ("PROCESSING".into(), 2));
    // Every request paid for is billed to the job, the stale copy's too: it was paid.
    assert_eq!(store.get_job(job).await.unwrap().unwrap().tokens, 157);
    store.close().await;
}

on_both_backends!(duplicates_and_stale_outcomes_are_resolved);
