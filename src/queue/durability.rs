//! What Redis says about keeping its data: its eviction policy under `maxmemory` and whether it
//! persists (an append-only file, RDB snapshots). Read once at start-up with `CONFIG GET`
//! (a managed Redis may refuse it: then nothing is known and that is said).
//!
//! What embedq does with it: a policy that may evict any key (`allkeys-*`) could drop the
//! queues themselves, so the daemon refuses to start under it unless
//! `redis.allow_evicting_policy` says to run anyway; `volatile-*` policies only evict keys with
//! a time-to-live, and embedq's queues have none. A Redis that persists nothing loses the
//! queued work on a restart: the daemon says so in its log and in `/readyz`, and the reconciler
//! plans the lost work again from SQL.

use super::QueueError;
use redis::aio::ConnectionManager;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RedisDurability {
    /// `maxmemory-policy`, when Redis tells.
    pub maxmemory_policy: Option<String>,
    /// `appendonly yes`, when Redis tells.
    pub append_only: Option<bool>,
    /// RDB snapshots configured (`save` not empty), when Redis tells.
    pub snapshots: Option<bool>,
}

impl RedisDurability {
    /// Reads the settings; what Redis will not tell stays unknown.
    pub async fn inspect(conn: &ConnectionManager) -> Result<Self, QueueError> {
        let policy = config_get(conn, "maxmemory-policy").await?;
        let aof = config_get(conn, "appendonly").await?;
        let save = config_get(conn, "save").await?;
        Ok(Self {
            maxmemory_policy: policy,
            append_only: aof.map(|v| v == "yes"),
            snapshots: save.map(|v| !v.trim().is_empty()),
        })
    }

    /// Whether Redis may evict any key under memory pressure, the queues included.
    pub fn evicts_any_key(&self) -> bool {
        self.maxmemory_policy
            .as_deref()
            .is_some_and(|p| p.starts_with("allkeys-"))
    }

    /// Whether the data survives a restart: `Some(false)` when Redis persists nothing.
    pub fn persists(&self) -> Option<bool> {
        match (self.append_only, self.snapshots) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }
    }

    /// What can be lost with these settings, in a sentence; `None` when nothing.
    pub fn warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.evicts_any_key() {
            parts.push(format!(
                "maxmemory-policy {} may evict the queues themselves (set noeviction or a volatile-* policy)",
                self.maxmemory_policy.as_deref().unwrap_or("?")
            ));
        }
        match self.persists() {
            Some(false) => parts.push(
                "Redis persists nothing (appendonly no, no save): a restart loses the queued work, which embedq then plans again from SQL (set appendonly yes to avoid it)"
                    .to_owned(),
            ),
            None => parts.push("Redis does not say whether it persists (CONFIG GET refused)".to_owned()),
            Some(true) => {}
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// One setting, or `None` when Redis will not tell (NOPERM, a renamed command); a connection
/// that fails is an error.
async fn config_get(conn: &ConnectionManager, name: &str) -> Result<Option<String>, QueueError> {
    let mut conn = conn.clone();
    let reply: Result<Vec<String>, redis::RedisError> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut conn)
        .await;
    match reply {
        Ok(pair) => Ok(pair.get(1).cloned()),
        Err(e) if e.kind() == redis::ErrorKind::Io || e.is_timeout() => Err(e.into()),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_setting_means() {
        let safe = RedisDurability {
            maxmemory_policy: Some("noeviction".into()),
            append_only: Some(true),
            snapshots: Some(false),
        };
        assert!(!safe.evicts_any_key());
        assert_eq!(safe.persists(), Some(true));
        assert_eq!(safe.warning(), None);
        let volatile = RedisDurability {
            maxmemory_policy: Some("volatile-lru".into()),
            ..safe.clone()
        };
        assert!(!volatile.evicts_any_key());
        let evicting = RedisDurability {
            maxmemory_policy: Some("allkeys-lru".into()),
            append_only: Some(false),
            snapshots: Some(false),
        };
        assert!(evicting.evicts_any_key());
        assert_eq!(evicting.persists(), Some(false));
        let warning = evicting.warning().unwrap();
        assert!(
            warning.contains("allkeys-lru") && warning.contains("persists nothing"),
            "{warning}"
        );
        assert!(
            RedisDurability::default()
                .warning()
                .unwrap()
                .contains("does not say")
        );
    }
}
