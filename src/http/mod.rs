//! The admin HTTP surface (axum). Handlers only touch SQL and one Redis command each: they never
//! wait on the pipeline, so the API answers in milliseconds whatever the pipeline is doing.

mod auth;
mod error;
mod extract;
pub mod openapi;
mod routes;
mod state;

pub use error::{ApiError, ErrorBody};
pub use state::AppState;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.server.max_body_bytes;
    let admin = Router::new()
        .route(
            "/v1/contexts/{context_id}/items",
            post(routes::items::upsert_items),
        )
        .route("/v1/items/{item_id}", get(routes::items::get_item))
        .route(
            "/v1/jobs",
            post(routes::jobs::create_job).get(routes::jobs::list_jobs),
        )
        .route("/v1/jobs/{job_id}", get(routes::jobs::get_job))
        .route("/v1/jobs/{job_id}/cancel", post(routes::jobs::cancel_job))
        .route("/v1/dead-letters", get(routes::dead_letters::list))
        .route(
            "/v1/dead-letters/requeue",
            post(routes::dead_letters::requeue),
        )
        .route(
            "/v1/dead-letters/{id}",
            axum::routing::delete(routes::dead_letters::remove),
        )
        .route("/v1/actors", get(routes::control::actors))
        .route("/v1/events", get(routes::observe::events))
        .route("/metrics", get(routes::observe::metrics))
        .route(
            "/v1/contexts/{context_id}/search",
            post(routes::search::search),
        )
        .route("/v1/pause", post(routes::control::pause))
        .route("/v1/resume", post(routes::control::resume))
        // Before the token layer, so that a wrong method without a token is still 401.
        .method_not_allowed_fallback(routes::health::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(routes::dashboard::page))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(routes::docs::openapi_json))
        .route("/docs", get(routes::docs::docs_page))
        .method_not_allowed_fallback(routes::health::method_not_allowed)
        .merge(admin)
        .fallback(routes::health::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
