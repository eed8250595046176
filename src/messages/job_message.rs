//! The message on the jobs stream. `POST /v1/jobs` records the job in SQL first and puts only
//! its id here, so the message costs the same whatever the job's size. A producer that prefers
//! a plain Redis `XADD` to HTTP writes the scope too, with a job id it chose:
//!
//! ```text
//! XADD embedq:jobs * v 1 job_id 0193b5e2-7a1c-7d3e-9a43-2f1d7c0e5b11 scope {"type":"context","context_id":"docs"}
//! ```
//!
//! (a `priority` field — `interactive`, `normal` or `bulk` — may follow; without one the job
//! gets its scope's default) and the planner records that job (once, whatever how often the entry is delivered) before
//! planning it. A scope that does not parse makes the entry malformed: it is dead-lettered with
//! the reason.

use super::{EntryFields, Malformed, SCHEMA_VERSION, StreamMessage, text_field};
use crate::domain::{JobId, JobScope, Priority, Tenant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: JobId,
    /// Present when a producer enqueued the job straight on Redis: the job is not in SQL yet.
    pub scope: Option<Box<JobScope>>,
    /// A producer's choice of priority for a job it enqueued straight on Redis.
    pub priority: Option<Priority>,
    /// A producer's tenant for such a job.
    pub tenant: Option<Tenant>,
}

impl JobMessage {
    /// The message for a job already recorded in SQL.
    pub fn recorded(job_id: JobId) -> Self {
        Self {
            job_id,
            scope: None,
            priority: None,
            tenant: None,
        }
    }
}

impl StreamMessage for JobMessage {
    const KIND: &'static str = "job";

    fn encode(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("v", SCHEMA_VERSION.into()),
            ("job_id", self.job_id.to_string()),
        ];
        if let Some(scope) = &self.scope {
            let scope = serde_json::to_string(scope).expect("a scope always serialises");
            fields.push(("scope", scope));
        }
        if let Some(priority) = self.priority {
            fields.push(("priority", priority.as_str().into()));
        }
        if let Some(tenant) = &self.tenant {
            fields.push(("tenant", tenant.to_string()));
        }
        fields
    }

    fn decode(fields: &EntryFields) -> Result<Self, Malformed> {
        let raw = text_field(fields, "job_id")?;
        let job_id = JobId::parse(raw).map_err(|e| Malformed(e.0))?;
        let scope = if fields.contains_key("scope") {
            let raw = text_field(fields, "scope")?;
            let mut scope = serde_json::from_str(raw)
                .map_err(|e| e.to_string())
                .and_then(|json| JobScope::from_json(json).map_err(|e| e.0))
                .map_err(|e| Malformed(format!("field \"scope\": {e}")))?;
            scope.normalise();
            Some(Box::new(scope))
        } else {
            None
        };
        let priority = if fields.contains_key("priority") {
            let raw = text_field(fields, "priority")?;
            Some(Priority::parse(raw).map_err(|e| Malformed(format!("field \"priority\": {e}")))?)
        } else {
            None
        };
        let tenant = if fields.contains_key("tenant") {
            let raw = text_field(fields, "tenant")?;
            Some(Tenant::parse(raw).map_err(|e| Malformed(format!("field \"tenant\": {e}")))?)
        } else {
            None
        };
        Ok(Self {
            job_id,
            scope,
            priority,
            tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> EntryFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn round_trip_and_rejects() {
        let m = JobMessage::recorded(JobId::new());
        let encoded: Vec<(String, String)> = m
            .encode()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let f: EntryFields = encoded
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        assert_eq!(JobMessage::decode(&f).unwrap(), m);
        assert!(JobMessage::decode(&fields(&[("job_id", "x")])).is_err());
        assert!(JobMessage::decode(&fields(&[("v", "1"), ("job_id", "x")])).is_err());
        assert!(JobMessage::decode(&fields(&[("v", "9"), ("job_id", "x")])).is_err());
    }

    #[test]
    fn a_producer_entry_carries_its_scope() {
        let id = JobId::new().to_string();
        let m = JobMessage::decode(&fields(&[
            ("v", "1"),
            ("job_id", &id),
            ("scope", r#"{"type":"items","item_ids":["b","a","b"]}"#),
            ("priority", "bulk"),
            ("tenant", "acme"),
        ]))
        .expect("decodes");
        let Some(JobScope::Items { item_ids }) = m.scope.as_deref() else {
            panic!("an items scope: {m:?}");
        };
        let ids: Vec<&str> = item_ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(m.priority, Some(Priority::Bulk));
        assert_eq!(m.tenant.as_ref().map(Tenant::as_str), Some("acme"));
        let again: EntryFields = m
            .encode()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_bytes()))
            .collect();
        assert_eq!(JobMessage::decode(&again).unwrap(), m);

        for bad in [
            r#"{"type":"nope"}"#,
            r#"{"type":"items","item_ids":[]}"#,
            r#"{"type":"all","extra":1}"#,
            r#"{"type":"context","context_id":"a b"}"#,
            "not json",
        ] {
            let err = JobMessage::decode(&fields(&[("v", "1"), ("job_id", &id), ("scope", bad)]))
                .expect_err(bad);
            assert!(err.0.contains("scope"), "{err}");
        }
        let err = JobMessage::decode(&fields(&[("v", "1"), ("job_id", &id), ("priority", "now")]))
            .expect_err("an unknown priority");
        assert!(err.0.contains("priority"), "{err}");
        let err = JobMessage::decode(&fields(&[("v", "1"), ("job_id", &id), ("tenant", "a b")]))
            .expect_err("a tenant with a space");
        assert!(err.0.contains("tenant"), "{err}");
    }
}
