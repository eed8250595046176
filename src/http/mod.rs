//! The admin HTTP surface (axum). Handlers only touch SQL, one Redis command, or the pipeline
//! gate: they never wait on the pipeline, so the API answers in milliseconds whatever the
//! pipeline is doing.
//!
//! The route list exists once, in [`api`]: each handler is registered there together with its
//! `#[utoipa::path]` description, and both the router and the OpenAPI document are made from
//! that list, so the two cannot drift apart.

mod auth;
mod error;
mod extract;
mod openapi;
mod responses;
mod routes;
mod state;

pub(crate) use error::ApiError;
pub(crate) use state::{AppState, PipelineView};

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use routes::{
    control, dashboard, dead_letters, docs, documents, health, items, jobs, observe, schedules,
    search,
};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes: those behind the admin token, and the public ones (health, docs, dashboard).
fn api() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let admin = OpenApiRouter::new()
        .routes(routes!(items::upsert_items))
        .routes(routes!(items::get_item, items::delete_item))
        .routes(routes!(items::delete_context))
        .routes(routes!(documents::ingest))
        .routes(routes!(documents::delete_document))
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job, jobs::update_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(schedules::list))
        .routes(routes!(search::search))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::requeue))
        .routes(routes!(dead_letters::remove))
        .routes(routes!(control::pause))
        .routes(routes!(control::resume))
        .routes(routes!(control::actors))
        .routes(routes!(observe::events))
        .routes(routes!(observe::metrics));
    let public = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::docs_page))
        .routes(routes!(dashboard::page));
    (admin, public)
}

/// The OpenAPI document of [`api`], as `GET /openapi.json` serves it.
pub(crate) fn openapi_document(settings: &crate::config::Settings) -> serde_json::Value {
    let (admin, public) = api();
    let gathered = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(public)
        .merge(admin)
        .into_openapi();
    openapi::document(gathered, settings)
}

/// The whole API with its middleware.
pub(crate) fn router(state: AppState) -> Router {
    let max_body = state.settings.server.max_body_bytes;
    let document = Arc::new(openapi_document(&state.settings));
    let (admin, public) = api();
    let (admin, _) = admin.split_for_parts();
    let (public, _) = public.split_for_parts();
    let admin = admin
        // Before the token layer, so that a wrong method without a token is still 401.
        .method_not_allowed_fallback(health::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    public
        .method_not_allowed_fallback(health::method_not_allowed)
        .merge(admin)
        .fallback(health::not_found)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
