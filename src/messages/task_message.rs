//! A task: a bounded slice of one job's items, each with the attempts it has used. Tasks are
//! what the planner writes and the embedding pool reads; retries travel as tasks too, with the
//! attempt count raised, so the count survives restarts.

use super::{EntryFields, Malformed, SCHEMA_VERSION, StreamMessage, text_field};
use crate::domain::{ItemId, JobId, Priority, Tenant};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskItem {
    pub id: ItemId,
    /// Attempts already used for the item's current content.
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub job_id: JobId,
    pub items: Vec<TaskItem>,
    /// Its items are each sent in a request of their own (they were in a request whose worker
    /// crashed: a suspect does not take innocent items down with it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
    /// Its items are embedded even if SQL says they are up to date (a reconcile job found
    /// their point missing or wrong).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reembed: bool,
    /// The job's priority when the task was planned: it picks the task's stream, and a retry
    /// or a reclaimed task keeps it.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// The job's tenant: the pool shares requests by tenant, then by job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Tenant>,
}

impl TaskMessage {
    /// The JSON written in the entry's `task` field.
    pub fn payload(&self) -> String {
        serde_json::to_string(self).expect("a task always serialises")
    }
}

/// A task never holds more items than this, whatever is configured (memory stays bounded).
pub const MAX_TASK_ITEMS: usize = 2048;

impl StreamMessage for TaskMessage {
    const KIND: &'static str = "task";

    fn encode(&self) -> Vec<(&'static str, String)> {
        vec![("v", SCHEMA_VERSION.into()), ("task", self.payload())]
    }

    fn decode(fields: &EntryFields) -> Result<Self, Malformed> {
        let raw = text_field(fields, "task")?;
        let task: TaskMessage =
            serde_json::from_str(raw).map_err(|e| Malformed(format!("task payload: {e}")))?;
        if task.items.is_empty() {
            return Err(Malformed("task has no items".into()));
        }
        if task.items.len() > MAX_TASK_ITEMS {
            return Err(Malformed(format!(
                "task has {} items; the limit is {MAX_TASK_ITEMS}",
                task.items.len()
            )));
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(payload: &str) -> Result<TaskMessage, Malformed> {
        let f: EntryFields = [("v", "1"), ("task", payload)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        TaskMessage::decode(&f)
    }

    #[test]
    fn round_trip() {
        let t = TaskMessage {
            job_id: JobId::new(),
            items: vec![TaskItem {
                id: ItemId::parse("a").unwrap(),
                attempt: 2,
            }],
            isolated: false,
            reembed: false,
            priority: Priority::Normal,
            tenant: None,
        };
        let payload = t.encode().remove(1).1;
        assert_eq!(decode(&payload).unwrap(), t);
        assert!(!payload.contains("isolated"), "the default is not written");
        assert!(!payload.contains("priority"), "the default is not written");
        let alone = TaskMessage {
            isolated: true,
            reembed: false,
            priority: Priority::Interactive,
            tenant: Some(Tenant::parse("acme").unwrap()),
            ..t
        };
        let payload = alone.encode().remove(1).1;
        assert!(payload.contains(r#""priority":"interactive""#), "{payload}");
        assert!(payload.contains(r#""tenant":"acme""#), "{payload}");
        assert_eq!(decode(&payload).unwrap(), alone);
    }

    #[test]
    fn rejects_bad_payloads() {
        assert!(decode("not json").is_err());
        assert!(decode(r#"{"job_id":"00000000-0000-7000-8000-000000000000","items":[]}"#).is_err());
        assert!(decode(r#"{"job_id":"x","items":[{"id":"a","attempt":0}]}"#).is_err());
        assert!(
            decode(r#"{"job_id":"00000000-0000-7000-8000-000000000000","items":[{"id":"a b","attempt":0}]}"#)
                .is_err()
        );
    }
}
