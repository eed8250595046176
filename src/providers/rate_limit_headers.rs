//! What providers say about waiting: `retry-after-ms`, `Retry-After` (seconds or an HTTP date),
//! `x-should-retry`, and OpenAI's `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` with
//! durations such as `6m0s`, `1.5s` or `12ms`.

use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// The provider's view of the budget after a response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitHints {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_requests: Option<Duration>,
    pub reset_tokens: Option<Duration>,
}

impl RateLimitHints {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| header_str(headers, name).and_then(|v| v.trim().parse().ok());
        let duration = |name: &str| header_str(headers, name).and_then(parse_openai_duration);
        Self {
            remaining_requests: number("x-ratelimit-remaining-requests"),
            remaining_tokens: number("x-ratelimit-remaining-tokens"),
            reset_requests: duration("x-ratelimit-reset-requests"),
            reset_tokens: duration("x-ratelimit-reset-tokens"),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The wait a response asks for: `retry-after-ms` first, then `Retry-After` in seconds or as an
/// HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        header_str(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header_str(headers, "retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `x-should-retry: false` forbids a retry, `true` asks for one; absent says nothing.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header_str(headers, "x-should-retry")?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// OpenAI's durations: a sequence of number+unit parts, units `h`, `m`, `s`, `ms`
/// (for example `6m0s`, `1.5s`, `12ms`, `1h2m3s`).
pub fn parse_openai_duration(raw: &str) -> Option<Duration> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit_secs, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * unit_secs;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn openai_durations() {
        assert_eq!(
            parse_openai_duration("6m0s"),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            parse_openai_duration("12ms"),
            Some(Duration::from_millis(12))
        );
        assert_eq!(
            parse_openai_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_openai_duration("1h2m3s"),
            Some(Duration::from_secs(3723))
        );
        assert_eq!(parse_openai_duration("soon"), None);
        assert_eq!(parse_openai_duration("5"), None);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
        let mut d = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        d.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = parse_retry_after(&d).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn hints_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("59"),
        );
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("149000"),
        );
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
        h.insert("x-should-retry", HeaderValue::from_static("false"));
        let hints = RateLimitHints::from_headers(&h);
        assert_eq!(hints.remaining_requests, Some(59));
        assert_eq!(hints.remaining_tokens, Some(149_000));
        assert_eq!(hints.reset_tokens, Some(Duration::from_secs(360)));
        assert_eq!(should_retry(&h), Some(false));
    }
}
