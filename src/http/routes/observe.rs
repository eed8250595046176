//! Watching the daemon: the live event stream (`GET /v1/events`, server-sent events) and
//! Prometheus metrics (`GET /metrics`).

use crate::http::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let paused = app.supervision.paused();
    let hello = Event::default()
        .event("hello")
        .json_data(serde_json::json!({"instance": app.instance, "paused": paused}))
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

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let rate = app
        .rate_limiter
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let body = app.metrics.render(&app.redis, &app.keys, &rate).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
