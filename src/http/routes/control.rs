//! Control verbs: pause and resume intake. They send a message to the supervisor and return at
//! once; the control surface never waits on the pipeline.

use crate::actors::SupervisorMsg;
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

pub async fn pause(State(app): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.supervisor
        .cast(SupervisorMsg::PauseIntake)
        .map_err(|_| ApiError::unavailable("the pipeline is stopping"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"intake": "pausing"}))))
}

pub async fn resume(State(app): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.supervisor
        .cast(SupervisorMsg::ResumeIntake)
        .map_err(|_| ApiError::unavailable("the pipeline is stopping"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"intake": "resuming"}))))
}

/// The supervision tree: the supervisor and each child with its state and restart count.
pub async fn actors(State(app): State<AppState>) -> Json<Value> {
    let children: Vec<Value> = app
        .supervision
        .actors()
        .into_iter()
        .map(|(role, a)| {
            json!({
                "role": role,
                "name": a.name,
                "state": a.state,
                "restarts": a.restarts,
                "last_failure": a.last_failure,
            })
        })
        .collect();
    let restarts: u64 = children
        .iter()
        .map(|c| c["restarts"].as_u64().unwrap_or(0))
        .sum();
    Json(json!({
        "supervisor": {
            "name": format!("{}/supervisor", app.instance),
            "state": if app.supervision.escalated().is_some() { "escalated" } else { "running" },
            "escalated": app.supervision.escalated(),
            "paused": app.supervision.paused(),
            "restarts": restarts,
            "children": children,
        }
    }))
}
