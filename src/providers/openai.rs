//! A client for any OpenAI-compatible `POST {base_url}/embeddings` (OpenAI, Azure OpenAI,
//! Ollama, vLLM, TEI). Inputs go as an array with `encoding_format: "base64"` (little-endian
//! f32, a third of the bytes of JSON floats); one pooled reqwest client reuses connections.
//! Every response is checked (count, index order, dimension, finite numbers) and every error is
//! classified as transient, invalid input or fatal. The `dimensions` parameter asks a model that
//! can shorten its vectors for `embedding.dimension`; an answer whose vectors all have another
//! dimension is a configuration error (fatal: intake pauses, no attempt is used), named with
//! the setting to change.

use super::rate_limit_headers::{parse_retry_after, should_retry};
use super::{
    Embedded, Embedder, InputKind, ProviderError, RateLimitHints, RequestLimits, TokenCounter,
};
use crate::config::{
    DimensionsParameter, EmbeddingSettings, InputTypes, Provider, ProviderAuth, Secret,
};
use base64::Engine;
use reqwest::StatusCode;
use serde::Deserialize;
use std::time::Duration;

pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
    auth: ProviderAuth,
    /// Azure routes by deployment; the body names no model.
    model_in_body: bool,
    input_types: InputTypes,
    model: String,
    dimension: usize,
    /// The `dimensions` parameter sent with every request, if any.
    dimensions: Option<usize>,
    limits: RequestLimits,
    tokens: TokenCounter,
}

/// Models known to take `dimensions`, with their default dimension.
const SHORTENABLE_MODELS: [(&str, usize); 2] = [
    ("text-embedding-3-small", 1536),
    ("text-embedding-3-large", 3072),
];

/// The `dimensions` parameter to send for `model` at `dimension`.
pub fn dimensions_to_send(
    model: &str,
    dimension: usize,
    parameter: DimensionsParameter,
) -> Option<usize> {
    match parameter {
        DimensionsParameter::Send => Some(dimension),
        DimensionsParameter::Omit => None,
        DimensionsParameter::Auto => SHORTENABLE_MODELS
            .iter()
            .find(|(name, _)| *name == model)
            .filter(|(_, default)| *default != dimension)
            .map(|_| dimension),
    }
}

/// What is wrong with a 200's body.
#[derive(Debug, PartialEq)]
enum BadBody {
    /// Every vector has this dimension, not the configured one: the configuration is wrong.
    Dimension(usize),
    /// Anything else: a broken answer, worth retrying.
    Broken(String),
}

impl From<String> for BadBody {
    fn from(problem: String) -> Self {
        Self::Broken(problem)
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingDatum>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingDatum {
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Base64(String),
    Floats(Vec<f32>),
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl OpenAiEmbedder {
    pub fn new(
        settings: &EmbeddingSettings,
        api_key: Option<Secret>,
    ) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ProviderError::Fatal {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let base = settings.base_url.trim_end_matches('/');
        let azure = settings.provider == Provider::AzureOpenai;
        let url = if azure {
            format!(
                "{base}/openai/deployments/{}/embeddings?api-version={}",
                settings.azure_deployment, settings.azure_api_version
            )
        } else {
            format!("{base}/embeddings")
        };
        let auth = match settings.auth {
            ProviderAuth::Auto if azure => ProviderAuth::ApiKey,
            ProviderAuth::Auto => ProviderAuth::Bearer,
            chosen => chosen,
        };
        let tokens = TokenCounter::new(settings.tokenizer);
        let input_types = settings.input_types.clone();
        Ok(Self {
            http,
            url,
            api_key,
            auth,
            model_in_body: !azure,
            input_types,
            model: settings.model.clone(),
            dimension: settings.dimension,
            dimensions: dimensions_to_send(
                &settings.model,
                settings.dimension,
                settings.dimensions_parameter,
            ),
            limits: RequestLimits {
                max_inputs: settings.max_inputs_per_request,
                max_tokens_per_input: settings.max_tokens_per_input,
                max_tokens_per_request: settings.max_tokens_per_request,
            },
            tokens,
        })
    }

    /// Removes the API key from any text the provider sent back.
    fn redact(&self, text: &str) -> String {
        let clipped: String = text.chars().take(500).collect();
        match &self.api_key {
            Some(key) if !key.expose().is_empty() => clipped.replace(key.expose(), "[redacted]"),
            _ => clipped,
        }
    }

    /// The vectors in input order, and the tokens the provider says it used.
    fn decode(
        &self,
        body: &[u8],
        expected: usize,
    ) -> Result<(Vec<Vec<f32>>, Option<u64>), BadBody> {
        let parsed: EmbeddingsResponse =
            serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))?;
        if parsed.data.len() != expected {
            return Err(format!("{} embeddings for {expected} inputs", parsed.data.len()).into());
        }
        let usage_tokens = parsed
            .usage
            .and_then(|u| u.total_tokens.or(u.prompt_tokens));
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        let mut dimensions = std::collections::BTreeSet::new();
        for datum in parsed.data {
            let vector = match datum.embedding {
                EmbeddingValue::Floats(v) => v,
                EmbeddingValue::Base64(b64) => decode_base64_f32(&b64)?,
            };
            dimensions.insert(vector.len());
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(BadBody::Broken(
                    "embedding holds a non-finite number".into(),
                ));
            }
            let slot = vectors
                .get_mut(datum.index)
                .ok_or_else(|| format!("index {} out of range", datum.index))?;
            if slot.replace(vector).is_some() {
                return Err(format!("index {} appears twice", datum.index).into());
            }
        }
        match dimensions.iter().copied().collect::<Vec<_>>().as_slice() {
            [] => {}
            [one] if *one == self.dimension => {}
            [one] if *one > 0 => return Err(BadBody::Dimension(*one)),
            several => {
                return Err(format!(
                    "embeddings of dimensions {several:?}, expected {}",
                    self.dimension
                )
                .into());
            }
        }
        let vectors = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| format!("no embedding for index {i}").into()))
            .collect::<Result<Vec<_>, BadBody>>()?;
        Ok((vectors, usage_tokens))
    }

    /// The reason an answer of `got` dimensions pauses intake, naming the setting to change.
    fn wrong_dimension(&self, got: usize) -> String {
        let want = self.dimension;
        let model = &self.model;
        match self.dimensions {
            Some(sent) => format!(
                "{model} answered {got}-dimension embeddings although the request asked for \
                 {sent} (`dimensions`); the model or server does not shorten its vectors: set \
                 embedding.dimension = {got} and embedding.dimensions_parameter = \"omit\""
            ),
            None => format!(
                "{model} answered {got}-dimension embeddings, but embedding.dimension is {want}: \
                 set embedding.dimension = {got}, or, if the model can shorten its vectors, \
                 embedding.dimensions_parameter = \"send\""
            ),
        }
    }

    fn classify(
        &self,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .unwrap_or_default()
            .error;
        let code = detail
            .code
            .as_ref()
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        let message = self.redact(
            detail
                .message
                .as_deref()
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error")),
        );
        let reason = format!("HTTP {}: {message}", status.as_u16());
        let hints = RateLimitHints::from_headers(headers);
        let retry_after = parse_retry_after(headers);
        let quota =
            code == "insufficient_quota" || detail.kind.as_deref() == Some("insufficient_quota");
        match status.as_u16() {
            401 | 403 | 404 => ProviderError::Fatal { reason },
            429 if quota => ProviderError::Fatal { reason },
            429 => ProviderError::Transient {
                reason,
                retry_after,
                rate_limited: true,
                unreachable: false,
                hints,
            },
            _ if should_retry(headers) == Some(false) => ProviderError::InvalidInput { reason },
            408 | 409 | 500..=599 => ProviderError::Transient {
                reason,
                retry_after,
                rate_limited: false,
                unreachable: false,
                hints,
            },
            _ if should_retry(headers) == Some(true) => ProviderError::Transient {
                reason,
                retry_after,
                rate_limited: false,
                unreachable: false,
                hints,
            },
            _ => ProviderError::InvalidInput { reason },
        }
    }
}

fn decode_base64_f32(b64: &str) -> Result<Vec<f32>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 embedding: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!("base64 embedding of {} bytes", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn transport_error(e: &reqwest::Error) -> ProviderError {
    let unreachable = !e.is_timeout() && e.is_connect();
    let kind = if e.is_timeout() {
        "timed out"
    } else if unreachable {
        "connection failed"
    } else {
        "transport error"
    };
    ProviderError::Transient {
        reason: format!("{kind}: {}", without_url(e)),
        retry_after: None,
        rate_limited: false,
        unreachable,
        hints: RateLimitHints::default(),
    }
}

/// reqwest errors print the URL; keep only the error chain's text.
fn without_url(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        "request failed".into()
    } else {
        parts.join(": ")
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn limits(&self) -> RequestLimits {
        self.limits
    }

    fn count_tokens(&self, text: &str) -> usize {
        let prefix = &self.input_types.document_prefix;
        if prefix.is_empty() {
            self.tokens.count(text)
        } else {
            // Counted together: the prefix's last space merges with the text's first word.
            self.tokens.count(&format!("{prefix}{text}"))
        }
    }

    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        let prefix = &self.input_types.document_prefix;
        if prefix.is_empty() {
            return self.tokens.truncate(text, max_tokens);
        }
        let cut = self.tokens.truncate(&format!("{prefix}{text}"), max_tokens);
        match cut.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_owned(),
            None => String::new(),
        }
    }

    async fn embed(&self, inputs: &[String], kind: InputKind) -> Result<Embedded, ProviderError> {
        let types = &self.input_types;
        let (prefix, input_type) = match kind {
            InputKind::Document => (&types.document_prefix, &types.document),
            InputKind::Query => (&types.query_prefix, &types.query),
        };
        let input: Vec<String> = if prefix.is_empty() {
            inputs.to_vec()
        } else {
            inputs
                .iter()
                .map(|text| format!("{prefix}{text}"))
                .collect()
        };
        let mut body = serde_json::json!({
            "input": input,
            "encoding_format": "base64",
        });
        if self.model_in_body {
            body["model"] = self.model.clone().into();
        }
        if let Some(dimensions) = self.dimensions {
            body["dimensions"] = dimensions.into();
        }
        if !types.field.is_empty() && !input_type.is_empty() {
            body[types.field.as_str()] = input_type.clone().into();
        }
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = match self.auth {
                ProviderAuth::ApiKey => request.header("api-key", key.expose()),
                ProviderAuth::Bearer | ProviderAuth::Auto => request.bearer_auth(key.expose()),
            };
        }
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| transport_error(&e))?;
        if !status.is_success() {
            return Err(self.classify(status, &headers, &bytes));
        }
        let hints = RateLimitHints::from_headers(&headers);
        match self.decode(&bytes, inputs.len()) {
            Ok((vectors, usage_tokens)) => Ok(Embedded {
                vectors,
                hints,
                usage_tokens,
            }),
            Err(BadBody::Dimension(got)) => Err(ProviderError::Fatal {
                reason: self.wrong_dimension(got),
            }),
            Err(BadBody::Broken(problem)) => Err(ProviderError::Transient {
                reason: format!("bad response body: {problem}"),
                retry_after: None,
                rate_limited: false,
                unreachable: false,
                hints,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn embedder() -> OpenAiEmbedder {
        let mut s = crate::config::Settings::defaults().embedding;
        s.dimension = 2;
        OpenAiEmbedder::new(&s, Some(Secret::new("sk-test-secret-key"))).unwrap()
    }

    fn b64(v: &[f32]) -> String {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn decodes_in_index_order() {
        let e = embedder();
        let body = serde_json::json!({"data": [
            {"index": 1, "embedding": b64(&[3.0, 4.0])},
            {"index": 0, "embedding": [1.0, 2.0]}
        ]});
        let (v, usage) = e.decode(body.to_string().as_bytes(), 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(usage, None);
    }

    #[test]
    fn reads_the_tokens_the_provider_counted() {
        let e = embedder();
        let body = serde_json::json!({
            "data": [{"index": 0, "embedding": [1.0, 2.0]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 9}
        });
        assert_eq!(e.decode(body.to_string().as_bytes(), 1).unwrap().1, Some(9));
        let prompt_only = serde_json::json!({
            "data": [{"index": 0, "embedding": [1.0, 2.0]}],
            "usage": {"prompt_tokens": 7}
        });
        assert_eq!(
            e.decode(prompt_only.to_string().as_bytes(), 1).unwrap().1,
            Some(7)
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        let e = embedder();
        let cases = [
            serde_json::json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}),
            serde_json::json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}),
            serde_json::json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 0, "embedding": [1.0, 2.0]}]}),
            serde_json::json!({"data": [{"index": 0, "embedding": b64(&[f32::NAN, 1.0])}, {"index": 1, "embedding": [1.0, 2.0]}]}),
        ];
        for body in cases {
            assert!(e.decode(body.to_string().as_bytes(), 2).is_err(), "{body}");
        }
        assert!(e.decode(b"not json", 2).is_err());
    }

    #[test]
    fn one_wrong_dimension_throughout_is_the_configuration() {
        let e = embedder();
        let body = serde_json::json!({"data": [
            {"index": 0, "embedding": [1.0, 2.0, 3.0]},
            {"index": 1, "embedding": b64(&[1.0, 2.0, 3.0])}
        ]});
        assert_eq!(
            e.decode(body.to_string().as_bytes(), 2),
            Err(BadBody::Dimension(3))
        );
        let reason = e.wrong_dimension(3);
        assert!(
            reason.contains("embedding.dimension = 3")
                && reason.contains("embedding.dimensions_parameter"),
            "{reason}"
        );
        // Two dimensions in one answer: a broken body, not a setting.
        let mixed = serde_json::json!({"data": [
            {"index": 0, "embedding": [1.0, 2.0, 3.0]},
            {"index": 1, "embedding": [1.0, 2.0]}
        ]});
        assert!(matches!(
            e.decode(mixed.to_string().as_bytes(), 2),
            Err(BadBody::Broken(_))
        ));
    }

    #[test]
    fn dimensions_is_sent_when_the_model_can_shorten_to_another_size() {
        use DimensionsParameter::{Auto, Omit, Send};
        assert_eq!(
            dimensions_to_send("text-embedding-3-small", 256, Auto),
            Some(256)
        );
        assert_eq!(
            dimensions_to_send("text-embedding-3-small", 1536, Auto),
            None
        );
        assert_eq!(
            dimensions_to_send("text-embedding-3-large", 1024, Auto),
            Some(1024)
        );
        assert_eq!(
            dimensions_to_send("text-embedding-ada-002", 256, Auto),
            None
        );
        assert_eq!(dimensions_to_send("nomic-embed-text", 768, Auto), None);
        assert_eq!(dimensions_to_send("nomic-embed-text", 256, Send), Some(256));
        assert_eq!(
            dimensions_to_send("text-embedding-3-small", 256, Omit),
            None
        );
    }

    #[test]
    fn classifies_errors() {
        let e = embedder();
        let none = HeaderMap::new();
        let body = |code: &str, msg: &str| {
            serde_json::json!({"error": {"message": msg, "code": code, "type": "x"}}).to_string()
        };
        assert!(matches!(
            e.classify(StatusCode::UNAUTHORIZED, &none, body("invalid_api_key", "Incorrect API key provided: sk-test-secret-key").as_bytes()),
            ProviderError::Fatal { reason } if !reason.contains("sk-test-secret-key") && reason.contains("[redacted]")
        ));
        assert!(matches!(
            e.classify(
                StatusCode::TOO_MANY_REQUESTS,
                &none,
                body("insufficient_quota", "quota").as_bytes()
            ),
            ProviderError::Fatal { .. }
        ));
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        match e.classify(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            body("rate_limit_exceeded", "slow").as_bytes(),
        ) {
            ProviderError::Transient {
                retry_after,
                rate_limited,
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)));
                assert!(rate_limited);
            }
            other => panic!("{other:?}"),
        }
        for code in [408, 409, 500, 502, 503] {
            assert!(matches!(
                e.classify(StatusCode::from_u16(code).unwrap(), &none, b""),
                ProviderError::Transient {
                    rate_limited: false,
                    ..
                }
            ));
        }
        assert!(matches!(
            e.classify(StatusCode::BAD_REQUEST, &none, body("", "maximum context length is 8192 tokens").as_bytes()),
            ProviderError::InvalidInput { reason } if reason.contains("8192")
        ));
        assert!(matches!(
            e.classify(StatusCode::NOT_FOUND, &none, b"{}"),
            ProviderError::Fatal { .. }
        ));
        let mut no_retry = HeaderMap::new();
        no_retry.insert("x-should-retry", HeaderValue::from_static("false"));
        assert!(matches!(
            e.classify(StatusCode::INTERNAL_SERVER_ERROR, &no_retry, b""),
            ProviderError::InvalidInput { .. }
        ));
    }
}
