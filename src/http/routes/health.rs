//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: each backend's state,
//! 503 when any is not ready, with the reason).

use crate::gate::GateState;
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;
use utoipa::ToSchema;

/// The process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = HealthStatus)]
    status: &'static str,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only documents `Health::status`.
pub enum HealthStatus {
    Ok,
}

/// Liveness: the process answers (it checks no backend).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is alive.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Each backend's state, and whether the daemon is ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// True when every check is ok.
    ready: bool,
    checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    database: Check,
    redis: Check,
    job_intake: Check,
    task_intake: Check,
    pipeline: Check,
    /// What the reconciler planned again of what Redis lost (never failing: a repair is
    /// something done, not a fault).
    reconciler: Check,
    supervision: Check,
}

/// One backend's state, with details that depend on the backend (the database's kind, the
/// intake's counters, the pipeline's pause and rate limiter, the actors).
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    ok: bool,
    /// Why it is not ok; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    error: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    detail: Value,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Readiness: each backend's state (database, Redis, intakes, the pipeline's pause and its
/// reason, supervision); 503 with the reason when any is not ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; the failing checks say why.", body = Readiness),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => Check {
            ok: true,
            error: None,
            detail: json!({"backend": app.store.backend().as_str()}),
        },
        Ok(Err(e)) => Check {
            ok: false,
            error: Some(e.to_string()),
            detail: json!({"backend": app.store.backend().as_str()}),
        },
        Err(_) => Check {
            ok: false,
            error: Some("no answer within 1 s".into()),
            detail: json!({"backend": app.store.backend().as_str()}),
        },
    };
    let mut conn = app.redis.clone();
    let ping_cmd = redis::cmd("PING");
    let ping = ping_cmd.query_async::<String>(&mut conn);
    let durability = json!({
        "maxmemory_policy": app.redis_durability.maxmemory_policy,
        "persists": app.redis_durability.persists(),
        "warning": app.redis_durability.warning(),
    });
    let redis = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => Check {
            ok: true,
            error: None,
            detail: durability,
        },
        Ok(Err(e)) => Check {
            ok: false,
            error: Some(format!("redis: {e}")),
            detail: durability,
        },
        Err(_) => Check {
            ok: false,
            error: Some("no answer within 1 s".into()),
            detail: durability,
        },
    };
    let intake = app.pipeline.job_intake.snapshot();
    let intake_check = Check {
        ok: intake.last_error.is_none(),
        error: intake.last_error.clone(),
        detail: json!({"paused": intake.paused, "delivered": intake.delivered, "reclaimed": intake.reclaimed, "dead_lettered": intake.dead_lettered}),
    };
    let tasks = app.pipeline.task_intake.snapshot();
    let task_intake_check = Check {
        ok: tasks.last_error.is_none(),
        error: tasks.last_error.clone(),
        detail: json!({"paused": tasks.paused, "delivered": tasks.delivered, "reclaimed": tasks.reclaimed, "dead_lettered": tasks.dead_lettered}),
    };
    let gate = app.pipeline.gate.state();
    // Not ready while the provider is unusable or the daemon is shutting down; an operator's
    // pause is a choice, not a fault.
    let not_ready = matches!(
        gate,
        GateState::ProviderUnusable { .. } | GateState::Draining
    );
    let pipeline = Check {
        ok: !not_ready,
        error: not_ready.then(|| gate.reason()).flatten(),
        detail: json!({
            "paused": gate.reason(),
            "gate": gate,
            "vectors": app.vectors.backend(),
            "model": app.pipeline.embedder.embedder().model(),
            "rate_limiter": app.pipeline.limiter.snapshot(),
        }),
    };
    let reconciler = Check {
        ok: true,
        error: None,
        detail: json!(app.pipeline.reconciler.snapshot()),
    };
    let supervision = &app.pipeline.supervision;
    let escalated = supervision.escalated();
    let actors: Vec<Value> = supervision
        .actors()
        .into_iter()
        .map(|(role, a)| json!({"role": role, "name": a.name, "state": a.state, "restarts": a.restarts}))
        .collect();
    let supervision = Check {
        ok: escalated.is_none(),
        error: escalated,
        detail: json!({"actors": actors}),
    };
    let ready = database.ok
        && redis.ok
        && intake_check.ok
        && task_intake_check.ok
        && pipeline.ok
        && supervision.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            checks: Checks {
                database,
                redis,
                job_intake: intake_check,
                task_intake: task_intake_check,
                pipeline,
                reconciler,
                supervision,
            },
        }),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The route exists, not with this method (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method; the Allow header lists those it takes",
    )
}
