//! `GET /v1/schedules`: the `[[schedules]]` of the configuration, each with its next tick and
//! its latest firings (and the job each made), and whether this daemon is the one firing them.

use crate::actors::SchedulerFigures;
use crate::config::{MissedTicks, ScheduledJob};
use crate::domain::now_millis;
use crate::http::extract::ApiQuery;
use crate::http::responses::{BadRequest, Internal, Unauthorized, Unavailable};
use crate::http::{ApiError, AppState};
use crate::store::ScheduleFiring;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SchedulesQuery {
    /// Firings shown per schedule, newest first, 0 to 100 (default 10).
    #[param(minimum = 0, maximum = 100)]
    firings: Option<usize>,
}

/// A schedule as configured, with its next tick and latest firings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    name: String,
    /// The cron expression (UTC; seconds first, or a five-field crontab line).
    cron: String,
    missed: MissedTicks,
    job: ScheduledJob,
    /// The next tick, in milliseconds since the Unix epoch (null: it never fires again).
    next_tick_ms: Option<i64>,
    /// The latest firings, newest first.
    firings: Vec<ScheduleFiring>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    schedules: Vec<ScheduleView>,
    /// This daemon's scheduler: whether it holds the lease (one daemon fires for all).
    scheduler: SchedulerFigures,
}

/// The configured schedules, their next ticks and latest firings.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    summary = "Schedules and their firings",
    params(SchedulesQuery),
    responses(
        (status = 200, description = "The schedules.", body = ScheduleList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<SchedulesQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let shown = query.firings.unwrap_or(10);
    if shown > 100 {
        return Err(ApiError::bad_request("firings must be between 0 and 100"));
    }
    let now = now_millis();
    let mut schedules = Vec::with_capacity(app.settings.schedules.len());
    for schedule in &app.settings.schedules {
        let firings = if shown == 0 {
            Vec::new()
        } else {
            app.store.recent_firings(&schedule.name, shown).await?
        };
        schedules.push(ScheduleView {
            name: schedule.name.clone(),
            cron: schedule.cron.as_str().to_owned(),
            missed: schedule.missed,
            job: schedule.job.clone(),
            next_tick_ms: schedule.cron.next_after(now),
            firings,
        });
    }
    Ok(Json(ScheduleList {
        schedules,
        scheduler: app.pipeline.scheduler.snapshot(),
    }))
}
