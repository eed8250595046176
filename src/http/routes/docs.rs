//! The API's own description: the OpenAPI document (`GET /openapi.json`) and a page that
//! renders it (`GET /docs`). Both are public, like `/healthz`: they describe the API, not its
//! data.

use axum::response::Html;
use axum::{Extension, Json};
use serde_json::Value;
use std::sync::Arc;

const PAGE: &str = include_str!("../assets/docs.html");

/// This document: every route with its parameters, bodies, responses and the limits configured.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    summary = "The OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object)),
)]
pub async fn openapi_json(Extension(document): Extension<Arc<Value>>) -> Json<Value> {
    Json(document.as_ref().clone())
}

/// A browsable page that renders `/openapi.json` (no external assets).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    summary = "The API documentation page",
    responses((status = 200, description = "The documentation page.", content_type = "text/html", body = String)),
)]
pub async fn docs_page() -> Html<&'static str> {
    Html(PAGE)
}
