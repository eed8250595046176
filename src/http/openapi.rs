//! The OpenAPI document of the HTTP API (`GET /openapi.json`): what is said of the API as a
//! whole (its description, tags, shared responses, the bearer scheme) is here; the paths come
//! from the one route list in [`super::api`], where each handler's `#[utoipa::path]` is
//! registered together with its route. The configured limits are filled in when it is served.
//! `GET /docs` renders it (a static page, no external assets).

use crate::config::Settings;
use crate::http::error::ErrorBody;
use crate::http::responses;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "embedq",
        description = "Keeps the vector embeddings of a web backend's text items in sync, off the \
            request path. Every `/v1` route and `/metrics` need `Authorization: Bearer \
            $EMBEDQ_ADMIN_TOKEN` when a token is set (without one the daemon listens on loopback \
            only). Errors are JSON `{\"error\": {\"code\", \"reason\"}}`: a 4xx for bad input \
            (nothing is changed), 503 when a backend is unavailable.",
    ),
    components(
        schemas(ErrorBody),
        responses(
            responses::BadRequest,
            responses::Unauthorized,
            responses::TooLarge,
            responses::UnsupportedMediaType,
            responses::Internal,
            responses::Unavailable,
        ),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "items", description = "The producer's text items, grouped in contexts."),
        (name = "documents", description = "Files (PDF, HTML, Markdown, text) split into chunks, each an item."),
        (name = "jobs", description = "Embedding jobs: enqueue in milliseconds, then poll."),
        (name = "schedules", description = "Jobs that run themselves, from the configuration's [[schedules]]."),
        (name = "search", description = "Nearest items of a context."),
        (name = "dead letters", description = "Items that ended FAILED and malformed stream entries."),
        (name = "control", description = "Pause and resume intake; the actor tree."),
        (name = "observe", description = "Live events and Prometheus metrics."),
        (name = "health", description = "Liveness and readiness (no token needed)."),
        (name = "docs", description = "This document, its browsable page, and the dashboard (no token needed)."),
    ),
)]
pub struct ApiDoc;

/// Declares the bearer scheme that the admin routes name in their `security`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token, `EMBEDQ_ADMIN_TOKEN` (required when it is set).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served: the one gathered from the route list, with the configured limits
/// filled in.
pub(crate) fn document(gathered: utoipa::openapi::OpenApi, settings: &Settings) -> Value {
    let mut doc = serde_json::to_value(gathered).expect("the OpenAPI document serialises");
    let limits = &settings.limits;
    let schemas = &mut doc["components"]["schemas"];
    let items = &mut schemas["UpsertBody"]["properties"]["items"];
    items["maxItems"] = json!(limits.max_items_per_request);
    // Identical items repeat an id, which the handler refuses (the derive has no attribute for
    // it on a `Vec`).
    items["uniqueItems"] = json!(true);
    schemas["RawItem"]["properties"]["content"]["maxLength"] = json!(limits.max_content_bytes);
    if let Some(variants) = schemas["JobScope"]["oneOf"].as_array_mut() {
        for variant in variants {
            if let Some(ids) = variant.pointer_mut("/properties/item_ids") {
                ids["maxItems"] = json!(limits.max_job_item_ids);
            }
            // `deny_unknown_fields` holds for each variant, which the derive does not carry
            // into the variants' schemas.
            variant["additionalProperties"] = json!(false);
        }
    }
    doc["info"]["description"] = json!(format!(
        "{} Request bodies are at most {} bytes (`server.max_body_bytes`; more is 413).",
        doc["info"]["description"].as_str().unwrap_or_default(),
        settings.server.max_body_bytes
    ));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ItemStatus, JobId, JobScope, JobState};
    use std::collections::BTreeSet;

    fn doc() -> Value {
        crate::http::openapi_document(&Settings::defaults())
    }

    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn records_match_their_schemas() {
        let doc = doc();
        let item = crate::store::ItemRecord {
            id: crate::domain::ItemId::parse("a").unwrap(),
            context_id: crate::domain::ContextId::parse("c").unwrap(),
            status: ItemStatus::Pending,
            attempts: 0,
            last_error: None,
            content_hash: crate::domain::ContentHash::of("a"),
            embedded_model: None,
            embedded_hash: None,
            version: 1,
            metadata: serde_json::json!({}),
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(
            keys(&serde_json::to_value(&item).unwrap()),
            properties(&doc, "ItemRecord")
        );
        let job = crate::store::JobRecord {
            id: JobId::new(),
            kind: crate::domain::JobKind::Embed,
            scope: JobScope::All,
            model: "m".into(),
            state: JobState::Queued,
            priority: crate::domain::Priority::Normal,
            tenant: None,
            total: 0,
            completed: 0,
            failed: 0,
            skipped: 0,
            deleted: 0,
            tokens: 0,
            planning_cursor: None,
            planned_at: None,
            idempotency_key: None,
            error: None,
            result: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(
            keys(&serde_json::to_value(&job).unwrap()),
            properties(&doc, "JobRecord")
        );
        let counts = crate::store::UpsertCounts {
            created: 1,
            changed: 0,
            metadata_changed: 0,
            unchanged: 0,
            deleted: 0,
            not_found: 0,
        };
        assert_eq!(
            keys(&serde_json::to_value(counts).unwrap()),
            properties(&doc, "UpsertCounts")
        );
        let letter = crate::queue::DeadLetter {
            id: "1-0".into(),
            kind: "item".into(),
            job_id: None,
            item_id: None,
            attempts: None,
            reason: String::new(),
            stream: None,
            entry_id: None,
            payload: None,
            at_ms: None,
        };
        assert_eq!(
            keys(&serde_json::to_value(&letter).unwrap()),
            properties(&doc, "DeadLetter")
        );
    }

    #[test]
    fn limits_are_filled_in() {
        let mut settings = Settings::defaults();
        settings.limits.max_items_per_request = 7;
        let doc = crate::http::openapi_document(&settings);
        assert_eq!(
            doc["components"]["schemas"]["UpsertBody"]["properties"]["items"]["maxItems"],
            7
        );
        assert!(
            doc["components"]["schemas"]["RawItem"]["properties"]["content"]["maxLength"].is_u64()
        );
    }

    #[test]
    fn admin_routes_declare_the_bearer_scheme() {
        let doc = doc();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let secured = op["security"] == json!([{"bearer": []}]);
                let admin = path.starts_with("/v1/") || path == "/metrics";
                assert_eq!(secured, admin, "{method} {path}");
                if admin {
                    assert!(op["responses"]["401"].is_object(), "{method} {path}");
                }
            }
        }
    }
}
