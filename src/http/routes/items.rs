//! `POST /v1/contexts/{id}/items` (bulk upsert, with deletes), `GET` and `DELETE
//! /v1/items/{id}`, and `DELETE /v1/contexts/{id}`.
//!
//! SQL is changed first, in one transaction; the vector store follows at once through
//! [`crate::point_sync::PointSync`] (deleted items' points removed, metadata-only changes
//! written into payloads). Should the vector store fail then, the change stays owed in SQL and
//! the reconciler applies it within seconds: the answer is the same either way.

use crate::domain::{ContextId, ItemContent, ItemId, Metadata};
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::responses::{
    BadRequest, Internal, TooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::http::{ApiError, AppState};
use crate::store::{ItemRecord, NewItem, PayloadChange, Tombstone, UpsertCounts};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;

/// Items to upsert into one context, and items of it to delete.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    /// Up to `limits.max_items_per_request` items, each id at most once.
    #[serde(default)]
    items: Vec<RawItem>,
    /// Ids of items of this context to delete (their points leave the vector store). Up to
    /// `limits.max_items_per_request`; an id may not also be in `items`. Unknown ids are
    /// counted in `not_found`.
    #[serde(default)]
    #[schema(value_type = Vec<ItemId>)]
    delete: Vec<String>,
}

/// One item: the producer's own id, its text and, optionally, its metadata.
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
    /// The item's own fields (a JSON object of at most `limits.max_metadata_bytes` bytes),
    /// stored with it and written into its point's payload, where search can filter on them.
    /// Absent keeps the metadata the item has; `{}` clears it. A change of metadata alone
    /// updates the payload without embedding again.
    #[schema(value_type = Option<Object>, example = json!({"tenant": "acme", "lang": "en"}))]
    metadata: Option<serde_json::Value>,
}

/// Upserts items into a context (created when new) and deletes the `delete` ids, in one
/// transaction. Changed content makes an item PENDING; changed metadata alone updates its
/// point's payload; unchanged items are left as they are; deleted items leave SQL and the
/// vector store. Answers the counts of each.
#[utoipa::path(
    post,
    path = "/v1/contexts/{context_id}/items",
    tag = "items",
    summary = "Upsert and delete items of a context",
    params(("context_id" = ContextId, Path, description = "The context (created when new).")),
    request_body = UpsertBody,
    responses(
        (status = 200, description = "The items are stored and deleted; counts of what changed.", body = UpsertCounts),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such route (an empty context id).", body = ErrorBody),
        (status = 409, description = "An item id belongs to another context; nothing was changed.", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The body breaks a rule: nothing to do, too many items, a bad or repeated id, blank or too long content, bad metadata; nothing was changed.", body = ErrorBody),
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
    if body.items.is_empty() && body.delete.is_empty() {
        return Err(ApiError::invalid(
            "nothing to do: give items to upsert, ids to delete, or both",
        ));
    }
    for (what, n) in [
        ("items", body.items.len()),
        ("delete ids", body.delete.len()),
    ] {
        if n > limits.max_items_per_request {
            return Err(ApiError::invalid(format!(
                "{n} {what} in one request; the limit is {} (limits.max_items_per_request)",
                limits.max_items_per_request
            )));
        }
    }
    let mut seen = HashSet::with_capacity(body.items.len());
    let mut items = Vec::with_capacity(body.items.len());
    for (i, raw) in body.items.into_iter().enumerate() {
        let id =
            ItemId::parse(raw.id).map_err(|e| ApiError::invalid(format!("items[{i}].id: {e}")))?;
        if id.is_chunk() {
            return Err(ApiError::invalid(format!(
                "items[{i}].id: {id} names a document's chunk (an id with #); chunks are made by uploading the document (POST /v1/contexts/{{id}}/documents)"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(format!(
                "items[{i}].id: {id} appears more than once in this request"
            )));
        }
        let content = ItemContent::parse(raw.content, limits.max_content_bytes)
            .map_err(|e| ApiError::invalid(format!("items[{i}].content: {e}")))?;
        let metadata = raw
            .metadata
            .map(|m| Metadata::parse(m, limits.max_metadata_bytes))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("items[{i}].metadata: {e}")))?;
        items.push(NewItem {
            id,
            content,
            metadata,
        });
    }
    let mut delete = Vec::with_capacity(body.delete.len());
    let mut deleting = HashSet::with_capacity(body.delete.len());
    for (i, raw) in body.delete.into_iter().enumerate() {
        let id = ItemId::parse(raw).map_err(|e| ApiError::invalid(format!("delete[{i}]: {e}")))?;
        if seen.contains(&id) {
            return Err(ApiError::invalid(format!(
                "delete[{i}]: {id} is also in items; an item is either upserted or deleted"
            )));
        }
        if !deleting.insert(id.clone()) {
            return Err(ApiError::invalid(format!(
                "delete[{i}]: {id} appears more than once in this request"
            )));
        }
        delete.push(id);
    }
    let report = app.store.upsert_items(&context, &items, &delete).await?;
    follow_up(&app, &report.tombstones, &report.payload_changes).await;
    let c = report.counts;
    tracing::info!(context = %context, created = c.created, changed = c.changed,
        metadata_changed = c.metadata_changed, unchanged = c.unchanged, deleted = c.deleted,
        "items upserted");
    Ok(Json(c))
}

/// Applies to the vector store what a commit owes it; a failure is left to the reconciler's
/// sweep (the change is recorded in SQL), so the caller's answer does not depend on it.
pub(crate) async fn follow_up(app: &AppState, tombstones: &[Tombstone], changes: &[PayloadChange]) {
    if let Err(e) = app.point_sync.remove_points(tombstones).await {
        tracing::warn!(error = %e, count = tombstones.len(),
            "deleted items' points not removed yet; the reconciler will");
    }
    if let Err(e) = app.point_sync.apply_payloads(changes).await {
        tracing::warn!(error = %e, count = changes.len(),
            "metadata not written into the points yet; the reconciler will");
    }
}

/// What a delete did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Items deleted.
    deleted: u64,
    /// Jobs that ended because their last open items were deleted.
    jobs_finished: u64,
}

impl Deleted {
    pub(crate) fn new(deleted: u64, jobs_finished: u64) -> Self {
        Self {
            deleted,
            jobs_finished,
        }
    }
}

/// Deletes an item: its row and its point go, and a job still holding it counts it DELETED.
/// An embedding in flight for it is dropped, never written back.
#[utoipa::path(
    delete,
    path = "/v1/items/{item_id}",
    tag = "items",
    summary = "Delete an item",
    params(("item_id" = ItemId, Path, description = "The item.")),
    responses(
        (status = 200, description = "The item is deleted.", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such item.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_item(
    State(app): State<AppState>,
    ApiPath(item_id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let id = ItemId::parse(item_id).map_err(|e| ApiError::bad_request(e.0))?;
    let report = app
        .store
        .delete_items(std::slice::from_ref(&id), None)
        .await?;
    if report.deleted.is_empty() {
        return Err(ApiError::not_found(format!("no item {id}")));
    }
    follow_up(&app, &report.deleted, &[]).await;
    tracing::info!(item = %id, "item deleted");
    Ok(Json(Deleted {
        deleted: report.deleted.len() as u64,
        jobs_finished: report.finished.len() as u64,
    }))
}

/// Deletes a context and every item of it (a page of items per transaction).
#[utoipa::path(
    delete,
    path = "/v1/contexts/{context_id}",
    tag = "items",
    summary = "Delete a context and its items",
    params(("context_id" = ContextId, Path, description = "The context.")),
    responses(
        (status = 200, description = "The context and its items are deleted.", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such context.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_context(
    State(app): State<AppState>,
    ApiPath(context_id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let context = ContextId::parse(context_id).map_err(|e| ApiError::bad_request(e.0))?;
    let Some(report) = app.store.delete_context(&context).await? else {
        return Err(ApiError::not_found(format!("no context {context}")));
    };
    for page in report.deleted.chunks(500) {
        follow_up(&app, page, &[]).await;
    }
    tracing::info!(context = %context, deleted = report.deleted.len(), "context deleted");
    Ok(Json(Deleted {
        deleted: report.deleted.len() as u64,
        jobs_finished: report.finished.len() as u64,
    }))
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
