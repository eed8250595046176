//! embedq keeps the vector embeddings of a web backend's text items in sync, off the request
//! path: producers enqueue jobs over HTTP or Redis, a supervised pipeline of actors plans them
//! into bounded tasks, and every item's state lives in SQL.
//!
//! The crate is laid out by role in the flow (see `ARCHITECTURE.md`): `domain` holds the
//! parsed, always-valid types; `store` the SQL state; `queue` the Redis streams; `messages`
//! what travels on them; `providers` the embedding APIs; `vectors` the vector stores;
//! `embedding` the pure steps of embedding a task; `point_sync` what SQL's deletes and
//! metadata changes owe the vector store; `limiter` back-pressure; `retry`, `gate`
//! and `shutdown` one policy each; `actors` the supervised pipeline; `http` the admin surface;
//! `startup` wires them together. The public surface is what the binary, the tests and the
//! benches use; the rest is `pub(crate)`.

pub(crate) mod actors;
pub mod config;
pub mod documents;
pub mod domain;
pub(crate) mod embedding;
pub(crate) mod estimate;
pub(crate) mod events;
pub mod fault;
pub(crate) mod gate;
pub(crate) mod http;
pub(crate) mod limiter;
pub mod messages;
pub(crate) mod metrics;
pub mod point_sync;
pub mod providers;
pub mod queue;
pub(crate) mod retry;
pub mod shutdown;
pub mod startup;
pub mod store;
pub(crate) mod submit;
pub mod telemetry;
pub mod vectors;
