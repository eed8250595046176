//! The dashboard at `/`: one static page (no front-end build) that reads the admin API with
//! the token the operator types in, so it works behind the admin token.

use axum::response::Html;

const PAGE: &str = include_str!("../assets/dashboard.html");

/// The dashboard: a static page that reads the admin API with the token typed into it.
#[utoipa::path(
    get,
    path = "/",
    tag = "docs",
    operation_id = "dashboard",
    summary = "The dashboard",
    responses((status = 200, description = "The dashboard page.", content_type = "text/html", body = String)),
)]
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
