//! Extractors whose rejections are JSON errors with a reason, like every other error.

use super::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// `Json<T>` with JSON rejections.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(format!(
            "the body does not match the schema: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text())
        )),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(format!(
            "the body is not valid JSON: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text())
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) => {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "too_large",
                    "the body exceeds server.max_body_bytes",
                )
            } else {
                ApiError::bad_request(format!("could not read the body: {}", e.body_text()))
            }
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// A parts extractor that wraps one of axum's and answers its rejection as a JSON 400.
macro_rules! json_rejecting {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident, $what:literal) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<S, T> axum::extract::FromRequestParts<S> for $name<T>
        where
            T: DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match axum::extract::$inner::<T>::from_request_parts(parts, state).await {
                    Ok(axum::extract::$inner(value)) => Ok(Self(value)),
                    Err(rejection) => Err(ApiError::bad_request(format!(
                        concat!($what, ": {}"),
                        rejection.body_text()
                    ))),
                }
            }
        }
    };
}

json_rejecting!(
    /// `Query<T>` with JSON rejections.
    ApiQuery wraps Query, "bad query string"
);
json_rejecting!(
    /// `Path<T>` with JSON rejections (a path segment that is not valid UTF-8 once decoded).
    ApiPath wraps Path, "bad path"
);
