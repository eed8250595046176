//! Live events for operators (`GET /v1/events`, server-sent events): job progress with rate and
//! ETA, pause and resume, rate-limit state, and actor restarts.
//!
//! Progress is sampled from SQL once a second by [`spawn_progress_reporter`], so every daemon's
//! stream shows the progress of every job, whichever daemon does the work; the pipeline gate's
//! changes are published by [`spawn_gate_reporter`].

use crate::gate::{GateState, PipelineGate};
use crate::limiter::LimiterStatus;
use crate::shutdown::Shutdown;
use crate::store::{JobRecord, Store};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// One event: its SSE name and JSON data.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

/// A broadcast of events; slow listeners miss old events rather than slowing anyone.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(1024);
        Self { sender }
    }

    pub fn publish(&self, kind: &'static str, data: Value) {
        let _ = self.sender.send(Event { kind, data });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// A job's progress as events and the dashboard show it.
pub fn progress(job: &JobRecord, items_per_s: Option<f64>) -> Value {
    let done = job.done();
    let remaining = (job.total - done).max(0);
    let eta_s = match items_per_s {
        Some(rate) if rate > 0.0 && job.planned_at.is_some() => Some(remaining as f64 / rate),
        _ => None,
    };
    json!({
        "job_id": job.id,
        "state": job.state,
        "total": job.total,
        "completed": job.completed,
        "failed": job.failed,
        "skipped": job.skipped,
        "done": done,
        "planned": job.planned_at.is_some(),
        "items_per_s": items_per_s,
        "eta_s": eta_s,
    })
}

/// Samples active jobs every second and publishes their progress (and the final state of jobs
/// that just finished), and the rate limiter's state.
pub fn spawn_progress_reporter(
    store: Store,
    bus: EventBus,
    rate: LimiterStatus,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let mut last: HashMap<String, (i64, Instant, Option<f64>)> = HashMap::new();
        let mut since = crate::domain::now_millis();
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if bus.sender.receiver_count() == 0 {
                last.clear();
                since = crate::domain::now_millis();
                continue;
            }
            let Ok(active) = store.active_jobs(50).await else {
                continue;
            };
            let now = Instant::now();
            let mut seen = HashMap::new();
            for job in &active {
                let key = job.id.to_string();
                let rate = match last.get(&key) {
                    Some((done, at, previous)) => {
                        let dt = now.duration_since(*at).as_secs_f64();
                        let current = (job.done() - done) as f64 / dt.max(1e-3);
                        // Smooth over a few seconds so the ETA does not jump.
                        Some(previous.map_or(current, |p| 0.7 * p + 0.3 * current))
                    }
                    None => None,
                };
                bus.publish("job_progress", progress(job, rate));
                seen.insert(key, (job.done(), now, rate));
            }
            // Jobs that ended since the last sample, even ones too quick to be sampled active.
            if let Ok(finished) = store.jobs_finished_since(since, 50).await {
                for job in &finished {
                    bus.publish("job_progress", progress(job, None));
                }
            }
            since = crate::domain::now_millis() - 1;
            last = seen;
            bus.publish("rate_limit", json!(rate.snapshot()));
        }
    });
}

/// Publishes each change of the pipeline gate (`paused` with its reason, `resumed`) and logs it.
pub fn spawn_gate_reporter(gate: PipelineGate, bus: EventBus, shutdown: Shutdown) {
    let mut changes = gate.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let state = changes.borrow_and_update().clone();
            match &state {
                GateState::Open => {
                    tracing::info!("intake resumed");
                    bus.publish("resumed", json!({}));
                }
                GateState::PausedByOperator | GateState::ProviderUnusable { .. } => {
                    let reason = state.reason();
                    tracing::warn!(reason = reason.as_deref().unwrap_or(""), "intake paused");
                    bus.publish("paused", json!({ "reason": reason }));
                }
                GateState::Draining => return,
            }
        }
    });
}
