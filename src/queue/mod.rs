//! Redis Streams as the queue: key names, connections, the producer side (enqueue a job), the
//! consumer side (consumer groups with credits, reclaim and dead letters), the atomic planning
//! script and the lease that keeps consumer names unique.

mod connection;
mod consumer_lease;
mod dead_letters;
mod delivery;
mod keys;
mod plan_script;
mod producer;
mod rate_budget;
mod retry_set;
mod stream_consumer;

pub use connection::{QueueError, RedisConnections, consumer_identity};
pub use consumer_lease::ConsumerLease;
pub use dead_letters::{DeadLetter, DeadLetters};
pub use delivery::{DeadItem, Delivery, StreamAcker};
pub use keys::{Keys, PIPELINE_GROUP, PLANNER_GROUP};
pub use plan_script::{PagePlanned, PlanProgress, PlanScripts};
pub use producer::enqueue_job;
pub use rate_budget::{BudgetLimits, RateBudget};
pub use retry_set::RetrySet;
pub use stream_consumer::{RawEntry, StreamConsumer};
