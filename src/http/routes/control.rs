//! Control verbs: pause and resume intake, and the actor tree. Pausing and resuming flip the
//! pipeline gate and return at once; the control surface never waits on the pipeline.

use crate::http::AppState;
use crate::http::responses::Unauthorized;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// What the supervisor was asked to do with intake.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntakeAnswer {
    intake: IntakeVerb,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntakeVerb {
    Pausing,
    Resuming,
}

/// Pauses intake: no new jobs or tasks are taken until resumed; work in flight finishes.
#[utoipa::path(
    post,
    path = "/v1/pause",
    tag = "control",
    summary = "Pause intake",
    responses(
        (status = 202, description = "Intake is pausing.", body = IntakeAnswer,
            example = json!({"intake": "pausing"})),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
pub async fn pause(State(app): State<AppState>) -> (StatusCode, Json<IntakeAnswer>) {
    app.pipeline.gate.pause();
    (
        StatusCode::ACCEPTED,
        Json(IntakeAnswer {
            intake: IntakeVerb::Pausing,
        }),
    )
}

/// Resumes intake; also clears a pause caused by a bad key or an exhausted quota.
#[utoipa::path(
    post,
    path = "/v1/resume",
    tag = "control",
    summary = "Resume intake",
    responses(
        (status = 202, description = "Intake is resuming.", body = IntakeAnswer,
            example = json!({"intake": "resuming"})),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
pub async fn resume(State(app): State<AppState>) -> (StatusCode, Json<IntakeAnswer>) {
    app.pipeline.gate.resume();
    (
        StatusCode::ACCEPTED,
        Json(IntakeAnswer {
            intake: IntakeVerb::Resuming,
        }),
    )
}

/// The supervision tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorTree {
    supervisor: SupervisorView,
}

/// The supervisor and its children.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisorView {
    name: String,
    state: SupervisorState,
    /// Why the supervisor gave up (too many restarts in the window), if it did.
    escalated: Option<String>,
    /// Why intake is paused, if it is.
    paused: Option<String>,
    /// Restarts of all children.
    restarts: u64,
    children: Vec<ChildView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorState {
    Running,
    Escalated,
}

/// One supervised actor.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChildView {
    /// What the actor does (intake, planner, worker, …).
    role: String,
    name: String,
    /// Its state, such as "running" or "restarting".
    state: String,
    restarts: u64,
    /// The last failure that restarted it.
    last_failure: Option<String>,
}

/// The supervision tree: the supervisor and each child with its state and restart count.
#[utoipa::path(
    get,
    path = "/v1/actors",
    tag = "control",
    summary = "The actor tree",
    responses(
        (status = 200, description = "The supervisor and its children.", body = ActorTree),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
pub async fn actors(State(app): State<AppState>) -> Json<ActorTree> {
    let supervision = &app.pipeline.supervision;
    let children: Vec<ChildView> = supervision
        .actors()
        .into_iter()
        .map(|(role, a)| ChildView {
            role,
            name: a.name,
            state: a.state.to_owned(),
            restarts: a.restarts,
            last_failure: a.last_failure,
        })
        .collect();
    let restarts: u64 = children.iter().map(|c| c.restarts).sum();
    let escalated = supervision.escalated();
    Json(ActorTree {
        supervisor: SupervisorView {
            name: format!("{}/supervisor", app.pipeline.instance),
            state: if escalated.is_some() {
                SupervisorState::Escalated
            } else {
                SupervisorState::Running
            },
            escalated,
            paused: app.pipeline.gate.state().reason(),
            restarts,
            children,
        },
    })
}
