//! Watching the daemon: the live event stream (`GET /v1/events`, server-sent events) and
//! Prometheus metrics (`GET /metrics`).

use crate::http::AppState;
use crate::http::responses::Unauthorized;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::ToSchema;

/// One server-sent event, as the `text/event-stream` lines `event: KIND` and `data: JSON`.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents the stream.
pub struct ServerSentEvent {
    /// The kind: `hello` (first, at once), `job_progress`, `paused`, `resumed`,
    /// `actor_restarted` or `rate_limit`.
    #[schema(example = "hello")]
    event: String,
    /// A JSON object, whose fields depend on the kind.
    #[schema(
        content_media_type = "application/json",
        example = r#"{"instance":"host-1234-ab12","paused":null}"#
    )]
    data: String,
}

/// Live events as server-sent events: first `hello` (`{"instance", "paused"}`), then job
/// progress, pauses, actor restarts and rate-limit changes, each event named by its kind with
/// a JSON `data` line. A keep-alive comment comes every 15 s; a listener that falls behind
/// skips what it missed.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "observe",
    summary = "Live events (server-sent events)",
    responses(
        (status = 200, description = "An endless `text/event-stream`; the schema is that of each event.",
            content_type = "text/event-stream", body = ServerSentEvent),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let paused = app.pipeline.gate.state().reason();
    let hello = Event::default()
        .event("hello")
        .json_data(serde_json::json!({"instance": app.pipeline.instance, "paused": paused}))
        .unwrap_or_default();
    let stream = BroadcastStream::new(app.events.subscribe()).filter_map(|e| {
        // A lagging listener skips what it missed.
        e.ok()
            .and_then(|e| Event::default().event(e.kind).json_data(e.data).ok())
            .map(Ok)
    });
    let stream = tokio_stream::once(Ok(hello)).chain(stream);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Prometheus metrics in the text exposition format (version 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observe",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain", body = String),
        (status = 401, response = Unauthorized),
    ),
    security(("bearer" = [])),
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let rate = app.pipeline.limiter.snapshot();
    let body = app.metrics.render(&app.redis, &app.keys, &rate).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
