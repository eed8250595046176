//! `POST /v1/contexts/{id}/items` (bulk upsert) and `GET /v1/items/{id}`.

use crate::domain::{ContextId, ItemContent, ItemId};
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::responses::{
    BadRequest, Internal, TooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::http::{ApiError, AppState};
use crate::store::{ItemRecord, NewItem, UpsertCounts};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use std::collections::HashSet;
use utoipa::ToSchema;

/// Items to upsert into one context.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    /// 1 to `limits.max_items_per_request` items, each id at most once.
    #[schema(min_items = 1)]
    items: Vec<RawItem>,
}

/// One item: the producer's own id and its text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    #[schema(value_type = ItemId)]
    id: String,
    /// The text to embed: not blank, no NUL character, at most `limits.max_content_bytes`
    /// bytes of UTF-8.
    #[schema(
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "To change your login credentials, open Settings"
    )]
    content: String,
}

/// Upserts items into a context (created when new). Changed content makes an item PENDING;
/// unchanged content leaves it as it is. Answers the counts of created, changed and unchanged.
#[utoipa::path(
    post,
    path = "/v1/contexts/{context_id}/items",
    tag = "items",
    summary = "Upsert items into a context",
    params(("context_id" = ContextId, Path, description = "The context (created when new).")),
    request_body = UpsertBody,
    responses(
        (status = 200, description = "The items are stored; counts of what changed.", body = UpsertCounts),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such route (an empty context id).", body = ErrorBody),
        (status = 409, description = "An item id already belongs to another context; nothing was changed.", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The body breaks a rule: no items, too many, a bad or repeated id, blank or too long content; nothing was changed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn upsert_items(
    State(app): State<AppState>,
    ApiPath(context_id): ApiPath<String>,
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

/// An item's status, attempts, last error, content hash and the model it was embedded with.
#[utoipa::path(
    get,
    path = "/v1/items/{item_id}",
    tag = "items",
    summary = "An item's status",
    params(("item_id" = ItemId, Path, description = "The item.")),
    responses(
        (status = 200, description = "The item (without its content).", body = ItemRecord),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such item.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn get_item(
    State(app): State<AppState>,
    ApiPath(item_id): ApiPath<String>,
) -> Result<Json<ItemRecord>, ApiError> {
    let id = ItemId::parse(item_id).map_err(|e| ApiError::bad_request(e.0))?;
    app.store
        .get_item(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no item {id}")))
}
