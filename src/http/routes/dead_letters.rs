//! Dead letters: list them with their reasons, requeue failed items (one, a job's, or all) as
//! a new job with fresh attempts, or remove an entry.

use crate::domain::{ItemId, JobId, JobScope};
use crate::http::error::ErrorBody;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::responses::{
    BadRequest, Internal, TooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::http::routes::jobs::record_and_enqueue;
use crate::http::{ApiError, AppState};
use crate::queue::{DeadLetter, DeadLetters};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The last dead-letter id of the previous page (its `next_before`).
    #[param(value_type = Option<DeadLetterId>)]
    before: Option<String>,
    /// Dead letters per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A dead letter's id: its Redis stream entry id, `MILLISECONDS-SEQUENCE` (the sequence may be
/// left out).
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]{1,19}(-[0-9]{1,19})?$", example = "1700000000000-0")]
#[allow(dead_code)] // Only documents the ids the handlers take as strings.
pub struct DeadLetterId(String);

/// One page of dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    /// Dead letters in all.
    total: u64,
    /// Pass as `before` for the next page; null on the last page.
    #[schema(value_type = Option<DeadLetterId>)]
    next_before: Option<String>,
}

/// Parses a stream entry id as `DeadLetterId` documents it; `None` when it is not one. Up to
/// 19 digits a part, so that each part fits Redis's 64-bit numbers.
fn stream_id(raw: &str) -> Option<(u64, u64)> {
    let (ms, seq) = raw.split_once('-').unwrap_or((raw, "0"));
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 19 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    };
    Some((part(ms)?, part(seq)?))
}

fn is_stream_id(raw: &str) -> bool {
    stream_id(raw).is_some()
}

/// Dead letters, newest first, with their reasons; keyset pages with `before`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of dead letters.", body = DeadLetterList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let before = match query.before.as_deref() {
        None => None,
        Some(b) => Some(stream_id(b).ok_or_else(|| {
            ApiError::bad_request("before must be a dead-letter id such as 1700000000000-0")
        })?),
    };
    let letters = DeadLetters::new(app.redis.clone(), &app.keys);
    let page = if before == Some((0, 0)) {
        // Nothing comes before the first possible id (and Redis refuses the range).
        Vec::new()
    } else {
        letters.list(query.before.as_deref(), limit).await?
    };
    let total = letters.count().await?;
    let next_before = (page.len() == limit)
        .then(|| page.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DeadLetterList {
        dead_letters: page,
        total,
        next_before,
    }))
}

/// What to requeue: exactly one of `ids`, `job_id` or `all: true` (its schema is written out
/// below, since it is a choice the struct cannot show).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueBody {
    ids: Option<Vec<String>>,
    job_id: Option<String>,
    #[serde(default)]
    all: bool,
}

/// What a requeue did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequeueAnswer {
    /// Items given fresh attempts and put in new jobs.
    requeued: usize,
    /// The jobs that embed them.
    jobs: Vec<JobId>,
    /// Dead letters removed.
    removed: u64,
}

/// Gives the items of the chosen dead letters fresh attempts, embeds them in new jobs, and
/// removes those dead letters. Dead letters of malformed stream entries are not requeued.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/requeue",
    tag = "dead letters",
    operation_id = "requeue_dead_letters",
    summary = "Requeue dead letters",
    request_body = RequeueBody,
    responses(
        (status = 202, description = "The items are requeued in new jobs.", body = RequeueAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Some of the given dead letters do not exist (already requeued?); nothing changed.", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "Not exactly one of ids, job_id, all: true; a bad id; or an id naming a malformed-entry dead letter. Nothing changed.", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn requeue(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RequeueBody>,
) -> Result<(StatusCode, Json<RequeueAnswer>), ApiError> {
    let chosen = [body.ids.is_some(), body.job_id.is_some(), body.all]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen != 1 {
        return Err(ApiError::invalid(
            "give exactly one of ids (dead-letter ids), job_id, or all: true",
        ));
    }
    let letters = DeadLetters::new(app.redis.clone(), &app.keys);
    let selected: Vec<DeadLetter> = if let Some(ids) = &body.ids {
        if ids.is_empty() || ids.len() > 10_000 {
            return Err(ApiError::invalid(
                "ids must hold 1 to 10000 dead-letter ids",
            ));
        }
        if let Some(bad) = ids.iter().find(|i| !is_stream_id(i)) {
            return Err(ApiError::invalid(format!(
                "{:?} is not a dead-letter id",
                bad.chars().take(40).collect::<String>()
            )));
        }
        let wanted: BTreeSet<&String> = ids.iter().collect();
        let found: Vec<DeadLetter> = letters
            .all()
            .await?
            .into_iter()
            .filter(|d| wanted.contains(&d.id))
            .collect();
        if found.len() != wanted.len() {
            return Err(ApiError::not_found(
                "some dead letters do not exist (already requeued?)",
            ));
        }
        found
    } else if let Some(job) = &body.job_id {
        let job = JobId::parse(job)
            .map_err(|e| ApiError::invalid(e.0))?
            .to_string();
        letters
            .all()
            .await?
            .into_iter()
            .filter(|d| d.job_id.as_deref() == Some(job.as_str()))
            .collect()
    } else {
        letters.all().await?
    };

    let items: BTreeSet<ItemId> = selected
        .iter()
        .filter(|d| d.kind == "item")
        .filter_map(|d| d.item_id.clone())
        .filter_map(|i| ItemId::parse(i).ok())
        .collect();
    if selected.iter().any(|d| d.kind != "item") && body.ids.is_some() {
        return Err(ApiError::invalid(
            "only item dead letters can be requeued; remove malformed entries with DELETE",
        ));
    }
    let items: Vec<ItemId> = items.into_iter().collect();
    let reset = app.store.reset_failed_items(&items).await?;
    let mut jobs = Vec::new();
    for chunk in reset.chunks(app.settings.limits.max_job_item_ids) {
        let (job, _) = record_and_enqueue(
            &app,
            crate::domain::JobKind::Embed,
            JobScope::Items {
                item_ids: chunk.to_vec(),
            },
            None,
            None,
            None,
        )
        .await?;
        jobs.push(job.id);
    }
    let ids: Vec<String> = selected
        .iter()
        .filter(|d| d.kind == "item")
        .map(|d| d.id.clone())
        .collect();
    let removed = letters.remove(&ids).await?;
    tracing::info!(requeued = reset.len(), removed, "dead letters requeued");
    Ok((
        StatusCode::ACCEPTED,
        Json(RequeueAnswer {
            requeued: reset.len(),
            jobs,
            removed,
        }),
    ))
}

/// Removes one dead letter (for example a malformed stream entry that cannot be requeued).
#[utoipa::path(
    delete,
    path = "/v1/dead-letters/{id}",
    tag = "dead letters",
    operation_id = "remove_dead_letter",
    summary = "Remove a dead letter",
    params(("id" = DeadLetterId, Path, description = "The dead letter.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such dead letter.", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn remove(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !is_stream_id(&id) {
        return Err(ApiError::bad_request("not a dead-letter id"));
    }
    let removed = DeadLetters::new(app.redis.clone(), &app.keys)
        .remove(std::slice::from_ref(&id))
        .await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The requeue body is a choice of three shapes, which its struct (three optional fields,
/// checked by the handler) cannot show; `null` stands for an absent field, as serde takes it.
impl PartialSchema for RequeueBody {
    fn schema() -> RefOr<Schema> {
        let ids = json!({
            "type": "array",
            "minItems": 1,
            "maxItems": 10000,
            "items": {"$ref": "#/components/schemas/DeadLetterId"},
            "description": "Requeue these dead letters."
        });
        let job_id = json!({
            "type": "string",
            "format": "uuid",
            "description": "Requeue every item dead letter of this job."
        });
        let null = json!({"type": "null"});
        let shape = |title: &str, required: &str, ids: &Value, job_id: &Value, all: Value| {
            json!({
                "title": title,
                "type": "object",
                "required": [required],
                "properties": {"ids": ids, "job_id": job_id, "all": all},
                "additionalProperties": false
            })
        };
        let schema = json!({
            "description": "What to requeue: exactly one of `ids`, `job_id` or `all: true`.",
            "oneOf": [
                shape("by ids", "ids", &ids, &null, json!({"type": "boolean", "enum": [false]})),
                shape("by job", "job_id", &null, &job_id, json!({"type": "boolean", "enum": [false]})),
                shape("all", "all", &null, &null, json!({"type": "boolean", "enum": [true], "description": "Requeue every item dead letter."})),
            ]
        });
        RefOr::T(serde_json::from_value(schema).expect("the requeue schema is valid"))
    }
}

impl ToSchema for RequeueBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "DeadLetterId".into(),
            <DeadLetterId as PartialSchema>::schema(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_checked() {
        assert_eq!(stream_id("1700000000000-5"), Some((1_700_000_000_000, 5)));
        assert_eq!(stream_id("42"), Some((42, 0)));
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "a-1",
            "1-2-3",
            "1 -2",
            "99999999999999999999",
        ] {
            assert_eq!(stream_id(bad), None, "{bad:?}");
        }
        assert!(is_stream_id(&"9".repeat(19)));
    }
}
