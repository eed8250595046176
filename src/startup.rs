//! Wiring: connects the backends named by the [`Settings`], wires the supervised pipeline once
//! (every actor's arguments and the typed addresses they reach each other by), binds the HTTP
//! server, and runs them until the shared [`Shutdown`] fires.
//!
//! The tests use [`Application::build`] exactly as `embedq serve` does, on a random port.

use crate::actors::{
    Addresses, Children, EmbeddingChildren, IntakeArgs, IntakeHealth, PlannerArgs, PoolArgs,
    RateLimitedEmbedder, RateLimiterArgs, ReconcilerArgs, ReconcilerReport, SchedulerArgs,
    SchedulerReport, StatusWriterArgs, SupervisionReport, Supervisor, SupervisorArgs,
    SupervisorMsg, VectorWriterArgs, WorkerArgs,
};
use crate::config::{Provider, Settings, VectorBackend};
use crate::events::EventBus;
use crate::gate::PipelineGate;
use crate::http::{AppState, PipelineView, router};
use crate::limiter::LimiterStatus;
use crate::providers::{Embedder, LocalEmbedder, OpenAiEmbedder, ProviderError};
use crate::queue::{
    BudgetLimits, Keys, Lease, PIPELINE_GROUP, PLANNER_GROUP, PlanScripts, QueueError, RateBudget,
    RedisConnections, RedisDurability, RetrySet, StreamAcker, consumer_identity,
};
use crate::retry::RetryPolicy;
use crate::shutdown::{Shutdown, ShutdownPlan};
use crate::store::{Store, StoreError};
use crate::vectors::{VectorError, VectorStore};
use ractor::{Actor, ActorRef};
use redis::aio::ConnectionManager;
use std::sync::Arc;
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
    #[error("redis: {0}; refusing to start (set redis.allow_evicting_policy = true to run anyway)")]
    EvictingRedis(String),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    shutdown: Shutdown,
    consumer: String,
}

/// The backends, connected.
struct Backends {
    store: Store,
    connections: RedisConnections,
    shared: ConnectionManager,
    /// What Redis said of its eviction and persistence at start-up.
    durability: RedisDurability,
    embedder: Arc<dyn Embedder>,
    vectors: Arc<dyn VectorStore>,
}

impl Backends {
    async fn connect(settings: &Settings) -> Result<Self, StartupError> {
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let connections = RedisConnections::new(&settings.redis)?;
        let shared = connections.shared()?;
        let durability = match RedisDurability::inspect(&shared).await {
            Ok(durability) => durability,
            Err(e) => {
                // Start-up does not wait for Redis; what it keeps is then unknown.
                tracing::warn!(error = %e, "could not ask Redis how it keeps its data");
                RedisDurability::default()
            }
        };
        if durability.evicts_any_key() && !settings.redis.allow_evicting_policy {
            return Err(StartupError::EvictingRedis(format!(
                "maxmemory-policy {} may evict the queues themselves; set noeviction or a volatile-* policy",
                durability.maxmemory_policy.as_deref().unwrap_or("?")
            )));
        }
        if let Some(warning) = durability.warning() {
            tracing::warn!("redis: {warning}");
        }
        let embedder = open_embedder(settings).await?;
        let vectors =
            crate::vectors::open(&settings.vectors, settings.secrets.qdrant_api_key.as_ref())
                .await?;
        crate::vectors::prepare(vectors.as_ref(), embedder.dimension()).await?;
        let backends = Self {
            store,
            connections,
            shared,
            durability,
            embedder,
            vectors,
        };
        backends.log(settings);
        Ok(backends)
    }

    fn log(&self, settings: &Settings) {
        tracing::info!(
            "database: {} ({})",
            self.store.backend().as_str(),
            redact_url(&settings.database.url)
        );
        tracing::info!(
            "queue: redis {} (prefix {})",
            redact_url(&settings.redis.url),
            settings.redis.prefix
        );
        let place = match settings.vectors.backend {
            VectorBackend::Qdrant => redact_url(&settings.vectors.url),
            VectorBackend::Edge => {
                format!("{}/{}", settings.vectors.path, settings.vectors.collection)
            }
        };
        tracing::info!("vectors: {} ({place})", self.vectors.backend());
        tracing::info!(
            "embeddings: {} {} ({} dimensions)",
            settings.embedding.provider.as_str(),
            self.embedder.model(),
            self.embedder.dimension()
        );
    }
}

async fn open_embedder(settings: &Settings) -> Result<Arc<dyn Embedder>, StartupError> {
    Ok(match settings.embedding.provider {
        Provider::Local => {
            let dir = std::path::PathBuf::from(&settings.embedding.model_dir);
            let threads = settings.embedding.threads;
            let pass_tokens = settings.embedding.pass_tokens;
            let embedder = tokio::task::spawn_blocking(move || {
                LocalEmbedder::load_with(&dir, threads, pass_tokens)
            })
            .await
            .map_err(|e| StartupError::Spawn(e.to_string()))??;
            Arc::new(embedder)
        }
        Provider::Auto | Provider::Openai | Provider::AzureOpenai => Arc::new(OpenAiEmbedder::new(
            &settings.embedding,
            settings.secrets.provider_api_key.clone(),
        )?),
    })
}

/// The pieces the actors share with the HTTP surface.
struct Shared {
    gate: PipelineGate,
    report: Arc<SupervisionReport>,
    limiter: LimiterStatus,
    job_intake: Arc<IntakeHealth>,
    task_intake: Arc<IntakeHealth>,
    reconciler: ReconcilerReport,
    scheduler: SchedulerReport,
    events: EventBus,
}

/// Every child's arguments, and the addresses they reach each other by: the pipeline, wired
/// once.
fn wire(
    settings: &Settings,
    backends: &Backends,
    consumer: &str,
    shared: &Shared,
) -> Result<(Children, Addresses, RateLimitedEmbedder), StartupError> {
    let keys = Keys::new(settings.redis.prefix.clone());
    let addresses = Addresses::default();
    let block = settings.queue.block;
    let visibility_timeout = settings.visibility_timeout();
    let acker = |stream: String, group: &str| {
        StreamAcker::new(
            backends.shared.clone(),
            stream,
            group.into(),
            consumer.to_owned(),
            keys.dead_letters(),
        )
    };
    let embedder =
        RateLimitedEmbedder::new(backends.embedder.clone(), addresses.rate_limiter.clone());
    let policy = RetryPolicy::new(&settings.retry);
    let retries = RetrySet::new(backends.shared.clone(), &keys);
    let embedding = settings.pipeline.embed.then(|| -> Result<_, StartupError> {
        let [interactive, normal, bulk] = crate::domain::Priority::ALL.map(|priority| {
            let stream = keys.tasks_stream(priority);
            Ok::<_, StartupError>(IntakeArgs {
                conn: backends.connections.blocking(block)?,
                acker: acker(stream.clone(), PIPELINE_GROUP),
                stream,
                group: PIPELINE_GROUP.into(),
                consumer: consumer.to_owned(),
                block,
                visibility_timeout,
                // Each priority has credits of its own: a bulk backlog held in memory
                // never keeps an interactive task from being read.
                credits: Arc::new(Semaphore::new(settings.queue.task_credits)),
                max_batch: settings.queue.task_credits,
                downstream: addresses.pool.clone(),
                health: shared.task_intake.clone(),
                gate: shared.gate.clone(),
            })
        });
        Ok(EmbeddingChildren {
            task_intakes: [interactive?, normal?, bulk?],
            pool: PoolArgs {
                store: backends.store.clone(),
                embedder: embedder.clone(),
                policy,
                model: settings.embedding.model.clone(),
                truncate: settings.embedding.truncate,
                max_request_tokens: crate::limiter::max_request_tokens(
                    settings.rate_limit.requests_per_minute,
                    settings.rate_limit.tokens_per_minute,
                    settings.rate_limit.burst_seconds,
                ),
                workers: settings.pipeline.workers,
                worker: WorkerArgs {
                    index: 0,
                    embedder: backends.embedder.clone(),
                    vector_writer: addresses.vector_writer.clone(),
                },
                status_writer: addresses.status_writer.clone(),
                gate: shared.gate.clone(),
                supervision: settings.supervision.clone(),
                report: shared.report.clone(),
                events: shared.events.clone(),
            },
            status_writer: StatusWriterArgs {
                store: backends.store.clone(),
                retries: retries.clone(),
                model: settings.embedding.model.clone(),
                max_batch: settings.pipeline.status_max_batch,
                flush_every: settings.pipeline.status_flush,
            },
            retries: retries.clone(),
        })
    });
    let children = Children {
        instance: consumer.to_owned(),
        job_intake: IntakeArgs {
            conn: backends.connections.blocking(block)?,
            acker: acker(keys.jobs_stream(), PLANNER_GROUP),
            stream: keys.jobs_stream(),
            group: PLANNER_GROUP.into(),
            consumer: consumer.to_owned(),
            block,
            visibility_timeout,
            credits: Arc::new(Semaphore::new(settings.queue.job_credits)),
            max_batch: settings.queue.job_credits,
            downstream: addresses.planner.clone(),
            health: shared.job_intake.clone(),
            gate: shared.gate.clone(),
        },
        planner: PlannerArgs {
            store: backends.store.clone(),
            scripts: PlanScripts::new(backends.shared.clone(), keys.clone()),
            settings: settings.planner.clone(),
            model: settings.embedding.model.clone(),
            visibility_timeout,
            vectors: backends.vectors.clone(),
            point_sync: crate::point_sync::PointSync::new(
                backends.store.clone(),
                backends.vectors.clone(),
            ),
            dimension: backends.embedder.dimension(),
            generation: 1,
            interactive_max_items: settings.planner.interactive_max_items,
        },
        reconciler: ReconcilerArgs {
            store: backends.store.clone(),
            scripts: PlanScripts::new(backends.shared.clone(), keys.clone()),
            redis: backends.shared.clone(),
            keys: keys.clone(),
            // Lost work is planned again within a fraction of the visibility timeout.
            period: (visibility_timeout / 4).clamp(
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(30),
            ),
            grace: visibility_timeout,
            page_size: settings.planner.page_size,
            task_size: settings.planner.task_size,
            max_queued_tasks: settings.planner.max_queued_tasks,
            report: shared.reconciler.clone(),
            point_sync: crate::point_sync::PointSync::new(
                backends.store.clone(),
                backends.vectors.clone(),
            ),
        },
        scheduler: SchedulerArgs {
            store: backends.store.clone(),
            redis: backends.shared.clone(),
            keys: keys.clone(),
            settings: settings.scheduler.clone(),
            schedules: settings.schedules.clone(),
            model: settings.embedding.model.clone(),
            fired_by: consumer.to_owned(),
            report: shared.scheduler.clone(),
        },
        vector_writer: VectorWriterArgs {
            vectors: backends.vectors.clone(),
            store: backends.store.clone(),
            model: settings.embedding.model.clone(),
            generation: 1,
        },
        rate_limiter: RateLimiterArgs {
            gate: shared.gate.clone(),
            budget: RateBudget::new(
                backends.shared.clone(),
                &keys,
                BudgetLimits {
                    requests_per_minute: settings.rate_limit.requests_per_minute,
                    tokens_per_minute: settings.rate_limit.tokens_per_minute,
                    burst_seconds: settings.rate_limit.burst_seconds,
                },
            ),
            min_concurrency: settings.rate_limit.min_concurrency,
            max_concurrency: settings.rate_limit.max_concurrency,
            status: shared.limiter.clone(),
        },
        embedding: embedding.transpose()?,
    };
    Ok((children, addresses, embedder))
}

impl Application {
    /// Connects, migrates, starts the pipeline and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let shutdown = Shutdown::new();
        let backends = Backends::connect(&settings).await?;
        let keys = Keys::new(settings.redis.prefix.clone());
        let consumer = consumer_identity(&settings.queue.consumer_name);
        let report = Arc::new(SupervisionReport::default());
        if !settings.queue.consumer_name.is_empty() {
            let lease = Lease::new(
                backends.shared.clone(),
                keys.consumer_lease(&consumer),
                settings.visibility_timeout(),
            );
            if !lease.take().await? {
                return Err(QueueError::ConsumerNameTaken(consumer).into());
            }
            spawn_lease_renewal(lease, shutdown.clone(), report.clone());
        }
        let shared = Shared {
            gate: PipelineGate::new(),
            report,
            limiter: LimiterStatus::default(),
            job_intake: Arc::new(IntakeHealth::default()),
            task_intake: Arc::new(IntakeHealth::default()),
            reconciler: ReconcilerReport::default(),
            scheduler: SchedulerReport::default(),
            events: EventBus::new(),
        };
        let (children, addresses, embedder) = wire(&settings, &backends, &consumer, &shared)?;
        let metrics = crate::metrics::Metrics::install();
        let (supervisor, supervisor_done) = Actor::spawn(
            Some(format!("{consumer}/supervisor")),
            Supervisor,
            SupervisorArgs {
                children,
                addresses,
                policy: settings.supervision.clone(),
                report: shared.report.clone(),
                shutdown: shutdown.clone(),
                events: shared.events.clone(),
                gate: shared.gate.clone(),
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
        crate::events::spawn_progress_reporter(
            backends.store.clone(),
            shared.events.clone(),
            shared.limiter.clone(),
            shutdown.clone(),
        );
        crate::events::spawn_gate_reporter(
            shared.gate.clone(),
            shared.events.clone(),
            shutdown.clone(),
        );
        let state = AppState {
            point_sync: crate::point_sync::PointSync::new(
                backends.store.clone(),
                backends.vectors.clone(),
            ),
            store: backends.store,
            redis: backends.shared,
            redis_durability: backends.durability,
            keys,
            settings,
            pipeline: PipelineView {
                gate: shared.gate,
                supervision: shared.report,
                limiter: shared.limiter,
                job_intake: shared.job_intake,
                task_intake: shared.task_intake,
                reconciler: shared.reconciler,
                scheduler: shared.scheduler,
                embedder,
                instance: consumer.clone(),
            },
            vectors: backends.vectors,
            events: shared.events,
            metrics,
        };
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
    /// finish) within the shutdown plan, and gives open HTTP connections what is left of it.
    /// Fails when supervision escalated.
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
        let report = state.pipeline.supervision.clone();
        let deadline = state.settings.pipeline.shutdown_deadline;
        let app = router(state);
        // The server keeps answering while the pipeline drains (readiness says 503 meanwhile),
        // and stops taking connections once the pipeline has stopped.
        let http_stop = Shutdown::new();
        let signal = http_stop.clone();
        let mut server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.triggered().await })
                .await
        });
        let finished_early = tokio::select! {
            served = &mut server => Some(served),
            _ = shutdown.triggered() => None,
        };
        shutdown.trigger();
        let plan = ShutdownPlan::start(deadline);
        let stopped = supervisor
            .call(
                |reply| SupervisorMsg::Shutdown(plan, reply),
                Some(plan.actors()),
            )
            .await;
        if !matches!(stopped, Ok(ractor::rpc::CallResult::Success(()))) {
            tracing::warn!("the pipeline did not stop within the shutdown plan; stopping it now");
            supervisor.kill();
        }
        let _ = tokio::time::timeout(plan.http(), supervisor_done).await;
        http_stop.trigger();
        let served = match finished_early {
            Some(served) => served,
            None => match tokio::time::timeout(plan.http(), &mut server).await {
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
fn spawn_lease_renewal(lease: Lease, shutdown: Shutdown, report: Arc<SupervisionReport>) {
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

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://embedq:s3cret@db:5432/embedq"),
            "postgres://embedq:***@db:5432/embedq"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
