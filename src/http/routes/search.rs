//! `POST /v1/contexts/{id}/search`: embeds the query with the same provider, through the same
//! rate-limited embedder as the pipeline (so it obeys the budget and the outage circuit), and
//! returns the nearest items of the context with their scores — the user's way to see the
//! result.

use crate::domain::{ContextId, ItemId, MetadataFilter};
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::responses::{BadRequest, Internal, TooLarge, Unauthorized, UnsupportedMediaType};
use crate::http::{ApiError, AppState};
use crate::providers::{InputKind, ProviderError};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// A search within one context.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// The text to search for: not blank, at most 8,192 bytes of UTF-8.
    #[schema(
        pattern = r"\S",
        max_length = 8192,
        example = "How do I reset my password?"
    )]
    query: String,
    /// How many nearest items to return, 1 to 100.
    #[serde(default = "default_k")]
    #[schema(minimum = 1, maximum = 100, default = 5)]
    k: usize,
    /// Only items whose metadata has these values: `{"tenant": "acme", "year": [2024, 2025]}`
    /// — each key a top-level metadata field, each value a string, integer or boolean, or a
    /// list of them (any may match). Every field must match.
    #[schema(value_type = Option<Object>, example = json!({"tenant": "acme"}))]
    filter: Option<serde_json::Value>,
}

fn default_k() -> usize {
    5
}

const MAX_K: usize = 100;
const MAX_QUERY_BYTES: usize = 8192;
/// Longest a search waits for a rate-limit permit before answering 503.
const PERMIT_WAIT: Duration = Duration::from_secs(10);

/// One item near the query.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hit {
    item_id: ItemId,
    /// Similarity to the query (higher is nearer).
    score: f32,
    /// The item's current text.
    content: String,
    /// The item's metadata.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

/// The nearest items, nearest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    context_id: ContextId,
    query: String,
    /// The generation (model and collection) that answered.
    generation: i64,
    /// The model of that generation.
    model: String,
    hits: Vec<Hit>,
}

/// Embeds the query with the configured provider (under the same rate limit as the pipeline)
/// and returns the nearest items of the context with their scores and content.
#[utoipa::path(
    post,
    path = "/v1/contexts/{context_id}/search",
    tag = "search",
    summary = "Search a context",
    params(("context_id" = ContextId, Path, description = "The context to search.")),
    request_body = SearchBody,
    responses(
        (status = 200, description = "The nearest items.", body = SearchAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such context.", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "A blank or too long query, k out of range, or a query the provider refuses.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, description = "The provider, its rate limit, the vector store or the database is unavailable; try again.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn search(
    State(app): State<AppState>,
    ApiPath(context_id): ApiPath<String>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let context = ContextId::parse(context_id).map_err(|e| ApiError::bad_request(e.0))?;
    if body.query.trim().is_empty() {
        return Err(ApiError::invalid("query must not be empty"));
    }
    if body.query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::invalid(format!(
            "query is {} bytes; the limit is {MAX_QUERY_BYTES}",
            body.query.len()
        )));
    }
    if body.k == 0 || body.k > MAX_K {
        return Err(ApiError::invalid(format!(
            "k must be between 1 and {MAX_K}"
        )));
    }
    let filter = body
        .filter
        .map(MetadataFilter::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("filter: {e}")))?
        .unwrap_or_default();
    if !app.store.context_exists(&context).await? {
        return Err(ApiError::not_found(format!("no context {context}")));
    }

    let embedder = &app.pipeline.embedder;
    let embedded = match embedder
        .embed(
            std::slice::from_ref(&body.query),
            InputKind::Query,
            Some(PERMIT_WAIT),
        )
        .await
    {
        Err(_) => {
            return Err(ApiError::unavailable(
                "the provider's rate limit is exhausted, or the limiter is restarting; try again",
            ));
        }
        Ok(Err(ProviderError::InvalidInput { reason })) => return Err(ApiError::invalid(reason)),
        Ok(Err(other)) => return Err(ApiError::unavailable(other.to_string())),
        Ok(Ok(embedded)) => embedded,
    };
    let vector = embedded
        .vectors
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the provider returned no embedding"))?;
    let hits = app
        .vectors
        .search(&context, vector, body.k, &filter)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let ids: Vec<ItemId> = hits.iter().map(|h| h.item_id.clone()).collect();
    let mut rows = app.store.item_contents(&ids).await?;
    // A hit whose item was deleted a moment ago (its point not removed yet) is left out.
    Ok(Json(SearchAnswer {
        context_id: context,
        query: body.query,
        generation: 1,
        model: app.settings.embedding.model.clone(),
        hits: hits
            .into_iter()
            .filter_map(|h| {
                let row = rows.remove(&h.item_id)?;
                Some(Hit {
                    content: row.content,
                    metadata: row.metadata.to_value(),
                    item_id: h.item_id,
                    score: h.score,
                })
            })
            .collect(),
    }))
}
