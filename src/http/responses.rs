//! The responses most routes share, as OpenAPI components (`#/components/responses/...`).
//! Never built: they only describe responses.
#![allow(dead_code)]

use crate::http::error::ErrorBody;
use utoipa::ToResponse;

/// Malformed input: a bad id in the path, bad JSON, a bad query string or header. The
/// reason says which; nothing was changed.
#[derive(ToResponse)]
pub struct BadRequest(ErrorBody);

/// The bearer token is missing or wrong.
#[derive(ToResponse)]
pub struct Unauthorized(ErrorBody);

/// The body exceeds `server.max_body_bytes`.
#[derive(ToResponse)]
pub struct TooLarge(ErrorBody);

/// The body was not sent as `Content-Type: application/json`.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(ErrorBody);

/// An internal error; the daemon logged its details.
#[derive(ToResponse)]
pub struct Internal(ErrorBody);

/// A backend (the database, Redis) is unavailable; nothing was changed, try again.
#[derive(ToResponse)]
pub struct Unavailable(ErrorBody);
