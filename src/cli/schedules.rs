//! `embedq schedules`: the configured schedules as a table — the cron expression, the next
//! tick and the latest firings with the job each made — and which daemon fires them.

use serde_json::Value;
use std::fmt::Write;

fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "never".into())
}

/// The answer of `GET /v1/schedules` as text.
pub fn table(answer: &Value) -> String {
    let mut out = String::new();
    let schedules = answer["schedules"].as_array().cloned().unwrap_or_default();
    if schedules.is_empty() {
        out.push_str("no schedules configured (see [[schedules]] in config/default.toml)\n");
    }
    for s in &schedules {
        let _ = writeln!(
            out,
            "{}  {}  missed: {}  next: {}  job: {}",
            s["name"].as_str().unwrap_or("?"),
            s["cron"].as_str().unwrap_or("?"),
            s["missed"].as_str().unwrap_or("?"),
            when(&s["next_tick_ms"]),
            s["job"]
        );
        for f in s["firings"].as_array().into_iter().flatten() {
            let made = match f["job_id"].as_str() {
                Some(job) => format!("job {job}"),
                None => f["result"].to_string(),
            };
            let _ = writeln!(
                out,
                "    fired {}  by {}  {made}",
                when(&f["tick_ms"]),
                f["fired_by"].as_str().unwrap_or("?")
            );
        }
    }
    let scheduler = &answer["scheduler"];
    let _ = writeln!(
        out,
        "this daemon {} the schedules",
        if scheduler["active"] == true {
            "fires"
        } else {
            "does not fire (another daemon holds the lease)"
        }
    );
    out
}
