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
