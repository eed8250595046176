//! `POST /v1/contexts/{id}/search`: embeds the query with the same provider (under the same
//! rate limit) and returns the nearest items of the context with their scores — the user's way
//! to see the result.

use crate::actors::rate_limiter::{CallOutcome, RateLimiterMsg};
use crate::domain::ContextId;
use crate::http::extract::ApiJson;
use crate::http::{ApiError, AppState};
use crate::providers::ProviderError;
use axum::Json;
use axum::extract::{Path, State};
use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

const MAX_K: usize = 100;
const MAX_QUERY_BYTES: usize = 8192;
/// Longest a search waits for a rate-limit permit before answering 503.
const PERMIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct Hit {
    item_id: String,
    score: f32,
    content: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    context_id: String,
    query: String,
    hits: Vec<Hit>,
}

pub async fn search(
    State(app): State<AppState>,
    Path(context_id): Path<String>,
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
    if !app.store.context_exists(&context).await? {
        return Err(ApiError::not_found(format!("no context {context}")));
    }

    let tokens = app.embedder.count_tokens(&body.query) as u64;
    let limiter = ActorRef::<RateLimiterMsg>::where_is(app.rate_limiter_name.clone())
        .ok_or_else(|| ApiError::unavailable("the rate limiter is restarting; try again"))?;
    let permit = match limiter
        .call(
            |reply| RateLimiterMsg::Acquire { tokens, reply },
            Some(PERMIT_WAIT),
        )
        .await
    {
        Ok(CallResult::Success(permit)) => permit,
        _ => {
            return Err(ApiError::unavailable(
                "the provider's rate limit is exhausted; try again",
            ));
        }
    };
    let embedded = match app.embedder.embed(std::slice::from_ref(&body.query)).await {
        Ok(e) => {
            permit.release(CallOutcome::Success(e.hints));
            e
        }
        Err(e) => {
            permit.release(match &e {
                ProviderError::Transient {
                    rate_limited: true,
                    retry_after,
                    hints,
                    ..
                } => CallOutcome::RateLimited {
                    retry_after: *retry_after,
                    hints: *hints,
                },
                ProviderError::Transient { .. } => CallOutcome::Overloaded,
                _ => CallOutcome::Neutral,
            });
            return Err(match e {
                ProviderError::InvalidInput { reason } => ApiError::invalid(reason),
                other => ApiError::unavailable(other.to_string()),
            });
        }
    };
    let vector = embedded
        .vectors
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the provider returned no embedding"))?;
    let hits = app
        .vectors
        .search(&context, vector, body.k)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let ids: Vec<String> = hits.iter().map(|h| h.item_id.clone()).collect();
    let mut contents = app.store.item_contents(&ids).await?;
    Ok(Json(SearchAnswer {
        context_id: context.to_string(),
        query: body.query,
        hits: hits
            .into_iter()
            .map(|h| Hit {
                content: contents.remove(&h.item_id),
                item_id: h.item_id,
                score: h.score,
            })
            .collect(),
    }))
}
