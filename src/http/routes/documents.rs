//! `POST /v1/contexts/{id}/documents` (a file in, its chunks out as items) and `DELETE
//! /v1/documents/{id}` (every chunk, and its point, gone).
//!
//! A document is detected from its bytes, extracted and split off the async runtime, on a
//! blocking thread, where a panic of an extractor on a hostile file is caught and answered as
//! a refused document. Its chunks become the items `{document id}#{n}` in one upsert
//! transaction with the chunks that no longer exist deleted, so re-ingesting a changed
//! document re-embeds only the chunks whose content changed and an unchanged one costs no API
//! call. One embed job covers the chunks when any changed.

use crate::documents::{self, Chunk, ChunkSettings, DocumentError, DocumentKind};
use crate::domain::{
    ContextId, DocumentId, ItemContent, ItemId, JobId, JobKind, JobScope, Metadata,
};
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::responses::{BadRequest, Internal, Unauthorized, Unavailable};
use crate::http::routes::items::{Deleted, follow_up};
use crate::http::routes::jobs::record_and_enqueue;
use crate::http::{ApiError, AppState};
use crate::store::NewItem;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DocumentQuery {
    /// The document's id; its chunks are the items `{document_id}#{n}`.
    #[param(value_type = DocumentId)]
    document_id: String,
    /// The declared type; default: the Content-Type. The bytes decide in any case (a
    /// contradiction is refused).
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<DocumentKind>)]
    kind: Option<DocumentKind>,
    /// Tokens per chunk (default `documents.chunk_tokens`), at most the provider's tokens per
    /// input.
    #[param(minimum = 8)]
    chunk_tokens: Option<usize>,
    /// Tokens neighbouring chunks share (default `documents.overlap_tokens`).
    overlap_tokens: Option<usize>,
    /// A JSON object written into every chunk's metadata (and its point's payload).
    metadata: Option<String>,
}

/// What ingesting a document did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentIngested {
    document_id: DocumentId,
    context_id: ContextId,
    #[serde(rename = "type")]
    kind: DocumentKind,
    /// Pages of a PDF (null for other types).
    pages: Option<usize>,
    /// Chunks the document has now.
    chunks: usize,
    /// Chunks new, with changed content (both embedded by `job_id`), with changed metadata
    /// only, and unchanged.
    created: u64,
    changed: u64,
    metadata_changed: u64,
    unchanged: u64,
    /// Chunks of the earlier version that no longer exist: deleted, with their points.
    removed: u64,
    /// The job embedding the new and changed chunks (and any left waiting by an earlier
    /// upload); null when none needs embedding.
    job_id: Option<JobId>,
}

fn refused(e: DocumentError) -> ApiError {
    match e {
        DocumentError::Unsupported(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.to_string(),
        ),
        _ => ApiError::invalid(e.to_string()),
    }
}

/// The metadata of one chunk: the caller's fields, then where the chunk comes from.
fn chunk_metadata(
    base: &serde_json::Map<String, Value>,
    document: &DocumentId,
    kind: DocumentKind,
    chunk: &Chunk,
) -> Value {
    let mut fields = base.clone();
    fields.insert("document_id".into(), json!(document.as_str()));
    fields.insert("document_type".into(), json!(kind));
    fields.insert("chunk".into(), json!(chunk.index));
    fields.insert("char_start".into(), json!(chunk.char_start));
    fields.insert("char_end".into(), json!(chunk.char_end));
    if let Some(page) = chunk.page {
        fields.insert("page".into(), json!(page));
    }
    if !chunk.heading_path.is_empty() {
        fields.insert("heading_path".into(), json!(chunk.heading_path));
    }
    Value::Object(fields)
}

/// Ingests a document: the raw file is the body (PDF, HTML, Markdown or plain text, detected
/// from its bytes). Its chunks replace the document's earlier chunks: new and changed ones are
/// embedded by one job, vanished ones are deleted with their points, unchanged ones cost
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/contexts/{context_id}/documents",
    tag = "documents",
    summary = "Ingest a document as chunks",
    params(
        ("context_id" = ContextId, Path, description = "The context (created when new)."),
        DocumentQuery,
    ),
    request_body(content = Vec<u8>, description = "The file: PDF, HTML, Markdown or plain text (UTF-8).",
        content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The document's chunks are stored; what changed.", body = DocumentIngested),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, description = "The document's chunks belong to another context; nothing was changed.", body = ErrorBody),
        (status = 413, description = "The document exceeds documents.max_bytes (or server.max_body_bytes); nothing was changed.", body = ErrorBody),
        (status = 415, description = "The declared type (Content-Type) is not one embedq reads; nothing was changed.", body = ErrorBody),
        (status = 422, description = "The bytes are not a PDF, HTML, Markdown or UTF-8 text document, or not of the declared type; the document cannot be read (corrupt, encrypted), holds no text (an image-only PDF) or makes too many chunks; or a setting is out of range. Nothing was changed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn ingest(
    State(app): State<AppState>,
    ApiPath(context_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DocumentQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DocumentIngested>, ApiError> {
    let context = ContextId::parse(context_id).map_err(|e| ApiError::bad_request(e.0))?;
    let document = DocumentId::parse(query.document_id).map_err(|e| ApiError::bad_request(e.0))?;
    let settings = &app.settings.documents;
    let embedder = app.pipeline.embedder.embedder().clone();
    let max_input = embedder.limits().max_tokens_per_input;
    let chunking = ChunkSettings {
        max_tokens: query.chunk_tokens.unwrap_or(settings.chunk_tokens),
        overlap_tokens: query.overlap_tokens.unwrap_or(settings.overlap_tokens),
    };
    if chunking.max_tokens < 8 || chunking.max_tokens > max_input {
        return Err(ApiError::invalid(format!(
            "chunk_tokens must be between 8 and {max_input} (the provider's tokens per input)"
        )));
    }
    if chunking.overlap_tokens >= chunking.max_tokens {
        return Err(ApiError::invalid(
            "overlap_tokens must be below chunk_tokens",
        ));
    }
    let base = match query.metadata {
        None => serde_json::Map::new(),
        Some(raw) => {
            let value: Value = serde_json::from_str(&raw)
                .map_err(|e| ApiError::invalid(format!("metadata: not JSON: {e}")))?;
            let parsed = Metadata::parse(value, app.settings.limits.max_metadata_bytes)
                .map_err(|e| ApiError::invalid(format!("metadata: {e}")))?;
            match parsed.to_value() {
                Value::Object(fields) => fields,
                _ => serde_json::Map::new(),
            }
        }
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the document is larger than documents.max_bytes ({}) or server.max_body_bytes ({})",
                settings.max_bytes, app.settings.server.max_body_bytes
            ),
        )
    };
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => ApiError::bad_request(format!("the body could not be read: {e}")),
    })?;
    if bytes.len() > settings.max_bytes {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid("the document is empty"));
    }
    let max_chunks = settings.max_chunks;
    let declared = query.kind.map(|k| k.name().to_owned()).or_else(|| {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // Off the runtime's threads; a panicking extractor refuses the document, nothing more.
    let split = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let kind = DocumentKind::detect(&bytes, declared.as_deref())?;
            let extracted = documents::extract(kind, &bytes)?;
            let count = |text: &str| embedder.count_tokens(text);
            let chunks = documents::chunk(kind, &extracted, chunking, max_chunks, &count)?;
            Ok::<_, DocumentError>((kind, extracted.page_starts.len(), chunks))
        }))
    })
    .await;
    let (kind, pages, chunks) = match split {
        Ok(Ok(done)) => done.map_err(refused)?,
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(document = %document, "the extractor failed on a document");
            return Err(ApiError::invalid(
                "the document cannot be read: the extractor failed on it (a corrupt or hostile file)",
            ));
        }
    };
    if chunks.is_empty() {
        return Err(refused(DocumentError::NoText("")));
    }
    let limits = &app.settings.limits;
    let mut items = Vec::with_capacity(chunks.len());
    for chunk in &chunks {
        let content = ItemContent::parse(chunk.text.clone(), limits.max_content_bytes)
            .map_err(|e| ApiError::invalid(format!("chunk {}: {e}", chunk.index)))?;
        let metadata = Metadata::parse(
            chunk_metadata(&base, &document, kind, chunk),
            limits.max_metadata_bytes,
        )
        .map_err(|e| ApiError::invalid(format!("chunk {} metadata: {e}", chunk.index)))?;
        items.push(NewItem {
            id: document.chunk(chunk.index),
            content,
            metadata: Some(metadata),
        });
    }
    let kept: HashSet<&ItemId> = items.iter().map(|i| &i.id).collect();
    let earlier = app.store.document_chunks(&document).await?;
    if let Some((_, other)) = earlier.iter().find(|(_, c)| *c != context) {
        return Err(ApiError::conflict(format!(
            "document {document} belongs to context {other}; delete it there first"
        )));
    }
    let vanished: Vec<ItemId> = earlier
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !kept.contains(id))
        .collect();
    let report = app.store.upsert_items(&context, &items, &vanished).await?;
    follow_up(&app, &report.tombstones, &report.payload_changes).await;
    let c = report.counts;
    // Chunks left PENDING by an earlier upload whose job could not be made are embedded too.
    let waiting =
        c.created + c.changed > 0 || app.store.pending_document_chunks(&document).await? > 0;
    let job_id = if waiting {
        let mut scope = JobScope::Items {
            item_ids: items.into_iter().map(|i| i.id).collect(),
        };
        scope.normalise();
        let (job, _) = record_and_enqueue(&app, JobKind::Embed, scope, None, None, None).await?;
        Some(job.id)
    } else {
        None
    };
    tracing::info!(document = %document, context = %context, chunks = chunks.len(),
        created = c.created, changed = c.changed, removed = c.deleted, "document ingested");
    Ok(Json(DocumentIngested {
        document_id: document,
        context_id: context,
        kind,
        pages: (kind == DocumentKind::Pdf).then_some(pages),
        chunks: chunks.len(),
        created: c.created,
        changed: c.changed,
        metadata_changed: c.metadata_changed,
        unchanged: c.unchanged,
        removed: c.deleted,
        job_id,
    }))
}

/// Deletes a document: every chunk of it, and their points.
#[utoipa::path(
    delete,
    path = "/v1/documents/{document_id}",
    tag = "documents",
    summary = "Delete a document's chunks",
    params(("document_id" = DocumentId, Path, description = "The document.")),
    responses(
        (status = 200, description = "The document's chunks are deleted.", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such document.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_document(
    State(app): State<AppState>,
    ApiPath(document_id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let document = DocumentId::parse(document_id).map_err(|e| ApiError::bad_request(e.0))?;
    let chunks = app.store.document_chunks(&document).await?;
    if chunks.is_empty() {
        return Err(ApiError::not_found(format!("no document {document}")));
    }
    let ids: Vec<ItemId> = chunks.into_iter().map(|(id, _)| id).collect();
    let (mut deleted, mut finished) = (0u64, 0u64);
    for page in ids.chunks(500) {
        let report = app.store.delete_items(page, None).await?;
        follow_up(&app, &report.deleted, &[]).await;
        deleted += report.deleted.len() as u64;
        finished += report.finished.len() as u64;
    }
    tracing::info!(document = %document, deleted, "document deleted");
    Ok(Json(Deleted::new(deleted, finished)))
}
