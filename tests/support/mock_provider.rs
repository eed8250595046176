//! A mock of OpenAI's embeddings API (`POST /v1/embeddings`), served over real HTTP inside the
//! test process.
//!
//! The daemon talks to a paid provider; the tests must not. This server is the only stand-in,
//! so it answers the way OpenAI does on the wire: the same request and response JSON, the same
//! error bodies and status codes, `x-ratelimit-*` headers, `retry-after(-ms)` on 429s, and the
//! same limits (8192 tokens per input, 2048 inputs and 300 000 tokens per request, tokens
//! counted with tiktoken's `cl100k_base`).
//!
//! A [`MockScript`] adds what a test needs to provoke: latency, request/token rate limits over
//! a sliding 60 s window, a storm of 429s, an exhausted quota, and seeded random faults (5xx,
//! hangs, broken 200 bodies), the profiles of other providers (Azure OpenAI's deployment route,
//! `api-version` and `api-key`; a server that ignores `dimensions`), and records each request's
//! `input_type`. The script can be swapped while the server runs, and the
//! [`Audit`] records what was asked and what was returned, so tests can check for duplicate
//! work, rate compliance and concurrency. Returned vectors are deterministic
//! ([`MockProvider::vector_for`]), so stored points can be checked exactly.
//!
//! Checks run in this order: auth, quota, request validation, storm, rate limits, random
//! faults (a seeded RNG), then the scripted latency, then success.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Rate limits are enforced over this sliding window.
const WINDOW: Duration = Duration::from_secs(60);
/// The wait a storm 429 asks for (short, so tests that ride out a storm stay fast).
const STORM_RETRY_AFTER: Duration = Duration::from_millis(20);
/// Named in rate-limit messages, as OpenAI names the caller's organization.
const ORGANIZATION: &str = "org-mock";
const RATE_LIMIT_DOCS: &str =
    "Visit https://platform.openai.com/account/rate-limits to learn more.";

// ---------------------------------------------------------------------------------------------
// Script and audit
// ---------------------------------------------------------------------------------------------

/// How the mock behaves; replace it at any time with [`MockProvider::set_script`].
#[derive(Clone, Debug)]
pub struct MockScript {
    /// The model's native dimension; a request's `dimensions` may ask for fewer.
    pub dimension: usize,
    /// A server whose model cannot shorten its vectors: `dimensions` is accepted and ignored.
    pub ignores_dimensions: bool,
    /// Added to every response (a hang waits `hang_for` instead).
    pub latency: Duration,
    /// When set, `Authorization: Bearer <key>` must match, else 401 (in Azure mode, the
    /// `api-key` header).
    pub api_key: Option<String>,
    /// Azure OpenAI mode: `POST /openai/deployments/{deployment}/embeddings?api-version=…`
    /// with this deployment and API version, the key in `api-key`; the body's model optional.
    pub azure: Option<AzureMode>,
    /// Requests admitted per sliding 60 s window, across all callers; over it -> 429.
    pub requests_per_minute: Option<u32>,
    /// Tokens admitted per sliding 60 s window, across all callers; over it -> 429.
    pub tokens_per_minute: Option<u64>,
    /// Whether 429s carry `retry-after-ms` and `retry-after`.
    pub retry_after_on_429: bool,
    /// The next N valid requests get a 429 regardless of limits (decrements).
    pub storm_429: u32,
    /// Then the next N valid requests get a 503 (decrements).
    pub storm_5xx: u32,
    /// Every request gets 429 `insufficient_quota`.
    pub insufficient_quota: bool,
    /// Probability of a 500, 502 or 503.
    pub server_error_ratio: f64,
    /// Probability that a request hangs for `hang_for`, then gets a 504.
    pub hang_ratio: f64,
    pub hang_for: Duration,
    /// Probability of a 200 whose body is broken (wrong count, wrong dimension, NaN, bad JSON).
    pub bad_body_ratio: f64,
    pub max_tokens_per_input: usize,
    pub max_inputs_per_request: usize,
    pub max_tokens_per_request: u64,
    /// How the mock counts tokens (for its limits, its quota and `usage`).
    pub tokenizer: MockTokenizer,
    /// Seeds the fault randomness; the generator restarts from it on every `set_script`.
    pub seed: u64,
}

/// How the mock counts a text's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockTokenizer {
    /// cl100k_base, as OpenAI's text-embedding-3 models do (and embedq by default).
    Cl100k,
    /// One token per four characters, rounded up: a provider whose tokenizer is not embedq's.
    CharsOverFour,
}

/// What an Azure OpenAI resource serves.
#[derive(Clone, Debug)]
pub struct AzureMode {
    pub deployment: String,
    pub api_version: String,
}

/// Which route a request came by.
enum Route {
    OpenAi,
    Azure {
        deployment: String,
        api_version: Option<String>,
    },
}

impl Default for MockScript {
    fn default() -> Self {
        Self {
            dimension: 8,
            ignores_dimensions: false,
            latency: Duration::ZERO,
            api_key: None,
            azure: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            retry_after_on_429: true,
            storm_429: 0,
            storm_5xx: 0,
            insufficient_quota: false,
            server_error_ratio: 0.0,
            hang_ratio: 0.0,
            hang_for: Duration::from_secs(60),
            bad_body_ratio: 0.0,
            max_tokens_per_input: 8192,
            max_inputs_per_request: 2048,
            max_tokens_per_request: 300_000,
            tokenizer: MockTokenizer::Cl100k,
            seed: 7,
        }
    }
}

/// What the mock has seen, as a snapshot from [`MockProvider::audit`].
#[derive(Clone, Debug, Default)]
pub struct Audit {
    /// Every `POST /v1/embeddings` received, whatever its fate.
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Inputs of the valid requests answered with each status.
    pub inputs_by_status: BTreeMap<u16, u64>,
    /// Input text -> times it was returned embedded in a well-formed 200.
    pub embedded: HashMap<String, u32>,
    /// Inputs in well-formed 200 responses.
    pub inputs_embedded: u64,
    /// Tokens in well-formed 200 responses.
    pub tokens_embedded: u64,
    /// Each well-formed 200: when it was answered (ms since the mock started), its inputs and
    /// its tokens — what the provider itself saw, for rates over a window.
    pub embedded_log: Vec<(u64, u32, u64)>,
    /// Arrival of every request, in ms since the mock started.
    pub request_times_ms: Vec<u64>,
    /// Most requests in flight at once.
    pub max_concurrent: u32,
    /// Models named by valid requests (an Azure request without one: its deployment).
    pub models: BTreeSet<String>,
    /// Valid requests by their `input_type` field ("" when absent).
    pub input_types: BTreeMap<String, u64>,
}

impl Audit {
    /// Texts embedded more than once: the sum over texts of (times - 1).
    pub fn duplicates(&self) -> u64 {
        self.embedded
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// The running mock; it serves until dropped.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the server and wakes any request that is hanging or sleeping.
    _stop: watch::Sender<()>,
}

impl MockProvider {
    /// Binds 127.0.0.1:0 and serves in a tokio task until dropped.
    pub async fn start(script: MockScript) -> MockProvider {
        // Load the tokenizer once, off the async threads, before the first request needs it.
        tokio::task::spawn_blocking(tiktoken_rs::cl100k_base_singleton)
            .await
            .expect("load the cl100k_base tokenizer");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock provider");
        let addr = listener.local_addr().expect("mock provider address");
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared::new(script, stopped.clone()));
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route(
                "/openai/deployments/{deployment}/embeddings",
                post(azure_embeddings),
            )
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        tokio::spawn(async move {
            let mut stopped = stopped;
            let shutdown = async move { stopped.changed().await.unwrap_or_default() };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("mock provider stopped: {error}");
            }
        });
        MockProvider {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// e.g. `http://127.0.0.1:PORT/v1`; the client posts to `{base_url}/embeddings`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Replaces the script while running; the fault generator restarts from its seed.
    pub fn set_script(&self, script: MockScript) {
        lock(&self.shared.control).replace_script(script);
    }

    pub fn script(&self) -> MockScript {
        lock(&self.shared.control).script.clone()
    }

    /// From now on, a request with an input containing `text` is answered only after
    /// [`MockProvider::release`] (it counts in [`MockProvider::held`] while it waits).
    pub fn hold_inputs_containing(&self, text: &str) {
        *lock(&self.shared.hold) = Some(text.to_owned());
    }

    /// Requests held so far.
    pub fn held(&self) -> u32 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Answers the held requests and holds no more.
    pub fn release(&self) {
        *lock(&self.shared.hold) = None;
        self.shared.released.send_modify(|n| *n += 1);
    }

    /// Snapshot of everything seen so far.
    pub fn audit(&self) -> Audit {
        lock(&self.shared.audit).clone()
    }

    /// The deterministic vector the mock returns for `text` at `dimension`: unit length,
    /// derived from SHA-256 of the text. A shorter `dimension` gives the longer vector cut
    /// and renormalized, as OpenAI's `dimensions` parameter does.
    pub fn vector_for(text: &str, dimension: usize) -> Vec<f32> {
        let seed = Sha256::digest(text.as_bytes());
        let raw: Vec<f64> = (0..dimension.div_ceil(8) as u64)
            .flat_map(|block| hash_block(&seed, block))
            .take(dimension)
            .collect();
        let norm = raw
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        raw.iter().map(|x| (x / norm) as f32).collect()
    }
}

/// Eight components in [-1, 1] from SHA-256(seed ‖ block): block `b` gives components
/// `8b..8b+8`, so every dimension shares the same prefix.
fn hash_block(seed: &[u8], block: u64) -> [f64; 8] {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(block.to_le_bytes())
        .finalize();
    std::array::from_fn(|i| {
        let word = u32::from_le_bytes(digest[4 * i..4 * i + 4].try_into().unwrap());
        f64::from(word) / f64::from(u32::MAX) * 2.0 - 1.0
    })
}

/// `POST /v1/embeddings`.
async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(shared, Route::OpenAi, headers, body).await
}

async fn azure_embeddings(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::Azure {
        deployment,
        api_version: query.get("api-version").cloned(),
    };
    answer(shared, route, headers, body).await
}

async fn answer(shared: Arc<Shared>, route: Route, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = Instant::now();
    let _in_flight = shared.arrive();
    let decision = shared.decide(&route, &headers, &body);
    shared.pause(decision.delay).await;
    if let Reply::Embeddings(request) = &decision.reply {
        shared.hold_if_asked(request).await;
    }
    shared.respond(decision, arrived)
}

/// State shared by the handle and every request.
struct Shared {
    started: Instant,
    control: Mutex<Control>,
    audit: Mutex<Audit>,
    in_flight: AtomicU32,
    stopped: watch::Receiver<()>,
    /// Requests with an input containing this text wait, answered, until released.
    hold: Mutex<Option<String>>,
    held: AtomicU32,
    released: watch::Sender<u64>,
}

/// What one request decides under the lock: the script (storms decrement), the fault
/// generator and the rate window.
struct Control {
    script: MockScript,
    rng: StdRng,
    window: Window,
}

/// The outcome of a request, decided at arrival and sent after `delay`.
struct Decision {
    reply: Reply,
    delay: Duration,
    rate_headers: Vec<(&'static str, String)>,
    /// Inputs of the request (0 when it was not valid).
    inputs: usize,
}

enum Reply {
    Error(ApiError),
    Embeddings(EmbeddingRequest),
    Broken(EmbeddingRequest, Breakage),
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(script: MockScript, stopped: watch::Receiver<()>) -> Self {
        Self {
            started: Instant::now(),
            control: Mutex::new(Control::new(script)),
            audit: Mutex::default(),
            in_flight: AtomicU32::new(0),
            stopped,
            hold: Mutex::new(None),
            held: AtomicU32::new(0),
            released: watch::channel(0).0,
        }
    }

    /// Waits, before answering, while a hold matches one of the request's inputs.
    async fn hold_if_asked(&self, request: &EmbeddingRequest) {
        let matches = match lock(&self.hold).as_deref() {
            Some(text) => request.inputs.iter().any(|i| i.contains(text)),
            None => false,
        };
        if !matches {
            return;
        }
        let mut released = self.released.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        let mut stopped = self.stopped.clone();
        tokio::select! {
            _ = released.changed() => {}
            _ = stopped.changed() => {}
        }
    }

    fn arrive(&self) -> InFlight<'_> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut audit = lock(&self.audit);
        audit.requests += 1;
        audit
            .request_times_ms
            .push(self.started.elapsed().as_millis() as u64);
        audit.max_concurrent = audit.max_concurrent.max(in_flight);
        InFlight(&self.in_flight)
    }

    fn decide(&self, route: &Route, headers: &HeaderMap, body: &[u8]) -> Decision {
        let script = lock(&self.control).script.clone();
        match validate(&script, route, headers, body) {
            Ok(request) => {
                let mut audit = lock(&self.audit);
                audit.models.insert(request.model.clone());
                *audit
                    .input_types
                    .entry(request.input_type.clone())
                    .or_default() += 1;
                drop(audit);
                lock(&self.control).dispatch(request, Instant::now())
            }
            Err(error) => Decision {
                reply: Reply::Error(error),
                delay: script.latency,
                rate_headers: lock(&self.control).rate_headers(Instant::now()),
                inputs: 0,
            },
        }
    }

    /// Sleeps, unless the mock is dropped first.
    async fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut stopped = self.stopped.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => {}
        }
    }

    fn respond(&self, decision: Decision, arrived: Instant) -> Response {
        let (status, body, retry_after) = match &decision.reply {
            Reply::Error(error) => (error.status, error.body(), error.retry_after),
            Reply::Embeddings(request) => {
                self.record_embedded(request);
                (
                    StatusCode::OK,
                    embedding_list(request, request_vectors(request), request.encoding),
                    None,
                )
            }
            Reply::Broken(request, breakage) => {
                (StatusCode::OK, broken_list(request, *breakage), None)
            }
        };
        {
            let mut audit = lock(&self.audit);
            *audit.by_status.entry(status.as_u16()).or_default() += 1;
            *audit.inputs_by_status.entry(status.as_u16()).or_default() += decision.inputs as u64;
        }
        let mut headers = decision.rate_headers;
        if let Some(wait) = retry_after {
            let ms = ceil_millis(wait);
            headers.push(("retry-after-ms", ms.to_string()));
            headers.push(("retry-after", ms.div_ceil(1000).to_string()));
        }
        headers.push((
            "x-request-id",
            format!("req_{}", uuid::Uuid::new_v4().simple()),
        ));
        headers.push((
            "openai-processing-ms",
            arrived.elapsed().as_millis().to_string(),
        ));
        json_response(status, headers, body)
    }

    fn record_embedded(&self, request: &EmbeddingRequest) {
        let mut audit = lock(&self.audit);
        for text in &request.inputs {
            *audit.embedded.entry(text.clone()).or_default() += 1;
        }
        audit.inputs_embedded += request.inputs.len() as u64;
        audit.tokens_embedded += request.total_tokens();
        let at = self.started.elapsed().as_millis() as u64;
        audit
            .embedded_log
            .push((at, request.inputs.len() as u32, request.total_tokens()));
    }
}

impl Control {
    fn new(script: MockScript) -> Self {
        Self {
            rng: StdRng::seed_from_u64(script.seed),
            script,
            window: Window::default(),
        }
    }

    fn replace_script(&mut self, script: MockScript) {
        self.rng = StdRng::seed_from_u64(script.seed);
        self.script = script;
    }

    fn limits(&self) -> Limits {
        Limits {
            requests: self.script.requests_per_minute,
            tokens: self.script.tokens_per_minute,
        }
    }

    /// The `x-ratelimit-*` headers as the window stands `now`.
    fn rate_headers(&mut self, now: Instant) -> Vec<(&'static str, String)> {
        self.window.prune(now);
        self.window.headers(now, self.limits())
    }

    /// Storm, rate limits, then random faults, for a valid request arriving `now`.
    fn dispatch(&mut self, request: EmbeddingRequest, now: Instant) -> Decision {
        let limits = self.limits();
        self.window.prune(now);
        let mut delay = self.script.latency;
        let inputs = request.inputs.len();
        let reply = if self.script.storm_429 > 0 {
            self.script.storm_429 -= 1;
            Reply::Error(ApiError::storm())
        } else if self.script.storm_5xx > 0 {
            self.script.storm_5xx -= 1;
            Reply::Error(ApiError::server_error(503))
        } else if let Err(limited) = self.window.admit(now, request.total_tokens(), limits) {
            Reply::Error(ApiError::rate_limited(&request.model, &limited))
        } else {
            let (reply, fault_delay) = self.roll_fault(request);
            delay = fault_delay.unwrap_or(delay);
            reply
        };
        let reply = match reply {
            Reply::Error(error) if !self.script.retry_after_on_429 => {
                Reply::Error(error.without_retry_after())
            }
            reply => reply,
        };
        Decision {
            reply,
            delay,
            rate_headers: self.rate_headers(now),
            inputs,
        }
    }

    /// A seeded draw among the fault ratios; the delay replaces the latency when it hangs.
    fn roll_fault(&mut self, request: EmbeddingRequest) -> (Reply, Option<Duration>) {
        let script = &self.script;
        let roll: f64 = self.rng.random();
        let hang_at = script.server_error_ratio + script.hang_ratio;
        if roll < script.server_error_ratio {
            let status = [500, 502, 503][self.rng.random_range(0..3)];
            (Reply::Error(ApiError::server_error(status)), None)
        } else if roll < hang_at {
            (
                Reply::Error(ApiError::gateway_timeout()),
                Some(script.hang_for),
            )
        } else if roll < hang_at + script.bad_body_ratio {
            let breakage = Breakage::ALL[self.rng.random_range(0..Breakage::ALL.len())];
            (Reply::Broken(request, breakage), None)
        } else {
            (Reply::Embeddings(request), None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits: a sliding window of admitted requests
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Limits {
    requests: Option<u32>,
    tokens: Option<u64>,
}

impl Limits {
    fn fit(&self, requests: usize, used_tokens: u64, tokens: u64) -> bool {
        self.requests.is_none_or(|limit| requests < limit as usize)
            && self
                .tokens
                .is_none_or(|limit| used_tokens + tokens <= limit)
    }
}

/// Requests admitted in the last [`WINDOW`], oldest first, with their tokens.
#[derive(Default)]
struct Window {
    admitted: VecDeque<(Instant, u64)>,
}

/// Why a request was refused, in the terms of OpenAI's message.
#[derive(Clone, Copy)]
struct Limited {
    kind: &'static str,
    limit: u64,
    used: u64,
    requested: u64,
    /// `None` when the request can never fit (more tokens than the whole limit).
    retry_after: Option<Duration>,
}

impl Window {
    fn prune(&mut self, now: Instant) {
        while self
            .admitted
            .front()
            .is_some_and(|&(at, _)| at + WINDOW <= now)
        {
            self.admitted.pop_front();
        }
    }

    fn used_tokens(&self) -> u64 {
        self.admitted.iter().map(|&(_, tokens)| tokens).sum()
    }

    /// Admits a request of `tokens`, or says why not; a refused request counts against nothing.
    fn admit(&mut self, now: Instant, tokens: u64, limits: Limits) -> Result<(), Limited> {
        let (count, used) = (self.admitted.len(), self.used_tokens());
        if limits.fit(count, used, tokens) {
            self.admitted.push_back((now, tokens));
            return Ok(());
        }
        let retry_after = self.wait_until_fits(now, tokens, limits);
        let limited = match limits.requests.filter(|&limit| count >= limit as usize) {
            Some(limit) => Limited {
                kind: "requests",
                limit: limit.into(),
                used: count as u64,
                requested: 1,
                retry_after,
            },
            None => Limited {
                kind: "tokens",
                limit: limits.tokens.unwrap_or_default(),
                used,
                requested: tokens,
                retry_after,
            },
        };
        Err(limited)
    }

    /// How long until enough of the window expires for the request to fit.
    fn wait_until_fits(&self, now: Instant, tokens: u64, limits: Limits) -> Option<Duration> {
        let (mut count, mut used, mut free_at) = (self.admitted.len(), self.used_tokens(), now);
        let mut oldest_first = self.admitted.iter();
        while !limits.fit(count, used, tokens) {
            let &(at, spent) = oldest_first.next()?;
            count -= 1;
            used -= spent;
            free_at = at + WINDOW;
        }
        Some(free_at.saturating_duration_since(now))
    }

    /// OpenAI's `x-ratelimit-*` headers for the configured limits; "reset" is the time until
    /// the window is empty again.
    fn headers(&self, now: Instant, limits: Limits) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(limit) = limits.requests {
            let remaining = u64::from(limit).saturating_sub(self.admitted.len() as u64);
            let last = self.admitted.back();
            headers.push(("x-ratelimit-limit-requests", limit.to_string()));
            headers.push(("x-ratelimit-remaining-requests", remaining.to_string()));
            headers.push(("x-ratelimit-reset-requests", reset_after(now, last)));
        }
        if let Some(limit) = limits.tokens {
            let remaining = limit.saturating_sub(self.used_tokens());
            let last = self.admitted.iter().rev().find(|&&(_, tokens)| tokens > 0);
            headers.push(("x-ratelimit-limit-tokens", limit.to_string()));
            headers.push(("x-ratelimit-remaining-tokens", remaining.to_string()));
            headers.push(("x-ratelimit-reset-tokens", reset_after(now, last)));
        }
        headers
    }
}

/// Time until the `last` admitted request leaves the window, in OpenAI's format.
fn reset_after(now: Instant, last: Option<&(Instant, u64)>) -> String {
    let empty_at = last.map_or(now, |&(at, _)| at + WINDOW);
    openai_duration(empty_at.saturating_duration_since(now))
}

/// A duration the way OpenAI's headers write it: `0s`, `12ms`, `1s`, `1m30.5s`, `6m0s`,
/// `1h0m0s` (Go's `time.Duration` style, rounded up to whole milliseconds).
pub fn openai_duration(duration: Duration) -> String {
    let ms = ceil_millis(duration);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, second_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let seconds = match second_ms % 1000 {
        0 => format!("{}s", second_ms / 1000),
        fraction => format!(
            "{}.{}s",
            second_ms / 1000,
            format!("{fraction:03}").trim_end_matches('0')
        ),
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, _) => format!("{minutes}m{seconds}"),
        _ => format!("{hours}h{minutes}m{seconds}"),
    }
}

fn ceil_millis(duration: Duration) -> u64 {
    duration.as_nanos().div_ceil(1_000_000) as u64
}

// ---------------------------------------------------------------------------------------------
// Requests: auth, quota and validation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

/// A valid request.
struct EmbeddingRequest {
    model: String,
    /// The `input_type` field, "" when absent.
    input_type: String,
    inputs: Vec<String>,
    tokens: Vec<u64>,
    encoding: Encoding,
    dimensions: usize,
}

impl EmbeddingRequest {
    fn total_tokens(&self) -> u64 {
        self.tokens.iter().sum()
    }
}

/// Auth, quota, then the request itself: what OpenAI checks before rate limits.
fn validate(
    script: &MockScript,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<EmbeddingRequest, ApiError> {
    let azure_deployment = check_route(script, route)?;
    match azure_deployment {
        Some(_) => check_azure_key(script, headers)?,
        None => check_api_key(script, headers)?,
    }
    if script.insufficient_quota {
        return Err(ApiError::insufficient_quota());
    }
    let mut request = parse_request(script, body, azure_deployment)?;
    request.tokens = count_tokens(script, &request.inputs)?;
    Ok(request)
}

/// The Azure deployment a request came for (`None` on the OpenAI route), or Azure's errors: an
/// unknown deployment (404), a missing or unsupported `api-version` (400/404).
fn check_route<'a>(script: &MockScript, route: &'a Route) -> Result<Option<&'a str>, ApiError> {
    match (route, &script.azure) {
        (Route::OpenAi, _) => Ok(None),
        (Route::Azure { .. }, None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "Resource not found",
        )),
        (
            Route::Azure {
                deployment,
                api_version,
            },
            Some(azure),
        ) => {
            let Some(version) = api_version else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "Missing required query parameter 'api-version'",
                ));
            };
            if *version != azure.api_version {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!("Unsupported api-version {version}"),
                ));
            }
            if *deployment != azure.deployment {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "The API deployment for this resource does not exist.",
                )
                .code("DeploymentNotFound"));
            }
            Ok(Some(deployment.as_str()))
        }
    }
}

/// Azure's keys come in `api-key` (a bearer token there is an Entra ID token: refused here).
fn check_azure_key(script: &MockScript, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &script.api_key else {
        return Ok(());
    };
    match headers.get("api-key").and_then(|v| v.to_str().ok()) {
        Some(key) if key == expected => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        )
        .code("401")),
    }
}

fn check_api_key(script: &MockScript, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &script.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None | Some("") => Err(ApiError::missing_api_key()),
        Some(key) if key == expected => Ok(()),
        Some(key) => Err(ApiError::invalid_api_key(key)),
    }
}

fn parse_request(
    script: &MockScript,
    body: &[u8],
    azure_deployment: Option<&str>,
) -> Result<EmbeddingRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::invalid_json())?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_json());
    };
    let model = match (azure_deployment, fields.get("model")) {
        (Some(deployment), None) => deployment.to_owned(),
        _ => parse_model(&fields)?,
    };
    Ok(EmbeddingRequest {
        model,
        input_type: fields
            .get("input_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        inputs: parse_inputs(&fields, script)?,
        tokens: Vec::new(),
        encoding: parse_encoding(&fields)?,
        dimensions: if script.ignores_dimensions {
            script.dimension
        } else {
            parse_dimensions(&fields, script.dimension)?
        },
    })
}

fn parse_model(fields: &Map<String, Value>) -> Result<String, ApiError> {
    match fields.get("model") {
        Some(Value::String(model)) if !model.is_empty() => Ok(model.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid_request(
            "you must provide a model parameter",
        )),
        Some(_) => Err(
            ApiError::invalid_request("Invalid type for 'model': expected a string.")
                .param("model"),
        ),
    }
}

/// A string or an array of 1..=max non-empty strings (token arrays are not supported).
fn parse_inputs(fields: &Map<String, Value>, script: &MockScript) -> Result<Vec<String>, ApiError> {
    let inputs = match fields.get("input") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("'input' is a required property").param("input"));
        }
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(ApiError::invalid_input)?,
        Some(_) => return Err(ApiError::invalid_input()),
    };
    if inputs.is_empty()
        || inputs.len() > script.max_inputs_per_request
        || inputs.iter().any(String::is_empty)
    {
        return Err(ApiError::invalid_input());
    }
    Ok(inputs)
}

fn parse_encoding(fields: &Map<String, Value>) -> Result<Encoding, ApiError> {
    match fields.get("encoding_format") {
        None | Some(Value::Null) => Ok(Encoding::Float),
        Some(Value::String(format)) if format == "float" => Ok(Encoding::Float),
        Some(Value::String(format)) if format == "base64" => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::invalid_request(format!(
            "{other} is not one of ['float', 'base64'] - 'encoding_format'"
        ))
        .param("encoding_format")),
    }
}

fn parse_dimensions(fields: &Map<String, Value>, native: usize) -> Result<usize, ApiError> {
    match fields.get("dimensions") {
        None | Some(Value::Null) => Ok(native),
        Some(value) => value
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=native).contains(d))
            .ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "Invalid value for 'dimensions' = {value}. Must be between 1 and {native}."
                ))
                .param("dimensions")
            }),
    }
}

/// Tokens per input (cl100k_base), checked against the per-input and per-request limits.
fn count_tokens(script: &MockScript, inputs: &[String]) -> Result<Vec<u64>, ApiError> {
    let tokens: Vec<u64> = match script.tokenizer {
        MockTokenizer::Cl100k => {
            let bpe = tiktoken_rs::cl100k_base_singleton();
            inputs
                .iter()
                .map(|text| bpe.encode_ordinary(text).len() as u64)
                .collect()
        }
        MockTokenizer::CharsOverFour => inputs
            .iter()
            .map(|text| text.chars().count().div_ceil(4) as u64)
            .collect(),
    };
    let limit = script.max_tokens_per_input as u64;
    if let Some(&over) = tokens.iter().find(|&&n| n > limit) {
        return Err(ApiError::context_length(limit, over));
    }
    let total: u64 = tokens.iter().sum();
    if total > script.max_tokens_per_request {
        return Err(ApiError::max_tokens_per_request(
            total,
            script.max_tokens_per_request,
        ));
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An OpenAI error: `{"error": {"message", "type", "param", "code"}}`.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    /// Sent as `retry-after-ms` and `retry-after`.
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn param(self, param: &'static str) -> Self {
        Self {
            param: Some(param),
            ..self
        }
    }

    fn code(self, code: &'static str) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }

    fn without_retry_after(self) -> Self {
        Self {
            retry_after: None,
            ..self
        }
    }

    fn invalid_json() -> Self {
        Self::invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON. If you have trouble figuring out how to fix \
             this, please contact us through our help center at help.openai.com.)",
        )
    }

    fn invalid_input() -> Self {
        Self::invalid_request(
            "'$.input' is invalid. Please check the API reference: \
             https://platform.openai.com/docs/api-reference.",
        )
    }

    fn context_length(limit: u64, requested: u64) -> Self {
        Self::invalid_request(format!(
            "This model's maximum context length is {limit} tokens, however you requested \
             {requested} tokens ({requested} in your prompt; 0 for the completion). Please reduce \
             your prompt; or completion length."
        ))
    }

    fn max_tokens_per_request(requested: u64, limit: u64) -> Self {
        let message = format!("Requested {requested} tokens, max {limit} tokens per request");
        Self::new(StatusCode::BAD_REQUEST, "max_tokens_per_request", message)
            .code("max_tokens_per_request")
    }

    fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API \
             key from https://platform.openai.com/account/api-keys.",
        )
    }

    fn invalid_api_key(given: &str) -> Self {
        let message = format!(
            "Incorrect API key provided: {}. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
            mask_key(given)
        );
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    fn insufficient_quota() -> Self {
        let message =
            "You exceeded your current quota, please check your plan and billing details.";
        Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
            .code("insufficient_quota")
    }

    fn storm() -> Self {
        let message = format!(
            "Rate limit reached for requests. Please try again in {}. {RATE_LIMIT_DOCS}",
            openai_duration(STORM_RETRY_AFTER)
        );
        Self {
            retry_after: Some(STORM_RETRY_AFTER),
            ..Self::rate_limit_exceeded("requests", message)
        }
    }

    fn rate_limited(model: &str, limited: &Limited) -> Self {
        let Limited {
            kind,
            limit,
            used,
            requested,
            retry_after,
        } = *limited;
        let per_minute = if kind == "requests" {
            "requests per min (RPM)"
        } else {
            "tokens per min (TPM)"
        };
        let message = match retry_after {
            Some(wait) => format!(
                "Rate limit reached for {model} in organization {ORGANIZATION} on {per_minute}: \
                 Limit {limit}, Used {used}, Requested {requested}. Please try again in {}. \
                 {RATE_LIMIT_DOCS}",
                openai_duration(wait)
            ),
            None => format!(
                "Request too large for {model} in organization {ORGANIZATION} on {per_minute}: \
                 Limit {limit}, Requested {requested}. The input or output tokens must be reduced \
                 in order to run successfully. {RATE_LIMIT_DOCS}"
            ),
        };
        Self {
            retry_after,
            ..Self::rate_limit_exceeded(kind, message)
        }
    }

    fn rate_limit_exceeded(kind: &'static str, message: String) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message).code("rate_limit_exceeded")
    }

    fn server_error(status: u16) -> Self {
        let status = StatusCode::from_u16(status).expect("a valid 5xx status");
        Self::new(
            status,
            "server_error",
            "The server had an error while processing your request.",
        )
    }

    fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "Gateway timeout.",
        )
    }

    fn body(&self) -> Vec<u8> {
        let error = json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        serde_json::to_vec(&error).expect("serialize an error body")
    }
}

/// `sk-abc...wxyz` with the middle starred: enough to recognise a key, never the key.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    let (head, tail) = (&chars[..3], &chars[chars.len() - 4..]);
    format!(
        "{}{}{}",
        String::from_iter(head),
        "*".repeat(chars.len() - 7),
        String::from_iter(tail)
    )
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn request_vectors(request: &EmbeddingRequest) -> Vec<Vec<f32>> {
    request
        .inputs
        .iter()
        .map(|text| MockProvider::vector_for(text, request.dimensions))
        .collect()
}

/// The 200 body, data in index order.
fn embedding_list(
    request: &EmbeddingRequest,
    vectors: Vec<Vec<f32>>,
    encoding: Encoding,
) -> Vec<u8> {
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match encoding {
                Encoding::Float => EmbeddingValue::Float(vector),
                Encoding::Base64 => EmbeddingValue::Base64(base64_le(&vector)),
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = request.total_tokens();
    let usage = Usage {
        prompt_tokens: tokens,
        total_tokens: tokens,
    };
    let list = EmbeddingList {
        object: "list",
        data,
        model: &request.model,
        usage,
    };
    serde_json::to_vec(&list).expect("serialize an embedding list")
}

/// The vector as OpenAI's `encoding_format: "base64"` sends it: little-endian f32 bytes.
fn base64_le(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

/// The ways a 200 body can be broken.
#[derive(Clone, Copy, Debug)]
enum Breakage {
    /// One embedding fewer than inputs.
    MissingEmbedding,
    /// The last vector one component too long (a corrupt answer: one answer of a single wrong
    /// dimension throughout is a configuration error, and the daemon pauses on it). A request
    /// of one input gets a NaN instead.
    WrongDimension,
    /// A NaN in the first vector; sent as base64 whatever was asked, since JSON has no NaN.
    NanBase64,
    /// The body cut in half.
    TruncatedJson,
}

impl Breakage {
    const ALL: [Breakage; 4] = [
        Self::MissingEmbedding,
        Self::WrongDimension,
        Self::NanBase64,
        Self::TruncatedJson,
    ];
}

fn broken_list(request: &EmbeddingRequest, breakage: Breakage) -> Vec<u8> {
    let mut vectors = request_vectors(request);
    match breakage {
        Breakage::MissingEmbedding => {
            vectors.pop();
            embedding_list(request, vectors, request.encoding)
        }
        Breakage::WrongDimension if vectors.len() > 1 => {
            if let Some(last) = vectors.last_mut() {
                last.push(0.0);
            }
            embedding_list(request, vectors, request.encoding)
        }
        Breakage::WrongDimension | Breakage::NanBase64 => {
            if let Some(first) = vectors.first_mut().and_then(|vector| vector.first_mut()) {
                *first = f32::NAN;
            }
            embedding_list(request, vectors, Encoding::Base64)
        }
        Breakage::TruncatedJson => {
            let mut body = embedding_list(request, vectors, request.encoding);
            body.truncate(body.len() / 2);
            body
        }
    }
}

fn json_response(
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).expect("a valid header value");
        map.insert(HeaderName::from_static(name), value);
    }
    response
}
