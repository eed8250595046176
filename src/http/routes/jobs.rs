//! `POST /v1/jobs` and `GET /v1/jobs/{id}`.
//!
//! Creating a job costs one INSERT and one XADD whatever the job's size: the planner expands
//! the scope later, off the request path. If the XADD fails the job row is deleted again and
//! the caller gets 503, so no half-made job is left behind.

use crate::domain::{JobId, JobScope, JobState};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiError, AppState};
use crate::messages::JobMessage;
use crate::queue::enqueue_job;
use crate::store::{JobFilter, JobRecord, NewJob};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJobBody {
    scope: JobScope,
    /// Only "embed" exists today.
    #[serde(default = "default_kind")]
    kind: String,
}

fn default_kind() -> String {
    "embed".into()
}

#[derive(Debug, Serialize)]
pub struct JobAccepted {
    job_id: JobId,
    status_url: String,
    state: crate::domain::JobState,
    /// False when an `Idempotency-Key` matched an existing job.
    created: bool,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn accepted(job: &JobRecord, created: bool) -> Response {
    let status_url = format!("/v1/jobs/{}", job.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: job.id,
            status_url: status_url.clone(),
            state: job.state,
            created,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Validates the scope against the store, cheaply: one lookup for a context, one query per
/// 500 ids for an explicit list (bounded by `limits.max_job_item_ids`).
async fn check_scope(app: &AppState, scope: &mut JobScope) -> Result<(), ApiError> {
    match scope {
        JobScope::Context { context_id } => {
            if !app.store.context_exists(context_id).await? {
                return Err(ApiError::not_found(format!("no context {context_id}")));
            }
        }
        JobScope::Items { item_ids } => {
            let max = app.settings.limits.max_job_item_ids;
            if item_ids.is_empty() {
                return Err(ApiError::invalid("scope.item_ids must not be empty"));
            }
            if item_ids.len() > max {
                return Err(ApiError::invalid(format!(
                    "scope.item_ids has {} ids; the limit is {max} (limits.max_job_item_ids)",
                    item_ids.len()
                )));
            }
            item_ids.sort();
            item_ids.dedup();
            let missing = app.store.missing_items(item_ids).await?;
            if !missing.is_empty() {
                let shown: Vec<&str> = missing.iter().take(10).map(|i| i.as_str()).collect();
                return Err(ApiError::not_found(format!(
                    "{} unknown item ids, for example: {}",
                    missing.len(),
                    shown.join(", ")
                )));
            }
        }
        JobScope::All | JobScope::Failed | JobScope::StaleModel => {}
    }
    Ok(())
}

pub async fn create_job(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJobBody>,
) -> Result<Response, ApiError> {
    if body.kind != "embed" {
        return Err(ApiError::invalid(format!(
            "unknown job kind {:?}; the only kind is \"embed\"",
            body.kind.chars().take(40).collect::<String>()
        )));
    }
    let key = idempotency_key(&headers)?;
    if let Some(key) = &key
        && let Some(job) = app.store.job_by_idempotency_key(key).await?
    {
        return Ok(accepted(&job, false));
    }
    let mut scope = body.scope;
    check_scope(&app, &mut scope).await?;
    let (job, created) = record_and_enqueue(&app, scope, key).await?;
    Ok(accepted(&job, created))
}

/// Records a job and puts its one message on the jobs stream; if the message cannot be
/// written, the job is removed again and the caller gets 503. Returns the job and whether this
/// call created it (false when an idempotency key matched).
pub(crate) async fn record_and_enqueue(
    app: &AppState,
    scope: JobScope,
    idempotency_key: Option<String>,
) -> Result<(JobRecord, bool), ApiError> {
    let created = app
        .store
        .create_job(NewJob {
            id: JobId::new(),
            kind: "embed",
            scope,
            model: app.settings.embedding.model.clone(),
            idempotency_key,
        })
        .await?;
    if !created.created {
        return Ok((created.job, false));
    }
    let job = created.job;
    let mut conn = app.redis.clone();
    if let Err(e) = enqueue_job(&mut conn, &app.keys, &JobMessage { job_id: job.id }).await {
        if let Err(cleanup) = app.store.delete_queued_job(job.id).await {
            tracing::error!(job = %job.id, error = %cleanup, "could not remove a job that was never enqueued");
        }
        return Err(e.into());
    }
    tracing::info!(job = %job.id, scope = job.scope.kind(), "job enqueued");
    Ok((job, true))
}

#[derive(Debug, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    job: JobRecord,
    /// True once every item of the scope is planned (the total is final).
    planned: bool,
    /// Items with a final outcome so far.
    done: i64,
}

pub async fn get_job(
    State(app): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId::parse(&job_id).map_err(|e| ApiError::bad_request(e.0))?;
    let job = app
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(job.into()))
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        Self {
            planned: job.planned_at.is_some(),
            done: job.done(),
            job,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED).
    state: Option<String>,
    /// The last job id of the previous page.
    before: Option<String>,
    /// Jobs per page, 1 to 200 (default 50).
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct JobList {
    jobs: Vec<JobView>,
    /// Pass as `before` for the next page; absent on the last page.
    next_before: Option<String>,
}

pub async fn list_jobs(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let state = query
        .state
        .as_deref()
        .map(|s| JobState::parse(&s.to_ascii_uppercase()))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.0))?;
    let before = query
        .before
        .as_deref()
        .map(JobId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.0))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let jobs = app
        .store
        .list_jobs(&JobFilter {
            state,
            before,
            limit,
        })
        .await?;
    let next_before = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_before,
    }))
}

/// Cancels a job: its queued work is dropped, items in flight finish and are counted, and the
/// job ends CANCELLED. Cancelling a final job changes nothing (409).
pub async fn cancel_job(
    State(app): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId::parse(&job_id).map_err(|e| ApiError::bad_request(e.0))?;
    let before = app
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if before.state.is_final() {
        return Err(ApiError::conflict(format!(
            "job {id} is already {}",
            before.state.as_str()
        )));
    }
    let job = app
        .store
        .cancel_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    tracing::info!(job = %id, "job cancelled");
    Ok(Json(job.into()))
}
