//! Scheduler: fires the `[[schedules]]`. Every daemon runs one; a fenced lease in Redis makes
//! one of them active at a time. Each poll the active scheduler renews its lease and fires
//! every tick that came due since the schedule's last tick: one job per tick cluster-wide.
//!
//! - A firing commits in SQL with the lease's fencing token (`Store::fire_schedule`): a
//!   scheduler paused past its lease, woken while another holds it with a higher token,
//!   cannot fire (SQL refuses its token; it gives the lease up and says so).
//! - A tick is fired at most once (the firing's key is the schedule and the tick; the job's
//!   idempotency key names them too).
//! - A tick later than `scheduler.misfire_grace` was missed (every daemon was down): the
//!   latest such tick fires once, or none does (`missed = "skip"`). Ticks due while the lease
//!   passed from one daemon to another are within the grace and fire one by one.
//! - A new schedule starts from now: ticks before it was first seen never fire.

use crate::config::{MissedTicks, ScheduleSettings, ScheduledJob, SchedulerSettings};
use crate::domain::{Cron, JobId, JobKind, Priority, now_millis};
use crate::queue::{DeadLetters, FencedLease, Keys};
use crate::store::{FireOutcome, Firing, NewJob, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use redis::aio::ConnectionManager;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::JoinHandle;

/// Most ticks of one schedule fired in one poll (the rest come next poll).
const MAX_TICKS_PER_POLL: usize = 100;

/// What this daemon's scheduler did, for `GET /v1/schedules`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SchedulerFigures {
    /// Whether this daemon holds the scheduler's lease.
    pub active: bool,
    /// Its fencing token while it does.
    pub fence: Option<u64>,
    /// Ticks this daemon fired.
    pub fired: u64,
    /// Times it found its lease gone in SQL (a higher token was shown) and stood down.
    pub stood_down: u64,
    pub last_error: Option<String>,
}

/// The figures, shared with the HTTP surface.
#[derive(Debug, Default, Clone)]
pub struct SchedulerReport(Arc<Mutex<SchedulerFigures>>);

impl SchedulerReport {
    pub fn snapshot(&self) -> SchedulerFigures {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut SchedulerFigures)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

pub enum SchedulerMsg {
    /// One poll (self-sent on a timer).
    Poll,
}

#[derive(Clone)]
pub struct SchedulerArgs {
    pub store: Store,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub settings: SchedulerSettings,
    pub schedules: Vec<ScheduleSettings>,
    /// The model a scheduled embed job is recorded with (`embedding.model`).
    pub model: String,
    /// This daemon's consumer name, recorded with each firing.
    pub fired_by: String,
    pub report: SchedulerReport,
}

pub struct SchedulerState {
    args: SchedulerArgs,
    lease: FencedLease,
    /// The fencing token while this daemon holds the lease.
    fence: Option<u64>,
    /// A token SQL showed above ours: the next one taken must exceed it.
    floor: u64,
    /// Each schedule's last tick, as SQL had it when the lease was taken, moved on since.
    last_ticks: HashMap<String, i64>,
    timer: Option<JoinHandle<()>>,
}

/// What one schedule owes at a moment.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Ticks to fire, oldest first.
    pub fire: Vec<i64>,
    /// A tick to move the schedule to without firing it (and those before it).
    pub skip_to: Option<i64>,
}

/// The one rule of which ticks fire: since `last_tick`, every tick within `grace_ms` of
/// `now` fires; of the ticks before that (missed), the latest fires once or none does. A
/// schedule never fired starts from now.
pub(crate) fn due(
    cron: &Cron,
    last_tick: Option<i64>,
    now: i64,
    grace_ms: i64,
    missed: MissedTicks,
) -> Due {
    let Some(last) = last_tick else {
        return Due {
            fire: Vec::new(),
            skip_to: Some(cron.last_at_or_before(now).unwrap_or(now)),
        };
    };
    let on_time_from = now - grace_ms;
    let mut due = Due::default();
    if let Some(latest_missed) = cron
        .last_at_or_before(on_time_from - 1)
        .filter(|t| *t > last)
    {
        match missed {
            MissedTicks::CatchUpOnce => due.fire.push(latest_missed),
            MissedTicks::Skip => due.skip_to = Some(latest_missed),
        }
    }
    let (on_time, _) = cron.ticks_between(last.max(on_time_from - 1), now, MAX_TICKS_PER_POLL);
    due.fire.extend(on_time);
    due
}

/// Why a poll stopped early.
enum Stop {
    /// SQL knows a higher token: this daemon's lease is gone.
    StoodDown {
        highest: i64,
    },
    Failed(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl SchedulerState {
    /// The job a schedule's tick makes, if its action is a job.
    fn job_of(&self, schedule: &ScheduleSettings, tick: i64) -> Option<NewJob> {
        let (kind, scope, priority, tenant) = match &schedule.job {
            ScheduledJob::Embed {
                scope,
                priority,
                tenant,
            } => (JobKind::Embed, scope.clone(), *priority, tenant.clone()),
            ScheduledJob::Reconcile => {
                (JobKind::Reconcile, crate::domain::JobScope::All, None, None)
            }
            ScheduledJob::PurgeDeadLetters { .. } => return None,
        };
        Some(NewJob {
            id: JobId::new(),
            kind,
            scope,
            model: self.args.model.clone(),
            priority: priority.unwrap_or(Priority::Normal),
            tenant,
            idempotency_key: Some(format!("schedule:{}:{tick}", schedule.name)),
        })
    }

    /// Fires one tick; returns whether it was fired now (false: fired before).
    async fn fire(
        &mut self,
        schedule: &ScheduleSettings,
        tick: i64,
        fence: u64,
    ) -> Result<bool, Stop> {
        let job = self.job_of(schedule, tick);
        let outcome = self
            .args
            .store
            .fire_schedule(Firing {
                schedule: &schedule.name,
                tick_ms: tick,
                fence,
                fired_by: &self.args.fired_by,
                job,
            })
            .await?;
        let fired = match outcome {
            FireOutcome::Stale { highest } => return Err(Stop::StoodDown { highest }),
            FireOutcome::AlreadyFired => false,
            FireOutcome::Fired(Some(job)) => {
                tracing::info!(schedule = %schedule.name, tick, job = %job.id, "schedule fired");
                // Committed: should the entry not be written, the reconciler enqueues the job.
                if let Err(e) = crate::submit::enqueue_recorded(
                    &self.args.store,
                    &self.args.redis,
                    &self.args.keys,
                    &job,
                )
                .await
                {
                    tracing::warn!(schedule = %schedule.name, job = %job.id, error = %e,
                        "the scheduled job's entry was not written; the reconciler will enqueue it");
                }
                true
            }
            FireOutcome::Fired(None) => {
                if let ScheduledJob::PurgeDeadLetters { older_than_days } = schedule.job {
                    let cutoff = tick - i64::from(older_than_days) * 86_400_000;
                    let letters = DeadLetters::new(self.args.redis.clone(), &self.args.keys);
                    let result = match letters.purge_before(cutoff).await {
                        Ok(removed) => serde_json::json!({ "dead_letters_removed": removed }),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    };
                    tracing::info!(schedule = %schedule.name, tick, %result, "schedule fired");
                    self.args
                        .store
                        .set_firing_result(&schedule.name, tick, &result)
                        .await?;
                }
                true
            }
        };
        self.last_ticks.insert(schedule.name.clone(), tick);
        Ok(fired)
    }

    /// Fires what every schedule owes now.
    async fn fire_due(&mut self, fence: u64) -> Result<u64, Stop> {
        let now = now_millis();
        let grace = self.args.settings.misfire_grace.as_millis() as i64;
        let mut fired = 0;
        for schedule in self.args.schedules.clone() {
            let last = self.last_ticks.get(&schedule.name).copied();
            let due = due(&schedule.cron, last, now, grace, schedule.missed);
            if let Some(tick) = due.skip_to {
                match self
                    .args
                    .store
                    .skip_schedule_to(&schedule.name, tick, fence)
                    .await?
                {
                    FireOutcome::Stale { highest } => return Err(Stop::StoodDown { highest }),
                    _ => {
                        if last.is_some() {
                            tracing::info!(schedule = %schedule.name, until = tick, "missed ticks skipped");
                        }
                        self.last_ticks.insert(schedule.name.clone(), tick);
                    }
                }
            }
            for tick in due.fire {
                if self.fire(&schedule, tick, fence).await? {
                    fired += 1;
                }
            }
        }
        Ok(fired)
    }

    /// Renews the lease; on taking it, shows the token to SQL and reads the last ticks.
    async fn hold_lease(&mut self) -> Result<Option<u64>, Stop> {
        let fence = match self.lease.hold(self.floor).await {
            Ok(fence) => fence,
            Err(e) => {
                tracing::debug!(error = %e, "scheduler lease unavailable");
                None
            }
        };
        if fence.is_some() && fence == self.fence {
            return Ok(fence);
        }
        if self.fence.is_some() {
            tracing::warn!(
                fence = self.fence,
                "scheduler lease lost (another daemon holds it, or Redis is unreachable); this daemon fires nothing until it holds it again"
            );
        }
        self.fence = None;
        let Some(fence) = fence else {
            return Ok(None);
        };
        if let Err(highest) = self.args.store.claim_scheduler_fence(fence).await? {
            return Err(Stop::StoodDown { highest });
        }
        self.last_ticks = self.args.store.schedule_last_ticks().await?;
        self.fence = Some(fence);
        tracing::info!(
            fence,
            "scheduler lease taken; this daemon fires the schedules"
        );
        Ok(Some(fence))
    }

    async fn poll(&mut self) -> Result<u64, Stop> {
        match self.hold_lease().await? {
            Some(fence) => self.fire_due(fence).await,
            None => Ok(0),
        }
    }
}

pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let lease = FencedLease::new(
            args.redis.clone(),
            args.keys.scheduler_lease(),
            args.keys.scheduler_fence(),
            args.settings.lease,
        );
        // Without schedules there is nothing to fire and no lease to take.
        let timer = (!args.schedules.is_empty())
            .then(|| myself.send_interval(args.settings.poll, || SchedulerMsg::Poll));
        Ok(SchedulerState {
            args,
            lease,
            fence: None,
            floor: 0,
            last_ticks: HashMap::new(),
            timer,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        // Another daemon takes over at once rather than after the lease's time-to-live.
        if state.fence.take().is_some() {
            if let Err(e) = state.lease.release().await {
                tracing::debug!(error = %e, "scheduler lease not released");
            }
            state.args.report.update(|r| {
                r.active = false;
                r.fence = None;
            });
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(_myself);
        let polled = state.poll().await;
        let fence = state.fence;
        match polled {
            Ok(fired) => state.args.report.update(|r| {
                r.fired += fired;
                r.last_error = None;
            }),
            Err(Stop::StoodDown { highest }) => {
                tracing::warn!(
                    fence,
                    highest,
                    "a scheduler with a higher fencing token fired meanwhile (this daemon was paused or cut off past its lease); standing down"
                );
                state.floor = state.floor.max(u64::try_from(highest).unwrap_or(0));
                state.fence = None;
                if let Err(e) = state.lease.release().await {
                    tracing::debug!(error = %e, "scheduler lease not released");
                }
                state.args.report.update(|r| r.stood_down += 1);
            }
            Err(Stop::Failed(e)) => {
                tracing::warn!(error = %e, "scheduling failed; trying again next poll");
                state.args.report.update(|r| r.last_error = Some(e));
            }
        }
        let fence = state.fence;
        state.args.report.update(|r| {
            r.active = fence.is_some();
            r.fence = fence;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_342_400_000; // a whole minute
    const GRACE: i64 = 60_000;

    fn every_second() -> Cron {
        Cron::parse("* * * * * *").unwrap()
    }

    #[test]
    fn a_new_schedule_starts_from_now() {
        let due = due(
            &every_second(),
            None,
            T0 + 2_500,
            GRACE,
            MissedTicks::CatchUpOnce,
        );
        assert_eq!(
            due,
            Due {
                fire: vec![],
                skip_to: Some(T0 + 2_000)
            }
        );
    }

    #[test]
    fn every_tick_within_the_grace_fires_once_in_order() {
        let due = due(
            &every_second(),
            Some(T0),
            T0 + 3_200,
            GRACE,
            MissedTicks::Skip,
        );
        assert_eq!(due.fire, vec![T0 + 1_000, T0 + 2_000, T0 + 3_000]);
        assert_eq!(due.skip_to, None);
        let nothing = super::due(
            &every_second(),
            Some(T0 + 3_000),
            T0 + 3_900,
            GRACE,
            MissedTicks::Skip,
        );
        assert_eq!(nothing, Due::default());
    }

    #[test]
    fn missed_ticks_fire_once_or_are_skipped() {
        let hourly = Cron::parse("0 0 * * * *").unwrap();
        let hour = 3_600_000;
        // Down from T0 for five hours and a half: four ticks missed, none within the grace.
        let now = T0 + 5 * hour + hour / 2;
        let caught = due(&hourly, Some(T0), now, GRACE, MissedTicks::CatchUpOnce);
        assert_eq!(
            caught,
            Due {
                fire: vec![T0 + 5 * hour],
                skip_to: None
            }
        );
        let skipped = due(&hourly, Some(T0), now, GRACE, MissedTicks::Skip);
        assert_eq!(
            skipped,
            Due {
                fire: vec![],
                skip_to: Some(T0 + 5 * hour)
            }
        );
        // A tick within the grace still fires, after the missed one.
        let now = T0 + 5 * hour + 30_000;
        let both = due(&hourly, Some(T0), now, GRACE, MissedTicks::CatchUpOnce);
        assert_eq!(both.fire, vec![T0 + 4 * hour, T0 + 5 * hour]);
    }
}
