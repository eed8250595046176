//! Redis connections. Commands share one multiplexed, self-reconnecting connection; each
//! blocking reader gets its own, because a blocked `XREADGROUP` holds its connection.

use crate::config::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "consumer name {0:?} is in use by another daemon (its lease is held); choose another queue.consumer_name"
    )]
    ConsumerNameTaken(String),
}

/// Factory for the daemon's Redis connections.
#[derive(Clone, Debug)]
pub struct RedisConnections {
    client: redis::Client,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl RedisConnections {
    pub fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        Ok(Self {
            client: redis::Client::open(settings.url.as_str())?,
            connect_timeout: settings.connect_timeout,
            command_timeout: settings.command_timeout,
        })
    }

    fn config(&self, response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
    }

    /// The shared connection for ordinary commands. Lazy: start-up does not fail while Redis
    /// is down, the first command reports it instead.
    pub fn shared(&self) -> Result<ConnectionManager, QueueError> {
        Ok(ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.config(self.command_timeout),
        )?)
    }

    /// A connection of its own for a reader that blocks up to `block`.
    pub fn blocking(&self, block: Duration) -> Result<ConnectionManager, QueueError> {
        Ok(ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.config(block + self.command_timeout),
        )?)
    }
}

/// A consumer name unique to this process start: host, pid and a random suffix, so two
/// replicas (or a restarted daemon and its predecessor's pending entries) never share one.
pub fn consumer_identity(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_unique() {
        let a = consumer_identity("");
        let b = consumer_identity("");
        assert_ne!(a, b);
        assert_eq!(consumer_identity("fixed"), "fixed");
    }
}
