//! The pipeline gate: the one place that says whether work may flow, and if not, why.
//!
//! Intakes read only while it is open; the embedding pool sends requests to the provider only
//! while it is open (or paused by an operator, which stops intake but lets work in flight
//! finish); readiness, the dashboard and the event stream report its state. It is a `watch`
//! channel, so every holder sees a change at once and can wait for the next one.

use serde::Serialize;
use tokio::sync::watch;

/// Why work does or does not flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GateState {
    Open,
    /// An operator paused intake; what was taken finishes.
    PausedByOperator,
    /// The provider cannot be used until an operator acts (bad key, no quota, a setting that
    /// does not match what it answers); nothing is sent to it.
    ProviderUnusable {
        reason: String,
    },
    /// The daemon is shutting down.
    Draining,
}

impl GateState {
    /// A short reason for people, `None` when open.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Open => None,
            Self::PausedByOperator => Some("paused by an operator".into()),
            Self::ProviderUnusable { reason } => Some(format!("provider unusable: {reason}")),
            Self::Draining => Some("shutting down".into()),
        }
    }
}

/// The shared gate; cheap to clone.
#[derive(Clone, Debug)]
pub struct PipelineGate {
    sender: watch::Sender<GateState>,
}

impl Default for PipelineGate {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineGate {
    pub fn new() -> Self {
        Self {
            sender: watch::Sender::new(GateState::Open),
        }
    }

    pub fn state(&self) -> GateState {
        self.sender.borrow().clone()
    }

    /// Intake may read new work.
    pub fn is_open(&self) -> bool {
        *self.sender.borrow() == GateState::Open
    }

    /// Requests may be sent to the provider: open, or paused by an operator (work already
    /// taken finishes).
    pub fn allows_requests(&self) -> bool {
        matches!(
            *self.sender.borrow(),
            GateState::Open | GateState::PausedByOperator
        )
    }

    /// The provider's unusable reason, if that is why the gate is closed.
    pub fn provider_unusable(&self) -> Option<String> {
        match &*self.sender.borrow() {
            GateState::ProviderUnusable { reason } => Some(reason.clone()),
            _ => None,
        }
    }

    /// An operator pauses intake. Returns whether the state changed.
    pub fn pause(&self) -> bool {
        self.sender.send_if_modified(|s| {
            if *s == GateState::Open {
                *s = GateState::PausedByOperator;
                true
            } else {
                false
            }
        })
    }

    /// An operator resumes: clears their pause and a provider pause (the operator fixed the key
    /// or the quota). Does nothing while draining. Returns whether the state changed.
    pub fn resume(&self) -> bool {
        self.sender.send_if_modified(|s| match s {
            GateState::PausedByOperator | GateState::ProviderUnusable { .. } => {
                *s = GateState::Open;
                true
            }
            GateState::Open | GateState::Draining => false,
        })
    }

    /// The provider became unusable. The first reason is kept (it explains the pause); returns
    /// whether this call closed the gate.
    pub fn close_for_provider(&self, reason: &str) -> bool {
        self.sender.send_if_modified(|s| match s {
            GateState::Open | GateState::PausedByOperator => {
                *s = GateState::ProviderUnusable {
                    reason: reason.to_owned(),
                };
                true
            }
            GateState::ProviderUnusable { .. } | GateState::Draining => false,
        })
    }

    /// Shutting down: nothing new is taken, and the state never opens again.
    pub fn drain(&self) {
        self.sender.send_replace(GateState::Draining);
    }

    pub fn subscribe(&self) -> watch::Receiver<GateState> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let gate = PipelineGate::new();
        assert!(gate.is_open() && gate.allows_requests());
        assert!(gate.pause());
        assert!(!gate.is_open() && gate.allows_requests());
        assert!(!gate.pause(), "already paused");
        assert!(gate.close_for_provider("HTTP 401: bad key"));
        assert!(
            !gate.close_for_provider("HTTP 401: again"),
            "the first reason stays"
        );
        assert_eq!(
            gate.provider_unusable().as_deref(),
            Some("HTTP 401: bad key")
        );
        assert!(!gate.allows_requests());
        assert_eq!(
            gate.state().reason().as_deref(),
            Some("provider unusable: HTTP 401: bad key")
        );
        assert!(gate.resume());
        assert!(gate.is_open());
        gate.drain();
        assert!(!gate.resume(), "draining never reopens");
        assert!(!gate.close_for_provider("late"));
        assert_eq!(gate.state(), GateState::Draining);
    }

    #[tokio::test]
    async fn holders_see_changes() {
        let gate = PipelineGate::new();
        let mut seen = gate.subscribe();
        gate.pause();
        seen.changed().await.unwrap();
        assert_eq!(*seen.borrow(), GateState::PausedByOperator);
    }
}
