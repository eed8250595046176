//! Back-pressure, as plain structs on an explicit clock: what a provider's answer says about
//! load ([`CallOutcome::of`]), the adaptive limit of requests in flight
//! ([`ConcurrencyController`], AIMD in the manner of Vector's adaptive request concurrency) and
//! the outage circuit that holds everyone while the provider cannot be reached
//! ([`OutageCircuit`]), and how big a request may be under the budget
//! ([`max_request_tokens`]). The rate limiter actor ([`crate::actors::rate_limiter`]) drives them
//! and the shared budget in Redis; nothing else decides what counts as back-pressure.

mod circuit;
mod concurrency;
mod outcome;
mod request_size;
mod status;

pub use circuit::CircuitChange;
pub use circuit::OutageCircuit;
pub use concurrency::ConcurrencyController;
pub use outcome::CallOutcome;
pub use request_size::max_request_tokens;
pub use status::{LimiterFigures, LimiterStatus};
