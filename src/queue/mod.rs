//! Redis Streams as the queue: key names, connections, the producer side (enqueue a job), the
//! consumer side (consumer groups with credits, reclaim and dead letters), the atomic planning
//! script, the epoch that tells when Redis lost its data, what Redis says about its own
//! durability, and leases (unique consumer names, the one active reconciler).

mod connection;
mod dead_letters;
mod delivery;
mod durability;
mod epoch;
mod keys;
mod lease;
mod plan_script;
mod producer;
mod rate_budget;
mod retry_set;
mod stream_consumer;

pub use connection::{QueueError, RedisConnections, consumer_identity};
pub use dead_letters::{DeadLetter, DeadLetters};
pub use delivery::{DeadItem, Delivery, StreamAcker};
pub use durability::RedisDurability;
pub use epoch::Epoch;
pub use keys::{Keys, PIPELINE_GROUP, PLANNER_GROUP};
pub use lease::{FencedLease, Lease};
pub use plan_script::{PagePlanned, PageWrite, PlanProgress, PlanScripts};
pub use producer::{Enqueued, enqueue_job};
pub use rate_budget::{BudgetLimits, RateBudget};
pub use retry_set::RetrySet;
pub use stream_consumer::{RawEntry, StreamConsumer};
