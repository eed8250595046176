//! embedq keeps the vector embeddings of a web backend's text items in sync, off the request
//! path: producers enqueue jobs over HTTP or Redis, a supervised pipeline of actors plans them
//! into bounded tasks, and every item's state lives in SQL.
//!
//! The crate is laid out by role in the flow: `domain` holds the parsed, always-valid types;
//! `store` the SQL state; `queue` the Redis streams; `messages` what travels on them; `actors`
//! the supervised pipeline; `http` the admin surface; `startup` wires them together.

pub mod actors;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod fault;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod providers;
pub mod queue;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod vectors;
