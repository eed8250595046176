//! `POST /v1/jobs`, `GET /v1/jobs/{id}`, `PATCH /v1/jobs/{id}` (its priority) and the list and
//! cancel routes.
//!
//! Creating a job costs one INSERT and one XADD whatever the job's size: the planner expands
//! the scope later, off the request path. If the XADD fails the job row is deleted again and
//! the caller gets 503, so no half-made job is left behind.

use crate::domain::{JobId, JobKind, JobScope, JobState, Priority, Tenant};
use crate::estimate::Estimate;
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::responses::{
    BadRequest, Internal, TooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::http::{ApiError, AppState};
use crate::store::{JobFilter, JobRecord, NewJob};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A job to create: what to do, and with which items.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobBody {
    /// Which items the job covers: required for "embed"; a "reconcile" job covers every item
    /// (`{"type": "all"}`, the default).
    // Kept as JSON until `JobScope::from_json`, which refuses unknown fields in every kind of scope.
    #[schema(value_type = Option<JobScope>)]
    scope: Option<serde_json::Value>,
    /// "embed" (the default) or "reconcile"; also accepted as `type`.
    #[serde(default = "default_kind", alias = "type")]
    #[schema(value_type = JobKind)]
    kind: String,
    /// "interactive", "normal" or "bulk": which work every daemon takes first. Default: a
    /// scope of at most `planner.interactive_max_items` item ids is interactive, any other
    /// job normal.
    #[schema(value_type = Option<Priority>)]
    priority: Option<String>,
    /// Whose work it is (1 to 128 visible ASCII characters): jobs of one priority take turns
    /// by tenant, then by job, so a tenant's many jobs get one share. None: the job is a
    /// tenant of its own.
    tenant: Option<String>,
}

fn default_kind() -> String {
    "embed".into()
}

/// `?dry_run=true` answers what the job would cost instead of making it.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Answer the items, tokens, requests, cost and time the job would take, and make nothing.
    #[serde(default)]
    dry_run: bool,
}

/// A job was recorded and enqueued (or an `Idempotency-Key` matched an existing one).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    job_id: JobId,
    /// Where to poll the job's progress.
    #[schema(example = "/v1/jobs/019a0000-0000-7000-8000-000000000000")]
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
    let max = app.settings.limits.max_job_item_ids;
    if let JobScope::Items { item_ids } = scope
        && item_ids.len() > max
    {
        return Err(ApiError::invalid(format!(
            "scope.item_ids has {} ids; the limit is {max} (limits.max_job_item_ids)",
            item_ids.len()
        )));
    }
    scope.normalise();
    match scope {
        JobScope::Context { context_id } => {
            if !app.store.context_exists(context_id).await? {
                return Err(ApiError::not_found(format!("no context {context_id}")));
            }
        }
        JobScope::Items { item_ids } => {
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

/// Records a job and puts one message on the jobs stream; answers at once, whatever the job's
/// size. With an `Idempotency-Key` a repeated request returns the job it created the first
/// time (`created: false`). With `?dry_run=true` it answers what an embed job would cost —
/// items, tokens as the provider counts them, requests, cost at
/// `embedding.price_per_million_tokens` and time at the configured quota — and makes nothing.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Create a job (or estimate it)",
    params(
        CreateQuery,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
            description = "1 to 255 visible ASCII characters; the same key returns the same job."),
    ),
    request_body = CreateJobBody,
    responses(
        (status = 200, description = "A dry run: what the job would cost; nothing was made.", body = Estimate),
        (status = 202, description = "The job is recorded and enqueued.", body = JobAccepted,
            headers(("Location" = String, description = "The job's status URL."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The scope names a context or items that do not exist; no job was made.", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The body breaks a rule (unknown scope or kind, bad or too many item ids, a dry run of a reconcile job); no job was made.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, description = "The database or the queue (Redis) is unavailable; no job was made.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_job(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<CreateQuery>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJobBody>,
) -> Result<Response, ApiError> {
    let kind = JobKind::parse(&body.kind).map_err(|e| ApiError::invalid(e.0))?;
    let priority = body
        .priority
        .as_deref()
        .map(Priority::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("priority: {e}")))?;
    let tenant = body
        .tenant
        .map(Tenant::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("tenant: {e}")))?;
    let mut scope = match (kind, body.scope) {
        (_, Some(raw)) => {
            JobScope::from_json(raw).map_err(|e| ApiError::invalid(format!("scope: {e}")))?
        }
        (JobKind::Reconcile, None) => JobScope::All,
        (JobKind::Embed, None) => return Err(ApiError::invalid("scope: an embed job needs one")),
    };
    if kind == JobKind::Reconcile && scope != JobScope::All {
        return Err(ApiError::invalid(
            "scope: a reconcile job covers every item; give {\"type\": \"all\"} or no scope",
        ));
    }
    if query.dry_run {
        if kind == JobKind::Reconcile {
            return Err(ApiError::invalid(
                "a reconcile job cannot be estimated: what it repairs is known only once it \
                 has compared the stores",
            ));
        }
        check_scope(&app, &mut scope).await?;
        let embedder = app.pipeline.embedder.embedder();
        let estimate =
            crate::estimate::estimate(&app.store, embedder.as_ref(), &scope, &app.settings).await?;
        return Ok((StatusCode::OK, Json(estimate)).into_response());
    }
    let key = idempotency_key(&headers)?;
    if let Some(key) = &key
        && let Some(job) = app.store.job_by_idempotency_key(key).await?
    {
        return Ok(accepted(&job, false));
    }
    check_scope(&app, &mut scope).await?;
    let (job, created) = record_and_enqueue(&app, kind, scope, priority, tenant, key).await?;
    Ok(accepted(&job, created))
}

/// Records a job and puts its one message on the jobs stream; if the message cannot be
/// written, the job is removed again and the caller gets 503. Returns the job and whether this
/// call created it (false when an idempotency key matched). Without a priority the job gets
/// its scope's default.
pub(crate) async fn record_and_enqueue(
    app: &AppState,
    kind: JobKind,
    scope: JobScope,
    priority: Option<Priority>,
    tenant: Option<Tenant>,
    idempotency_key: Option<String>,
) -> Result<(JobRecord, bool), ApiError> {
    let priority = priority
        .unwrap_or_else(|| scope.default_priority(app.settings.planner.interactive_max_items));
    let created = app
        .store
        .create_job(NewJob {
            id: JobId::new(),
            kind,
            scope,
            model: app.settings.embedding.model.clone(),
            priority,
            tenant,
            idempotency_key,
        })
        .await?;
    if !created.created {
        return Ok((created.job, false));
    }
    let job = created.job;
    if let Err(e) = crate::submit::enqueue_recorded(&app.store, &app.redis, &app.keys, &job).await {
        if let Err(cleanup) = app.store.delete_queued_job(job.id).await {
            tracing::error!(job = %job.id, error = %cleanup, "could not remove a job that was never enqueued");
        }
        return Err(e.into());
    }
    Ok((job, true))
}

/// A job with its counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: JobRecord,
    /// True once every item of the scope is planned (the total is final).
    planned: bool,
    /// Items with a final outcome so far.
    done: i64,
    /// What the billed tokens cost at `embedding.price_per_million_tokens` (0 when no price is
    /// set: the local model, or a price not configured).
    cost: f64,
}

/// A job's state and counters.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    summary = "A job's progress",
    params(("job_id" = JobId, Path, description = "The job.")),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn get_job(
    State(app): State<AppState>,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId::parse(&job_id).map_err(|e| ApiError::bad_request(e.0))?;
    let job = app
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(JobView::new(job, &app)))
}

/// What an operator may change on a job that has not ended.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateJobBody {
    /// The job's new priority: tasks planned from now on (and their retries) carry it; tasks
    /// already queued keep the one they had.
    #[schema(value_type = Priority)]
    priority: String,
}

/// Changes a running or queued job's priority.
#[utoipa::path(
    patch,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    summary = "Change a job's priority",
    params(("job_id" = JobId, Path, description = "The job.")),
    request_body = UpdateJobBody,
    responses(
        (status = 200, description = "The job, with its new priority.", body = JobView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 409, description = "The job is already COMPLETED, FAILED or CANCELLED; nothing changed.", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "An unknown priority; nothing changed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn update_job(
    State(app): State<AppState>,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateJobBody>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId::parse(&job_id).map_err(|e| ApiError::bad_request(e.0))?;
    let priority =
        Priority::parse(&body.priority).map_err(|e| ApiError::invalid(format!("priority: {e}")))?;
    let job = app
        .store
        .set_job_priority(id, priority)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    // The update touches only a job that has not ended.
    if job.state.is_final() {
        return Err(ApiError::conflict(format!(
            "job {id} is already {}",
            job.state.as_str()
        )));
    }
    tracing::info!(job = %id, %priority, "job priority changed");
    Ok(Json(JobView::new(job, &app)))
}

impl JobView {
    fn new(job: JobRecord, app: &AppState) -> Self {
        let price = app.settings.embedding.price_per_million_tokens;
        Self {
            planned: job.planned_at.is_some(),
            done: job.done(),
            cost: job.tokens as f64 / 1_000_000.0 * price,
            job,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED; any case).
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// The last job id of the previous page (its `next_before`).
    #[param(value_type = Option<JobId>)]
    before: Option<String>,
    /// Jobs per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobView>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<String>,
}

/// Jobs, newest first, optionally in one state; keyset pages with `before`.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "List jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of jobs.", body = JobList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
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
        jobs: jobs.into_iter().map(|j| JobView::new(j, &app)).collect(),
        next_before,
    }))
}

/// Cancels a job: its queued work is dropped, items in flight finish and are counted, and the
/// job ends CANCELLED. Cancelling a final job changes nothing (409).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/cancel",
    tag = "jobs",
    summary = "Cancel a job",
    params(("job_id" = JobId, Path, description = "The job.")),
    responses(
        (status = 200, description = "The job, now CANCELLED.", body = JobView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 409, description = "The job is already COMPLETED, FAILED or CANCELLED; nothing changed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel_job(
    State(app): State<AppState>,
    ApiPath(job_id): ApiPath<String>,
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
    Ok(Json(JobView::new(job, &app)))
}
