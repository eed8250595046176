//! Retry scheduler: moves retries whose backoff has passed from the Redis retry set back to the
//! tasks stream, atomically (see [`crate::queue::RetrySet`]). Any daemon may move any retry.

use crate::queue::RetrySet;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::Duration;
use tokio::task::JoinHandle;

pub enum RetrySchedulerMsg {
    Tick,
}

pub struct RetrySchedulerState {
    retries: RetrySet,
    timer: Option<JoinHandle<()>>,
}

pub struct RetryScheduler;

const PERIOD: Duration = Duration::from_millis(200);
const BATCH: usize = 500;

impl Actor for RetryScheduler {
    type Msg = RetrySchedulerMsg;
    type State = RetrySchedulerState;
    type Arguments = RetrySet;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        retries: RetrySet,
    ) -> Result<Self::State, ActorProcessingErr> {
        let timer = myself.send_interval(PERIOD, || RetrySchedulerMsg::Tick);
        Ok(RetrySchedulerState {
            retries,
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
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
        match state.retries.move_due(BATCH).await {
            Ok(0) => {}
            Ok(moved) => tracing::debug!(moved, "retries due moved to the tasks stream"),
            Err(e) => tracing::warn!(error = %e, "could not move due retries"),
        }
        Ok(())
    }
}
