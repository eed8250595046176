//! Wiring: builds the store, the Redis connections, the supervised pipeline and the HTTP
//! server from [`Settings`], and runs them until the shared [`Shutdown`] fires.
//!
//! The tests use [`Application::build`] exactly as `embedq serve` does, on a random port.

use crate::actors::embedding_pool::PoolArgs;
use crate::actors::embedding_worker::{WorkerArgs, WorkerContext};
use crate::actors::rate_limiter::{RateLimiterArgs, RateLimiterStatus};
use crate::actors::status_writer::StatusWriterArgs;
use crate::actors::supervisor::{ChildRole, actor_name};
use crate::actors::{
    IntakeArgs, IntakeHealth, PipelineContext, PlannerArgs, SupervisionReport, Supervisor,
    SupervisorArgs, SupervisorMsg,
};
use crate::config::Settings;
use crate::http::{AppState, router};
use crate::providers::{Embedder, LocalEmbedder, OpenAiEmbedder, ProviderError};
use crate::queue::{
    BudgetLimits, ConsumerLease, Keys, PIPELINE_GROUP, PLANNER_GROUP, PlanScripts, QueueError,
    RateBudget, RedisConnections, RetrySet, StreamAcker, consumer_identity,
};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::vectors::{VectorError, VectorStore};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the pipeline: {0}")]
    Spawn(String),
    #[error("http server: {0}")]
    Serve(std::io::Error),
    #[error("supervision gave up: {0}")]
    Escalated(String),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    shutdown: Shutdown,
    consumer: String,
}

impl Application {
    /// Connects, migrates, starts the pipeline and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let shutdown = Shutdown::new();
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;

        let keys = Keys::new(settings.redis.prefix.clone());
        let connections = RedisConnections::new(&settings.redis)?;
        let shared = connections.shared()?;
        let consumer = consumer_identity(&settings.queue.consumer_name);
        let report = Arc::new(SupervisionReport::default());
        if !settings.queue.consumer_name.is_empty() {
            let lease = ConsumerLease::acquire(
                shared.clone(),
                &keys,
                &consumer,
                settings.visibility_timeout(),
            )
            .await?;
            spawn_lease_renewal(lease, shutdown.clone(), report.clone());
        }

        let embedder: Arc<dyn Embedder> = match settings.embedding.provider.as_str() {
            "local" => {
                let dir = std::path::Path::new(&settings.embedding.model_dir);
                let embedder = tokio::task::spawn_blocking({
                    let dir = dir.to_owned();
                    let threads = settings.embedding.threads;
                    move || LocalEmbedder::load(&dir, threads)
                })
                .await
                .map_err(|e| StartupError::Spawn(e.to_string()))??;
                Arc::new(embedder)
            }
            _ => Arc::new(OpenAiEmbedder::new(
                &settings.embedding,
                settings.secrets.provider_api_key.clone(),
            )?),
        };
        let vectors =
            crate::vectors::open(&settings.vectors, settings.secrets.qdrant_api_key.as_ref())
                .await?;
        vectors.ensure_collection(embedder.dimension()).await?;
        tracing::info!(
            "database: {} ({})",
            store.backend().as_str(),
            redact_url(&settings.database.url)
        );
        tracing::info!(
            "queue: redis {} (prefix {})",
            redact_url(&settings.redis.url),
            settings.redis.prefix
        );
        tracing::info!(
            "vectors: {} ({})",
            vectors.backend(),
            if settings.vectors.backend == "qdrant" {
                redact_url(&settings.vectors.url)
            } else {
                format!("{}/{}", settings.vectors.path, settings.vectors.collection)
            }
        );
        tracing::info!(
            "embeddings: {} {} ({} dimensions)",
            settings.embedding.provider,
            embedder.model(),
            embedder.dimension()
        );

        let block = Duration::from_millis(settings.queue.block_ms);
        let job_intake_health = Arc::new(IntakeHealth::default());
        let task_intake_health = Arc::new(IntakeHealth::default());
        let rate_status = Arc::new(std::sync::Mutex::new(RateLimiterStatus::default()));
        let retries = RetrySet::new(shared.clone(), &keys);
        let name = |role: ChildRole| actor_name(&consumer, role);
        let workers = settings.pipeline.workers;
        let pipeline = PipelineContext {
            instance: consumer.clone(),
            task_intake: IntakeArgs {
                conn: connections.blocking(block)?,
                acker: StreamAcker::new(
                    shared.clone(),
                    keys.tasks_stream(),
                    PIPELINE_GROUP.into(),
                    consumer.clone(),
                    keys.dead_letters(),
                ),
                stream: keys.tasks_stream(),
                group: PIPELINE_GROUP.into(),
                consumer: consumer.clone(),
                block,
                visibility_timeout: settings.visibility_timeout(),
                credits: Arc::new(Semaphore::new(settings.queue.task_credits)),
                max_batch: settings.queue.task_credits,
                downstream: name(ChildRole::Pool),
                health: task_intake_health.clone(),
            },
            pool: PoolArgs {
                workers: (0..workers).map(|i| name(ChildRole::Worker(i))).collect(),
                status_writer: name(ChildRole::StatusWriter),
                supervisor: format!("{consumer}/supervisor"),
            },
            worker: WorkerArgs {
                index: 0,
                ctx: WorkerContext {
                    store: store.clone(),
                    embedder: embedder.clone(),
                    retry: settings.retry.clone(),
                    rate_limiter: name(ChildRole::RateLimiter),
                    vector_writer: name(ChildRole::VectorWriter),
                    pool: name(ChildRole::Pool),
                    model: settings.embedding.model.clone(),
                    truncate: settings.embedding.truncate,
                    halted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                },
            },
            workers,
            embed: settings.pipeline.embed,
            rate_limiter: RateLimiterArgs {
                budget: RateBudget::new(
                    shared.clone(),
                    &keys,
                    BudgetLimits {
                        requests_per_minute: settings.rate_limit.requests_per_minute,
                        tokens_per_minute: settings.rate_limit.tokens_per_minute,
                        burst_seconds: settings.rate_limit.burst_seconds,
                    },
                ),
                min_concurrency: settings.rate_limit.min_concurrency,
                max_concurrency: settings.rate_limit.max_concurrency,
                status: rate_status.clone(),
            },
            status_writer: StatusWriterArgs {
                store: store.clone(),
                retries: retries.clone(),
                model: settings.embedding.model.clone(),
                max_batch: settings.pipeline.status_max_batch,
                flush_every: Duration::from_millis(settings.pipeline.status_flush_ms),
            },
            retries,
            vectors: vectors.clone(),
            job_intake: IntakeArgs {
                conn: connections.blocking(block)?,
                acker: StreamAcker::new(
                    shared.clone(),
                    keys.jobs_stream(),
                    PLANNER_GROUP.into(),
                    consumer.clone(),
                    keys.dead_letters(),
                ),
                stream: keys.jobs_stream(),
                group: PLANNER_GROUP.into(),
                consumer: consumer.clone(),
                block,
                visibility_timeout: settings.visibility_timeout(),
                credits: Arc::new(Semaphore::new(settings.queue.job_credits)),
                max_batch: settings.queue.job_credits,
                downstream: name(ChildRole::Planner),
                health: job_intake_health.clone(),
            },
            planner: PlannerArgs {
                store: store.clone(),
                scripts: PlanScripts::new(shared.clone(), keys.clone()),
                settings: settings.planner.clone(),
                model: settings.embedding.model.clone(),
                visibility_timeout: settings.visibility_timeout(),
            },
        };
        let events = crate::events::EventBus::new();
        let metrics = crate::metrics::Metrics::install();
        let (supervisor, supervisor_done) = Actor::spawn(
            Some(format!("{consumer}/supervisor")),
            Supervisor,
            SupervisorArgs {
                pipeline,
                policy: settings.supervision.clone(),
                report: report.clone(),
                shutdown: shutdown.clone(),
                events: events.clone(),
            },
        )
        .await
        .map_err(|e| StartupError::Spawn(e.to_string()))?;

        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|source| StartupError::Listen {
                addr: settings.server.listen,
                source,
            })?;
        let state = AppState {
            store,
            redis: shared,
            keys,
            settings,
            job_intake: job_intake_health,
            task_intake: task_intake_health,
            supervision: report,
            supervisor: supervisor.clone(),
            embedder,
            vectors,
            rate_limiter: rate_status.clone(),
            rate_limiter_name: name(ChildRole::RateLimiter),
            instance: consumer.clone(),
            events: events.clone(),
            metrics,
        };
        crate::events::spawn_progress_reporter(
            state.store.clone(),
            events,
            rate_status,
            shutdown.clone(),
        );
        Ok(Self {
            listener,
            state,
            supervisor,
            supervisor_done,
            shutdown,
            consumer,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// The vector store the pipeline writes to (tests inspect it through this).
    pub fn vector_store(&self) -> Arc<dyn VectorStore> {
        self.state.vectors.clone()
    }

    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// The handle that stops this application.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until shutdown, then stops the pipeline (intake first, so in-flight work can
    /// finish) and closes the pool. Fails when supervision escalated.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let Self {
            listener,
            state,
            supervisor,
            supervisor_done,
            shutdown,
            ..
        } = self;
        let store = state.store.clone();
        let report = state.supervision.clone();
        let app = router(state);
        let signal = shutdown.clone();
        let mut server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.triggered().await })
                .await
        });
        let finished_early = tokio::select! {
            served = &mut server => Some(served),
            _ = shutdown.triggered() => None,
        };
        // The pipeline stops first (in-flight batches finish within their deadline), while the
        // HTTP server drains; then open connections that never end by themselves (event
        // streams, a stalled client) get a short grace and are dropped.
        shutdown.trigger();
        supervisor.stop(Some("shutdown".into()));
        let _ = tokio::time::timeout(Duration::from_secs(15), supervisor_done).await;
        let served = match finished_early {
            Some(served) => served,
            None => match tokio::time::timeout(HTTP_GRACE, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    server.abort();
                    Ok(Ok(()))
                }
            },
        };
        let served = served.unwrap_or(Ok(()));
        store.close().await;
        served.map_err(StartupError::Serve)?;
        match report.escalated() {
            Some(reason) => Err(StartupError::Escalated(reason)),
            None => Ok(()),
        }
    }
}

/// How long open HTTP connections may take to finish once the pipeline has stopped.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// A URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Keeps a configured consumer name leased; losing it stops the daemon with an error (exit code
/// 1, so an orchestrator notices) rather than letting two processes consume under one name.
fn spawn_lease_renewal(lease: ConsumerLease, shutdown: Shutdown, report: Arc<SupervisionReport>) {
    tokio::spawn(async move {
        let period = lease.ttl() / 3;
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(period) => {}
            }
            match lease.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("another daemon took this consumer name; stopping");
                    report.escalate("another daemon took this consumer name".into());
                    shutdown.trigger();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the consumer-name lease"),
            }
        }
    });
}
