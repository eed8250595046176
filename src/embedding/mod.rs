//! The steps of embedding, as plain functions and structs that the embedding pool and its
//! workers drive, each unit-tested without actors:
//!
//! 1. [`classify`] a task's items once they are loaded: skipped (up to date, or gone), failed
//!    now (attempts exhausted, over the token limit), or an input to embed;
//! 2. [`PendingInputs`] packs waiting inputs — of any task — into requests within the
//!    provider's limits, counting tokens (a refused request comes back bisected, a suspect
//!    input alone);
//! 3. one request (the worker: a permit, the call, the vector write) ends in a
//!    [`RequestOutcome`], which [`actions_for`] turns into what happens to each input;
//! 4. [`TaskProgress`] gathers each item's result and, once none is open, settles the task
//!    ([`TaskProgress::settle`]): outcomes to commit and the retry tasks, backed off by the
//!    [`crate::retry::RetryPolicy`].

mod classify;
mod progress;
mod request;

pub use classify::{PreparedInput, classify};
pub use progress::{InputResult, TaskProgress, settle_unloaded};
pub use request::{
    Answer, ComputedVector, EmbedRequest, Group, InputAction, InputRef, NotStored, PendingInputs,
    RequestInput, RequestOutcome, Share, actions_for, shares, to_vectors,
};
