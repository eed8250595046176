//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: each backend's state,
//! 503 when any is not ready, with the reason).

use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    detail: Value,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
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
    let redis = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => Check {
            ok: true,
            error: None,
            detail: Value::Null,
        },
        Ok(Err(e)) => Check {
            ok: false,
            error: Some(format!("redis: {e}")),
            detail: Value::Null,
        },
        Err(_) => Check {
            ok: false,
            error: Some("no answer within 1 s".into()),
            detail: Value::Null,
        },
    };
    let intake = app.job_intake.snapshot();
    let intake_check = Check {
        ok: intake.last_error.is_none(),
        error: intake.last_error.clone(),
        detail: json!({"paused": intake.paused, "delivered": intake.delivered, "reclaimed": intake.reclaimed, "dead_lettered": intake.dead_lettered}),
    };
    let tasks = app.task_intake.snapshot();
    let task_intake_check = Check {
        ok: tasks.last_error.is_none(),
        error: tasks.last_error.clone(),
        detail: json!({"paused": tasks.paused, "delivered": tasks.delivered, "reclaimed": tasks.reclaimed, "dead_lettered": tasks.dead_lettered}),
    };
    let paused = app.supervision.paused();
    let provider_fatal = paused
        .as_ref()
        .filter(|p| p.starts_with("provider unusable"))
        .cloned();
    let rate = app.rate_limiter.lock().expect("status").clone();
    let pipeline = Check {
        ok: provider_fatal.is_none(),
        error: provider_fatal,
        detail: json!({
            "paused": paused,
            "vectors": app.vectors.backend(),
            "model": app.embedder.model(),
            "rate_limiter": rate,
        }),
    };
    let escalated = app.supervision.escalated();
    let actors: Vec<Value> = app
        .supervision
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
        Json(json!({
            "ready": ready,
            "checks": {
                "database": database,
                "redis": redis,
                "job_intake": intake_check,
                "task_intake": task_intake_check,
                "pipeline": pipeline,
                "supervision": supervision
            }
        })),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
