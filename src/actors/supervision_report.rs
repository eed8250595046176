//! What the parents know about their children, shared with the HTTP surface: each actor's
//! state and restart count, and whether supervision gave up. (Whether intake is paused, and
//! why, is the pipeline gate's to say.)

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ActorReport {
    pub name: String,
    pub state: &'static str,
    pub restarts: u64,
    pub last_failure: Option<String>,
}

#[derive(Debug, Default)]
pub struct SupervisionReport {
    actors: Mutex<BTreeMap<String, ActorReport>>,
    escalated: Mutex<Option<String>>,
}

impl SupervisionReport {
    pub fn running(&self, role: &str, name: &str) {
        let mut actors = self.actors.lock().expect("report lock");
        let entry = actors
            .entry(role.to_owned())
            .or_insert_with(|| ActorReport {
                name: name.to_owned(),
                state: "running",
                restarts: 0,
                last_failure: None,
            });
        entry.name = name.to_owned();
        entry.state = "running";
    }

    pub fn failed(&self, role: &str, reason: String) {
        if let Some(entry) = self.actors.lock().expect("report lock").get_mut(role) {
            entry.state = "restarting";
            entry.restarts += 1;
            entry.last_failure = Some(reason);
        }
    }

    pub fn stopped(&self, role: &str) {
        if let Some(entry) = self.actors.lock().expect("report lock").get_mut(role) {
            entry.state = "stopped";
        }
    }

    pub fn escalate(&self, reason: String) {
        *self.escalated.lock().expect("report lock") = Some(reason);
    }

    /// Why supervision gave up, if it did.
    pub fn escalated(&self) -> Option<String> {
        self.escalated.lock().expect("report lock").clone()
    }

    pub fn actors(&self) -> Vec<(String, ActorReport)> {
        self.actors
            .lock()
            .expect("report lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
