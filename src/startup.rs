//! Wiring: builds the store, the Redis connections, the supervised pipeline and the HTTP
//! server from [`Settings`], and runs them until the shared [`Shutdown`] fires.
//!
//! The tests use [`Application::build`] exactly as `embedq serve` does, on a random port.

use crate::actors::{
    IntakeArgs, IntakeHealth, PipelineContext, PlannerArgs, SupervisionReport, Supervisor,
    SupervisorArgs, SupervisorMsg,
};
use crate::config::Settings;
use crate::http::{AppState, router};
use crate::queue::{
    ConsumerLease, Keys, PLANNER_GROUP, PlanScripts, QueueError, RedisConnections, StreamAcker,
    consumer_identity,
};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
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
        if !settings.queue.consumer_name.is_empty() {
            let lease = ConsumerLease::acquire(
                shared.clone(),
                &keys,
                &consumer,
                settings.visibility_timeout(),
            )
            .await?;
            spawn_lease_renewal(lease, shutdown.clone());
        }

        let block = Duration::from_millis(settings.queue.block_ms);
        let job_intake_health = Arc::new(IntakeHealth::default());
        let pipeline = PipelineContext {
            instance: consumer.clone(),
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
                downstream: format!("{consumer}/planner"),
                health: job_intake_health.clone(),
            },
            planner: PlannerArgs {
                store: store.clone(),
                scripts: PlanScripts::new(shared.clone(), keys.clone()),
                settings: settings.planner.clone(),
                model: settings.embedding.model.clone(),
                visibility_timeout: settings.visibility_timeout(),
            },
            job_intake_health: job_intake_health.clone(),
        };
        let report = Arc::new(SupervisionReport::default());
        let (supervisor, supervisor_done) = Actor::spawn(
            Some(format!("{consumer}/supervisor")),
            Supervisor,
            SupervisorArgs {
                pipeline,
                policy: settings.supervision.clone(),
                report: report.clone(),
                shutdown: shutdown.clone(),
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
            supervision: report,
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
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { signal.triggered().await })
            .await;
        shutdown.trigger();
        supervisor.stop(Some("shutdown".into()));
        let _ = tokio::time::timeout(Duration::from_secs(15), supervisor_done).await;
        store.close().await;
        served.map_err(StartupError::Serve)?;
        match report.escalated() {
            Some(reason) => Err(StartupError::Escalated(reason)),
            None => Ok(()),
        }
    }
}

/// Keeps a configured consumer name leased; losing it stops the daemon rather than letting two
/// processes consume under one name.
fn spawn_lease_renewal(lease: ConsumerLease, shutdown: Shutdown) {
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
                    shutdown.trigger();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the consumer-name lease"),
            }
        }
    });
}
