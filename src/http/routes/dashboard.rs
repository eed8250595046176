//! The dashboard at `/`: one static page (no front-end build) that reads the admin API with
//! the token the operator types in, so it works behind the admin token.

use axum::response::Html;

const PAGE: &str = include_str!("../assets/dashboard.html");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
