//! Typed addresses: how one actor reaches another that its parent may restart. The parent
//! puts the new [`ActorRef`] in the address on every (re)start and takes it out when the actor
//! dies; holders send through the address and learn at once when nobody is there. No actor is
//! ever looked up by a name built from strings.

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Why a message did not reach its actor, or no answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("the {0} is restarting")]
    Restarting(&'static str),
    #[error("the {0} stopped before answering")]
    Stopped(&'static str),
    #[error("the {0} did not answer in time")]
    TimedOut(&'static str),
}

/// The current actor of one role, or nobody while it restarts.
pub struct Address<M> {
    role: &'static str,
    slot: Arc<RwLock<Option<ActorRef<M>>>>,
}

impl<M> Clone for Address<M> {
    fn clone(&self) -> Self {
        Self {
            role: self.role,
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<M: Message> Address<M> {
    /// An address with nobody at it yet; `role` names the actor in errors.
    pub fn new(role: &'static str) -> Self {
        Self {
            role,
            slot: Arc::new(RwLock::new(None)),
        }
    }

    /// The parent (re)started the actor.
    pub fn set(&self, actor: ActorRef<M>) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = Some(actor);
    }

    /// The actor died; until it is back, sends fail with [`Unreachable::Restarting`].
    pub fn clear(&self) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn get(&self) -> Option<ActorRef<M>> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn cast(&self, message: M) -> Result<(), Unreachable> {
        let actor = self.get().ok_or(Unreachable::Restarting(self.role))?;
        actor
            .cast(message)
            .map_err(|_| Unreachable::Stopped(self.role))
    }

    /// Sends a request and waits for its answer (at most `timeout`, when given).
    pub async fn call<R, F>(&self, build: F, timeout: Option<Duration>) -> Result<R, Unreachable>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let actor = self.get().ok_or(Unreachable::Restarting(self.role))?;
        match actor.call(build, timeout).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout) => Err(Unreachable::TimedOut(self.role)),
            Ok(CallResult::SenderError) | Err(_) => Err(Unreachable::Stopped(self.role)),
        }
    }
}
