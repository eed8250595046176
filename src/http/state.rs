//! What every handler can reach.

use crate::actors::{IntakeHealth, SupervisionReport};
use crate::config::Settings;
use crate::queue::Keys;
use crate::store::Store;
use redis::aio::ConnectionManager;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub settings: Arc<Settings>,
    pub job_intake: Arc<IntakeHealth>,
    pub supervision: Arc<SupervisionReport>,
}
