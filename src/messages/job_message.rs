//! The message `POST /v1/jobs` puts on the jobs stream: only the job's id. The job itself
//! (scope, model) is in SQL, so the message costs the same whatever the job's size.

use super::{EntryFields, Malformed, SCHEMA_VERSION, StreamMessage, text_field};
use crate::domain::JobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: JobId,
}

impl StreamMessage for JobMessage {
    const KIND: &'static str = "job";

    fn encode(&self) -> Vec<(&'static str, String)> {
        vec![
            ("v", SCHEMA_VERSION.into()),
            ("job_id", self.job_id.to_string()),
        ]
    }

    fn decode(fields: &EntryFields) -> Result<Self, Malformed> {
        let raw = text_field(fields, "job_id")?;
        let job_id = JobId::parse(raw).map_err(|e| Malformed(e.0))?;
        Ok(Self { job_id })
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
        let m = JobMessage {
            job_id: JobId::new(),
        };
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
}
