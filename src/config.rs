//! Layered configuration: `config/default.toml`, then `config/$EMBEDQ_ENV.toml`, then an
//! optional file given on the command line, then `EMBEDQ__SECTION__KEY` environment variables.
//! Secrets come from the environment only. [`Settings::load`] validates everything, so a bad
//! setting stops start-up with a message that names the key and the reason.

use crate::domain::{Cron, JobScope, Priority, Tenant};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The local model: sentence-transformers' all-MiniLM-L6-v2.
pub const LOCAL_MODEL: &str = "all-MiniLM-L6-v2";
pub const LOCAL_DIMENSION: usize = 384;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        Self::Load(Box::new(e))
    }
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub queue: QueueSettings,
    pub planner: PlannerSettings,
    pub limits: LimitSettings,
    pub embedding: EmbeddingSettings,
    pub rate_limit: RateLimitSettings,
    pub retry: RetrySettings,
    pub pipeline: PipelineSettings,
    pub vectors: VectorSettings,
    pub supervision: SupervisionSettings,
    pub documents: DocumentSettings,
    pub scheduler: SchedulerSettings,
    /// `[[schedules]]`: jobs that run themselves (none by default).
    #[serde(default)]
    pub schedules: Vec<ScheduleSettings>,
    #[serde(skip)]
    pub secrets: Secrets,
}

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub admin_token: Option<Secret>,
    pub provider_api_key: Option<Secret>,
    pub qdrant_api_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub json_logs: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    #[serde(rename = "acquire_timeout_ms", with = "millis")]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    /// Run even under a `maxmemory-policy` that may evict any key (`allkeys-*`).
    pub allow_evicting_policy: bool,
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    #[serde(rename = "command_timeout_ms", with = "millis")]
    pub command_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub consumer_name: String,
    #[serde(rename = "visibility_timeout_ms", with = "millis")]
    pub visibility_timeout: Duration,
    #[serde(rename = "block_ms", with = "millis")]
    pub block: Duration,
    pub job_credits: usize,
    pub task_credits: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerSettings {
    pub page_size: usize,
    pub task_size: usize,
    pub max_queued_tasks: u64,
    pub interactive_max_items: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_items_per_request: usize,
    pub max_content_bytes: usize,
    pub max_job_item_ids: usize,
    pub max_metadata_bytes: usize,
}

/// Which embeddings provider embedq calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Settled at load: [`Provider::Local`] unless `EMBEDQ_PROVIDER_API_KEY` is set, then
    /// [`Provider::Openai`].
    Auto,
    /// all-MiniLM-L6-v2 run in-process.
    Local,
    /// Any OpenAI-compatible `POST {base_url}/embeddings`.
    Openai,
    /// Azure OpenAI: `POST {base_url}/openai/deployments/{azure_deployment}/embeddings
    /// ?api-version={azure_api_version}`, the key in an `api-key` header.
    AzureOpenai,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Local => "local",
            Self::Openai => "openai",
            Self::AzureOpenai => "azure_openai",
        }
    }
}

/// How the provider's key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderAuth {
    /// `api-key` for Azure OpenAI, a bearer token otherwise.
    Auto,
    /// `Authorization: Bearer KEY` (OpenAI, most compatible servers, Azure with Entra ID).
    Bearer,
    /// `api-key: KEY` (Azure OpenAI's keys).
    ApiKey,
}

/// What distinguishes documents from queries for an asymmetric model (e5, bge, nomic: a
/// prefix; Voyage, Cohere-compatible servers: an input-type field). Empty strings add nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTypes {
    /// Put before every item's text (e.g. `passage: `).
    pub document_prefix: String,
    /// Put before every search query (e.g. `query: `).
    pub query_prefix: String,
    /// A request field naming the input type (e.g. `input_type`); empty: none is sent.
    pub field: String,
    /// Its value for items (e.g. `document`).
    pub document: String,
    /// Its value for search queries (e.g. `query`).
    pub query: String,
}

/// How tokens are counted when requests are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// text-embedding-3-*, ada-002.
    Cl100kBase,
    O200kBase,
}

/// Whether requests carry OpenAI's `dimensions` parameter (a shorter vector of a model that
/// can give one, as text-embedding-3-* can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimensionsParameter {
    /// Sent when the model is known to take it and `embedding.dimension` is not its default.
    Auto,
    /// Always sent (an OpenAI-compatible server whose model takes it).
    Send,
    /// Never sent (a server that refuses unknown fields).
    Omit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSettings {
    pub provider: Provider,
    pub model: String,
    pub dimension: usize,
    pub dimensions_parameter: DimensionsParameter,
    pub auth: ProviderAuth,
    /// Azure OpenAI's deployment and API version (provider `azure_openai`).
    pub azure_deployment: String,
    pub azure_api_version: String,
    pub input_types: InputTypes,
    pub model_dir: String,
    pub threads: usize,
    /// The local model's cap on padded tokens per forward pass.
    pub pass_tokens: usize,
    pub base_url: String,
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    pub tokenizer: Tokenizer,
    pub max_inputs_per_request: usize,
    pub max_tokens_per_input: usize,
    pub max_tokens_per_request: usize,
    pub truncate: bool,
    /// The provider's price, for dry runs' cost (0 when unknown or free).
    pub price_per_million_tokens: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub burst_seconds: f64,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_retries: u32,
    #[serde(rename = "base_backoff_ms", with = "millis")]
    pub base_backoff: Duration,
    #[serde(rename = "max_backoff_ms", with = "millis")]
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    pub embed: bool,
    pub workers: usize,
    #[serde(rename = "status_flush_ms", with = "millis")]
    pub status_flush: Duration,
    pub status_max_batch: usize,
    #[serde(rename = "shutdown_deadline_ms", with = "millis")]
    pub shutdown_deadline: Duration,
}

/// Where vectors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorBackend {
    /// Qdrant's embedded engine (qdrant-edge), files under `vectors.path`.
    Edge,
    /// A Qdrant server over gRPC at `vectors.url`.
    Qdrant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSettings {
    pub backend: VectorBackend,
    pub path: String,
    pub url: String,
    pub collection: String,
    /// Time-out of one call to a Qdrant server.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    #[serde(rename = "restart_backoff_ms", with = "millis")]
    pub restart_backoff: Duration,
    #[serde(rename = "max_restart_backoff_ms", with = "millis")]
    pub max_restart_backoff: Duration,
    pub max_restarts: u32,
    #[serde(rename = "restart_window_ms", with = "millis")]
    pub restart_window: Duration,
}

/// Documents uploaded to be split into chunks (`POST /v1/contexts/{id}/documents`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSettings {
    /// Largest document accepted, in bytes (also bounded by `server.max_body_bytes`).
    pub max_bytes: usize,
    /// Most chunks one document may make.
    pub max_chunks: usize,
    /// Default chunk size and overlap, in tokens of the provider's tokenizer (a request may
    /// name its own).
    pub chunk_tokens: usize,
    pub overlap_tokens: usize,
}

/// How the one active scheduler among the daemons runs the `[[schedules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often the active scheduler looks for due ticks (and renews its lease).
    #[serde(rename = "poll_ms", with = "millis")]
    pub poll: Duration,
    /// The scheduler's lease in Redis: a daemon that stops renewing it (stopped, paused, cut
    /// off) loses it after this long and another takes over.
    #[serde(rename = "lease_ms", with = "millis")]
    pub lease: Duration,
    /// A tick not fired within this long (every daemon was down) is missed: it fires once on
    /// start or is skipped, as its schedule's `missed` says. Later ticks fire one job each.
    #[serde(rename = "misfire_grace_ms", with = "millis")]
    pub misfire_grace: Duration,
}

/// One `[[schedules]]` entry: a cron expression and the job each tick makes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Unique among the schedules: 1 to 64 ASCII letters, digits, `-` or `_`.
    pub name: String,
    pub cron: Cron,
    #[serde(default)]
    pub missed: MissedTicks,
    pub job: ScheduledJob,
}

/// What happens to ticks missed while no daemon could fire them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// The latest missed tick fires once, on start.
    #[default]
    CatchUpOnce,
    /// Missed ticks are skipped; the schedule goes on from its next tick.
    Skip,
}

/// The job a schedule makes at each tick.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduledJob {
    /// An embed job of a scope: `{type = "failed"}` requeues FAILED items, `{type =
    /// "stale_model"}` re-embeds items of another model; `context` and `all` as in the API
    /// (an explicit list of items is refused: it is an edit, not a schedule).
    Embed {
        #[serde(deserialize_with = "scheduled_scope")]
        #[schema(value_type = Object)]
        scope: JobScope,
        #[serde(default)]
        priority: Option<Priority>,
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        tenant: Option<Tenant>,
    },
    /// A reconcile job (compare SQL with the vector store and repair).
    Reconcile,
    /// Remove dead letters older than this many days (no job: the firing records how many).
    PurgeDeadLetters { older_than_days: u32 },
}

fn scheduled_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<JobScope, D::Error> {
    let raw = serde_json::Value::deserialize(d)?;
    let scope = JobScope::from_json(raw).map_err(serde::de::Error::custom)?;
    if matches!(scope, JobScope::Items { .. }) {
        return Err(serde::de::Error::custom(
            "a schedule's scope is context, all, failed or stale_model, not a list of items",
        ));
    }
    Ok(scope)
}

/// Durations written in the files as whole milliseconds (`*_ms` keys).
mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Settings {
    /// Loads the layers described in the module docs from the process environment.
    pub fn load(extra_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env_name = std::env::var("EMBEDQ_ENV").ok();
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML));
        if let Some(name) = env_name.filter(|n| !n.is_empty()) {
            let path = PathBuf::from("config").join(format!("{name}.toml"));
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "EMBEDQ_ENV",
                    reason: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        if let Some(path) = extra_file {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    reason: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("EMBEDQ__").split("__"));
        let mut settings: Settings = figment.extract()?;
        settings.secrets = Secrets {
            admin_token: secret_from_env("EMBEDQ_ADMIN_TOKEN"),
            provider_api_key: secret_from_env("EMBEDQ_PROVIDER_API_KEY"),
            qdrant_api_key: secret_from_env("EMBEDQ_QDRANT_API_KEY"),
        };
        settings.resolve_provider();
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in defaults alone, validated: the base the tests adjust.
    pub fn defaults() -> Self {
        let mut settings: Settings = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid");
        settings.resolve_provider();
        settings.validate().expect("config/default.toml is valid");
        settings
    }

    /// Settles `embedding.provider = "auto"` (the local model unless a provider key is set)
    /// and fills an empty model and a zero dimension with the provider's defaults.
    pub fn resolve_provider(&mut self) {
        let e = &mut self.embedding;
        if e.provider == Provider::Auto {
            e.provider = if self.secrets.provider_api_key.is_some() {
                Provider::Openai
            } else {
                Provider::Local
            };
        }
        let (model, dimension) = match e.provider {
            Provider::Local => (LOCAL_MODEL, LOCAL_DIMENSION),
            Provider::Auto | Provider::Openai | Provider::AzureOpenai => {
                ("text-embedding-3-small", 1536)
            }
        };
        if e.model.trim().is_empty() {
            e.model = model.into();
        }
        if e.dimension == 0 {
            e.dimension = dimension;
        }
    }

    /// Checks every rule that the types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if !(self.redis.url.starts_with("redis://")
            || self.redis.url.starts_with("rediss://")
            || self.redis.url.starts_with("unix://"))
        {
            return invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            );
        }
        if self.redis.prefix.is_empty()
            || self
                .redis
                .prefix
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            return invalid(
                "redis.prefix",
                "must be non-empty, without spaces or braces (it becomes the keys' hash tag)",
            );
        }
        if !self.queue.consumer_name.is_empty()
            && !self
                .queue
                .consumer_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid(
                "queue.consumer_name",
                "allowed are ASCII letters, digits and - _ .",
            );
        }
        if self.queue.block.is_zero() {
            return invalid(
                "queue.block_ms",
                "must be at least 1 (0 would block forever)",
            );
        }
        if self.queue.visibility_timeout < 2 * self.queue.block {
            return invalid(
                "queue.visibility_timeout_ms",
                "must be at least twice queue.block_ms, or live claims would be stolen",
            );
        }
        if self.queue.job_credits == 0 {
            return invalid("queue.job_credits", "must be at least 1");
        }
        if self.queue.task_credits == 0 {
            return invalid("queue.task_credits", "must be at least 1");
        }
        if self.planner.page_size == 0 || self.planner.page_size > 100_000 {
            return invalid("planner.page_size", "must be between 1 and 100000");
        }
        if self.planner.task_size == 0 || self.planner.task_size > 2048 {
            return invalid("planner.task_size", "must be between 1 and 2048");
        }
        if self.planner.max_queued_tasks == 0 {
            return invalid("planner.max_queued_tasks", "must be at least 1");
        }
        if self.limits.max_items_per_request == 0 {
            return invalid("limits.max_items_per_request", "must be at least 1");
        }
        if self.limits.max_content_bytes == 0 {
            return invalid("limits.max_content_bytes", "must be at least 1");
        }
        if self.limits.max_job_item_ids == 0 {
            return invalid("limits.max_job_item_ids", "must be at least 1");
        }
        if self.limits.max_metadata_bytes < 2 || self.limits.max_metadata_bytes > 1_048_576 {
            return invalid("limits.max_metadata_bytes", "must be between 2 and 1048576");
        }
        let e = &self.embedding;
        if e.dimension == 0 || e.dimension > 65_536 {
            return invalid("embedding.dimension", "must be between 1 and 65536");
        }
        if e.provider == Provider::Auto {
            return invalid(
                "embedding.provider",
                "\"auto\" must be settled before validation",
            );
        }
        if e.provider == Provider::AzureOpenai {
            if e.azure_deployment.is_empty()
                || !e
                    .azure_deployment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return invalid(
                    "embedding.azure_deployment",
                    "the Azure deployment name is required (letters, digits, - _ .)",
                );
            }
            if e.azure_api_version.is_empty()
                || !e
                    .azure_api_version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return invalid(
                    "embedding.azure_api_version",
                    "an Azure OpenAI API version is required, e.g. 2024-10-21",
                );
            }
        }
        if (!e.input_types.document.is_empty() || !e.input_types.query.is_empty())
            && e.input_types.field.is_empty()
        {
            return invalid(
                "embedding.input_types.field",
                "name the request field that carries the input type (e.g. input_type)",
            );
        }
        if matches!(
            e.input_types.field.as_str(),
            "model" | "input" | "encoding_format" | "dimensions"
        ) {
            return invalid(
                "embedding.input_types.field",
                "must not be a field embedq sends itself",
            );
        }
        if e.provider == Provider::Local && e.dimension != LOCAL_DIMENSION {
            return invalid(
                "embedding.dimension",
                format!("the local model produces {LOCAL_DIMENSION} dimensions"),
            );
        }
        if !(e.base_url.starts_with("http://") || e.base_url.starts_with("https://")) {
            return invalid("embedding.base_url", "must start with http:// or https://");
        }
        if e.timeout.is_zero() {
            return invalid("embedding.timeout_ms", "must be at least 1");
        }
        if !(e.price_per_million_tokens >= 0.0 && e.price_per_million_tokens.is_finite()) {
            return invalid(
                "embedding.price_per_million_tokens",
                "must be a number of at least 0",
            );
        }
        if e.pass_tokens < 256 {
            return invalid(
                "embedding.pass_tokens",
                "must be at least 256 (one input of the local model's longest)",
            );
        }
        if e.max_inputs_per_request == 0 {
            return invalid("embedding.max_inputs_per_request", "must be at least 1");
        }
        if e.max_tokens_per_input == 0 || e.max_tokens_per_input > e.max_tokens_per_request {
            return invalid(
                "embedding.max_tokens_per_input",
                "must be at least 1 and at most embedding.max_tokens_per_request",
            );
        }
        let r = &self.rate_limit;
        if r.requests_per_minute == 0 || r.tokens_per_minute == 0 {
            return invalid(
                "rate_limit",
                "requests_per_minute and tokens_per_minute must be at least 1",
            );
        }
        if !(r.burst_seconds > 0.0 && r.burst_seconds <= 60.0) {
            return invalid(
                "rate_limit.burst_seconds",
                "must be more than 0 and at most 60",
            );
        }
        if r.min_concurrency == 0 || r.min_concurrency > r.max_concurrency {
            return invalid(
                "rate_limit.min_concurrency",
                "must be at least 1 and at most rate_limit.max_concurrency",
            );
        }
        if self.retry.base_backoff.is_zero() || self.retry.base_backoff > self.retry.max_backoff {
            return invalid(
                "retry.base_backoff_ms",
                "must be at least 1 and at most retry.max_backoff_ms",
            );
        }
        if self.pipeline.workers == 0 || self.pipeline.workers > 256 {
            return invalid("pipeline.workers", "must be between 1 and 256");
        }
        if self.pipeline.status_max_batch == 0 {
            return invalid("pipeline.status_max_batch", "must be at least 1");
        }
        if self.pipeline.shutdown_deadline < std::time::Duration::from_secs(1) {
            return invalid("pipeline.shutdown_deadline_ms", "must be at least 1000");
        }
        if self.vectors.collection.is_empty()
            || !self
                .vectors
                .collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return invalid(
                "vectors.collection",
                "must be non-empty ASCII letters, digits, - or _",
            );
        }
        if self.vectors.backend == VectorBackend::Qdrant
            && !(self.vectors.url.starts_with("http://")
                || self.vectors.url.starts_with("https://"))
        {
            return invalid("vectors.url", "must start with http:// or https://");
        }
        if self.supervision.max_restarts == 0 {
            return invalid("supervision.max_restarts", "must be at least 1");
        }
        if self.supervision.restart_backoff > self.supervision.max_restart_backoff {
            return invalid(
                "supervision.restart_backoff_ms",
                "must not exceed supervision.max_restart_backoff_ms",
            );
        }
        let docs = &self.documents;
        if docs.max_bytes == 0 || docs.max_chunks == 0 {
            return invalid(
                "documents.max_bytes",
                "documents.max_bytes and documents.max_chunks must be at least 1",
            );
        }
        if docs.chunk_tokens < 8 || docs.overlap_tokens >= docs.chunk_tokens {
            return invalid(
                "documents.chunk_tokens",
                "must be at least 8 and above documents.overlap_tokens",
            );
        }
        let sched = &self.scheduler;
        if sched.poll.is_zero() || sched.lease < sched.poll * 3 {
            return invalid(
                "scheduler.lease_ms",
                "must be at least three times scheduler.poll_ms (which must be at least 1)",
            );
        }
        if sched.misfire_grace < sched.lease + sched.poll {
            return invalid(
                "scheduler.misfire_grace_ms",
                "must be at least scheduler.lease_ms + scheduler.poll_ms, or a tick due while the lease passes to another daemon would count as missed",
            );
        }
        let mut names = std::collections::HashSet::new();
        for schedule in &self.schedules {
            let name = &schedule.name;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                return invalid(
                    "schedules.name",
                    format!("{name:?} must be 1 to 64 ASCII letters, digits, - or _"),
                );
            }
            if !names.insert(name.as_str()) {
                return invalid("schedules.name", format!("{name:?} is given twice"));
            }
            if let ScheduledJob::PurgeDeadLetters { older_than_days: 0 } = schedule.job {
                return invalid(
                    "schedules.job.older_than_days",
                    format!("schedule {name:?}: must be at least 1"),
                );
            }
        }
        if self.secrets.admin_token.is_none() && !self.server.listen.ip().is_loopback() {
            return invalid(
                "server.listen",
                format!(
                    "{} is not a loopback address; set EMBEDQ_ADMIN_TOKEN to listen beyond this machine",
                    self.server.listen
                ),
            );
        }
        if let Some(token) = &self.secrets.admin_token
            && token.expose().len() < 16
        {
            return invalid("EMBEDQ_ADMIN_TOKEN", "must be at least 16 characters");
        }
        Ok(())
    }

    pub fn visibility_timeout(&self) -> Duration {
        self.queue.visibility_timeout
    }
}

fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_needs_its_deployment_and_input_types_their_field() {
        let mut s = Settings::defaults();
        s.embedding.provider = Provider::AzureOpenai;
        s.embedding.dimension = 1536;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("embedding.azure_deployment"), "{err}");
        s.embedding.azure_deployment = "emb-small".into();
        s.validate().unwrap();
        s.embedding.azure_api_version = "2024-10-21&x=1".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("embedding.azure_api_version"), "{err}");

        let mut s = Settings::defaults();
        s.embedding.input_types.query = "query".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("embedding.input_types.field"), "{err}");
        s.embedding.input_types.field = "model".into();
        assert!(s.validate().is_err(), "a field embedq sends itself");
        s.embedding.input_types.field = "input_type".into();
        s.validate().unwrap();
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::defaults();
        assert!(s.server.listen.ip().is_loopback());
        assert!(s.database.url.starts_with("sqlite:"));
        assert_eq!(s.vectors.backend, VectorBackend::Edge);
    }

    #[test]
    fn auto_provider_is_local_without_a_key() {
        let s = Settings::defaults();
        assert_eq!(
            (
                s.embedding.provider,
                s.embedding.model.as_str(),
                s.embedding.dimension
            ),
            (Provider::Local, LOCAL_MODEL, 384)
        );
        let mut keyed = Settings::defaults();
        keyed.embedding.provider = Provider::Auto;
        keyed.embedding.model.clear();
        keyed.embedding.dimension = 0;
        keyed.secrets.provider_api_key = Some(Secret::new("sk-x"));
        keyed.resolve_provider();
        assert_eq!(
            (keyed.embedding.provider, keyed.embedding.dimension),
            (Provider::Openai, 1536)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut s = Settings::defaults();
        s.planner.page_size = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("planner.page_size"), "{err}");
    }

    #[test]
    fn public_listen_needs_a_token() {
        let mut s = Settings::defaults();
        s.server.listen = "0.0.0.0:8080".parse().unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("server.listen") && err.contains("EMBEDQ_ADMIN_TOKEN"),
            "{err}"
        );
        s.secrets.admin_token = Some(Secret::new("a-long-enough-token"));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        let mut s = Settings::defaults();
        s.secrets.provider_api_key = Some(secret);
        assert!(!format!("{s:?}").contains("sk-very-secret"));
    }

    #[test]
    fn enums_and_durations_parse_once() {
        let s: Settings = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(
                "[vectors]\nbackend = \"qdrant\"\n[queue]\nblock_ms = 250\n[embedding]\ntokenizer = \"o200k_base\"",
            ))
            .extract()
            .unwrap();
        assert_eq!(s.vectors.backend, VectorBackend::Qdrant);
        assert_eq!(s.queue.block, Duration::from_millis(250));
        assert_eq!(s.embedding.tokenizer, Tokenizer::O200kBase);
        let err = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[vectors]\nbackend = \"milvus\""))
            .extract::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend") && err.contains("milvus"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[planner]\npage_size = \"many\""))
            .extract::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("page_size"), "{err}");
    }
}
