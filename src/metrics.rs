//! Prometheus metrics at `/metrics`, through the `metrics` facade and its Prometheus exporter.
//!
//! Counters and histograms are recorded where things happen (the status writer counts item
//! outcomes and retries, workers count API requests, latency and tokens, the supervisor counts
//! restarts); gauges of queue depths and the rate budget are read from Redis when scraped.

use crate::queue::Keys;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use redis::aio::ConnectionManager;
use std::fmt::Write;
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder's handle (installed on first use).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn install() -> Self {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full("embedq_api_request_duration_seconds".into()),
                        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                    )
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full("embedq_job_duration_seconds".into()),
                            &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0],
                        )
                    })
                    .and_then(|b| {
                        // The buckets OpenTelemetry's GenAI conventions advise for token usage.
                        b.set_buckets_for_metric(
                            Matcher::Full("gen_ai_client_token_usage".into()),
                            &[
                                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
                                262144.0, 1048576.0,
                            ],
                        )
                    })
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                match builder.install_recorder() {
                    Ok(handle) => handle,
                    // Another recorder is installed (only in unusual embeddings of the crate):
                    // render from a recorder of our own that nothing writes to.
                    Err(_) => PrometheusBuilder::new().build_recorder().handle(),
                }
            })
            .clone();
        Self { handle }
    }

    /// The exposition text, with the gauges read from Redis now.
    pub async fn render(
        &self,
        redis: &ConnectionManager,
        keys: &Keys,
        rate: &crate::limiter::LimiterFigures,
    ) -> String {
        let mut out = self.handle.render();
        let mut conn = redis.clone();
        let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let streams = keys.tasks_streams();
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(keys.jobs_stream());
        for stream in &streams {
            pipe.cmd("XLEN").arg(stream);
        }
        pipe.cmd("ZCARD").arg(keys.retries());
        pipe.cmd("XLEN").arg(keys.dead_letters());
        let depths: Result<(u64, u64, u64, u64, u64, u64), redis::RedisError> =
            pipe.query_async(&mut conn).await;
        if let Ok((jobs, interactive, normal, bulk, retry, dead)) = depths {
            gauge(
                "embedq_queue_depth",
                "Entries waiting or in flight, by queue (tasks: every priority).",
                vec![
                    ("{queue=\"jobs\"}".into(), jobs as f64),
                    (
                        "{queue=\"tasks\"}".into(),
                        (interactive + normal + bulk) as f64,
                    ),
                    ("{queue=\"retry\"}".into(), retry as f64),
                    ("{queue=\"dead_letters\"}".into(), dead as f64),
                ],
            );
            gauge(
                "embedq_tasks_queued",
                "Task entries waiting or in flight, by priority.",
                crate::domain::Priority::ALL
                    .iter()
                    .zip([interactive, normal, bulk])
                    .map(|(p, n)| (format!("{{priority=\"{p}\"}}"), n as f64))
                    .collect(),
            );
        }
        let mut pending_total = Some(0i64);
        for stream in &streams {
            let pending: Result<redis::Value, redis::RedisError> = redis::cmd("XPENDING")
                .arg(stream)
                .arg(crate::queue::PIPELINE_GROUP)
                .query_async(&mut conn)
                .await;
            pending_total = match (pending_total, pending) {
                (Some(sum), Ok(redis::Value::Array(parts))) => match parts.first() {
                    Some(redis::Value::Int(n)) => Some(sum + n),
                    _ => None,
                },
                // A stream without its group yet holds nothing pending.
                (Some(sum), Err(e)) if e.code() == Some("NOGROUP") => Some(sum),
                _ => None,
            };
        }
        if let Some(n) = pending_total {
            gauge(
                "embedq_tasks_pending",
                "Task entries delivered and not yet acknowledged (every priority).",
                vec![(String::new(), n as f64)],
            );
        }
        let budget: Result<(Option<f64>, Option<f64>), redis::RedisError> = redis::cmd("HMGET")
            .arg(keys.rate_budget())
            .arg("r")
            .arg("t")
            .query_async(&mut conn)
            .await;
        if let Ok((requests, tokens)) = budget {
            gauge(
                "embedq_rate_limit_budget",
                "What is left in the shared rate budget's buckets.",
                vec![
                    ("{kind=\"requests\"}".into(), requests.unwrap_or(0.0)),
                    ("{kind=\"tokens\"}".into(), tokens.unwrap_or(0.0)),
                ],
            );
        }
        gauge(
            "embedq_concurrency_limit",
            "This daemon's adaptive limit of requests in flight.",
            vec![(String::new(), rate.concurrency_limit)],
        );
        gauge(
            "embedq_requests_in_flight",
            "Provider requests in flight in this daemon.",
            vec![(String::new(), rate.in_flight as f64)],
        );
        out
    }
}
