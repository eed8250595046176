//! Dead letters: list them with their reasons, requeue failed items (one, a job's, or all) as
//! a new job with fresh attempts, or remove an entry.

use crate::domain::{ItemId, JobId, JobScope};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::routes::jobs::record_and_enqueue;
use crate::http::{ApiError, AppState};
use crate::queue::{DeadLetter, DeadLetters};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The last dead-letter id of the previous page.
    before: Option<String>,
    /// Dead letters per page, 1 to 500 (default 50).
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    total: u64,
    next_before: Option<String>,
}

fn is_stream_id(raw: &str) -> bool {
    let mut parts = raw.splitn(2, '-');
    let ms = parts.next().unwrap_or("");
    let seq = parts.next().unwrap_or("0");
    !ms.is_empty()
        && ms.len() <= 20
        && seq.len() <= 20
        && ms.chars().all(|c| c.is_ascii_digit())
        && seq.chars().all(|c| c.is_ascii_digit())
}

pub async fn list(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    if let Some(b) = &query.before
        && !is_stream_id(b)
    {
        return Err(ApiError::bad_request(
            "before must be a dead-letter id such as 1700000000000-0",
        ));
    }
    let letters = DeadLetters::new(app.redis.clone(), &app.keys);
    let page = letters.list(query.before.as_deref(), limit).await?;
    let total = letters.count().await?;
    let next_before = (page.len() == limit)
        .then(|| page.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DeadLetterList {
        dead_letters: page,
        total,
        next_before,
    }))
}

/// What to requeue: exactly one of `ids`, `job_id` or `all: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueBody {
    ids: Option<Vec<String>>,
    job_id: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize)]
pub struct RequeueAnswer {
    /// Items given fresh attempts and put in new jobs.
    requeued: usize,
    /// The jobs that embed them.
    jobs: Vec<JobId>,
    /// Dead letters removed.
    removed: u64,
}

pub async fn requeue(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RequeueBody>,
) -> Result<(StatusCode, Json<RequeueAnswer>), ApiError> {
    let chosen = [body.ids.is_some(), body.job_id.is_some(), body.all]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen != 1 {
        return Err(ApiError::invalid(
            "give exactly one of ids (dead-letter ids), job_id, or all: true",
        ));
    }
    let letters = DeadLetters::new(app.redis.clone(), &app.keys);
    let selected: Vec<DeadLetter> = if let Some(ids) = &body.ids {
        if ids.is_empty() || ids.len() > 10_000 {
            return Err(ApiError::invalid(
                "ids must hold 1 to 10000 dead-letter ids",
            ));
        }
        if let Some(bad) = ids.iter().find(|i| !is_stream_id(i)) {
            return Err(ApiError::invalid(format!(
                "{:?} is not a dead-letter id",
                bad.chars().take(40).collect::<String>()
            )));
        }
        let wanted: BTreeSet<&String> = ids.iter().collect();
        let found: Vec<DeadLetter> = letters
            .all()
            .await?
            .into_iter()
            .filter(|d| wanted.contains(&d.id))
            .collect();
        if found.len() != wanted.len() {
            return Err(ApiError::not_found(
                "some dead letters do not exist (already requeued?)",
            ));
        }
        found
    } else if let Some(job) = &body.job_id {
        let job = JobId::parse(job)
            .map_err(|e| ApiError::invalid(e.0))?
            .to_string();
        letters
            .all()
            .await?
            .into_iter()
            .filter(|d| d.job_id.as_deref() == Some(job.as_str()))
            .collect()
    } else {
        letters.all().await?
    };

    let items: BTreeSet<ItemId> = selected
        .iter()
        .filter(|d| d.kind == "item")
        .filter_map(|d| d.item_id.clone())
        .filter_map(|i| ItemId::parse(i).ok())
        .collect();
    if selected.iter().any(|d| d.kind != "item") && body.ids.is_some() {
        return Err(ApiError::invalid(
            "only item dead letters can be requeued; remove malformed entries with DELETE",
        ));
    }
    let items: Vec<ItemId> = items.into_iter().collect();
    let reset = app.store.reset_failed_items(&items).await?;
    let mut jobs = Vec::new();
    for chunk in reset.chunks(app.settings.limits.max_job_item_ids) {
        let (job, _) = record_and_enqueue(
            &app,
            JobScope::Items {
                item_ids: chunk.to_vec(),
            },
            None,
        )
        .await?;
        jobs.push(job.id);
    }
    let ids: Vec<String> = selected
        .iter()
        .filter(|d| d.kind == "item")
        .map(|d| d.id.clone())
        .collect();
    let removed = letters.remove(&ids).await?;
    tracing::info!(requeued = reset.len(), removed, "dead letters requeued");
    Ok((
        StatusCode::ACCEPTED,
        Json(RequeueAnswer {
            requeued: reset.len(),
            jobs,
            removed,
        }),
    ))
}

pub async fn remove(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !is_stream_id(&id) {
        return Err(ApiError::bad_request("not a dead-letter id"));
    }
    let removed = DeadLetters::new(app.redis.clone(), &app.keys)
        .remove(std::slice::from_ref(&id))
        .await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
