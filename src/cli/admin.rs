//! A small client of the admin API: base URL, bearer token from `EMBEDQ_ADMIN_TOKEN`, and
//! errors that carry the server's reason.

use anyhow::{Context, anyhow};
use serde_json::Value;

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach embedq at {} ({what}): {}",
                self.base,
                short(&e)
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let reason = body["error"]["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status.to_string());
        Err(anyhow!("{what}: HTTP {}: {reason}", status.as_u16()))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(
            self.request(reqwest::Method::GET, path),
            &format!("GET {path}"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.request(reqwest::Method::POST, path).json(body),
            &format!("POST {path}"),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.request(reqwest::Method::PATCH, path).json(body),
            &format!("PATCH {path}"),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(
            self.request(reqwest::Method::DELETE, path),
            &format!("DELETE {path}"),
        )
        .await
    }

    /// POST returning the status too (ingestion needs to tell a refused batch from the rest).
    pub async fn post_raw(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach embedq at {}: {}", self.base, short(&e)))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

fn short(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
