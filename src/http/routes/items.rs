//! `POST /v1/contexts/{id}/items` (bulk upsert) and `GET /v1/items/{id}`.

use crate::domain::{ContextId, ItemContent, ItemId};
use crate::http::extract::ApiJson;
use crate::http::{ApiError, AppState};
use crate::store::{ItemRecord, NewItem, UpsertCounts};
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use std::collections::HashSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    items: Vec<RawItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    id: String,
    content: String,
}

/// Upserts items into a context (created when new). Changed content makes an item PENDING;
/// unchanged content leaves it as it is. Answers the counts of created, changed and unchanged.
pub async fn upsert_items(
    State(app): State<AppState>,
    Path(context_id): Path<String>,
    ApiJson(body): ApiJson<UpsertBody>,
) -> Result<Json<UpsertCounts>, ApiError> {
    let context = ContextId::parse(context_id).map_err(|e| ApiError::bad_request(e.0))?;
    let limits = &app.settings.limits;
    if body.items.is_empty() {
        return Err(ApiError::invalid("items must not be empty"));
    }
    if body.items.len() > limits.max_items_per_request {
        return Err(ApiError::invalid(format!(
            "{} items in one request; the limit is {} (limits.max_items_per_request)",
            body.items.len(),
            limits.max_items_per_request
        )));
    }
    let mut seen = HashSet::with_capacity(body.items.len());
    let mut items = Vec::with_capacity(body.items.len());
    for (i, raw) in body.items.into_iter().enumerate() {
        let id =
            ItemId::parse(raw.id).map_err(|e| ApiError::invalid(format!("items[{i}].id: {e}")))?;
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(format!(
                "items[{i}].id: {id} appears more than once in this request"
            )));
        }
        let content = ItemContent::parse(raw.content, limits.max_content_bytes)
            .map_err(|e| ApiError::invalid(format!("items[{i}].content: {e}")))?;
        items.push(NewItem { id, content });
    }
    let counts = app.store.upsert_items(&context, &items).await?;
    tracing::info!(context = %context, created = counts.created, changed = counts.changed, unchanged = counts.unchanged, "items upserted");
    Ok(Json(counts))
}

pub async fn get_item(
    State(app): State<AppState>,
    Path(item_id): Path<String>,
) -> Result<Json<ItemRecord>, ApiError> {
    let id = ItemId::parse(item_id).map_err(|e| ApiError::bad_request(e.0))?;
    app.store
        .get_item(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no item {id}")))
}
