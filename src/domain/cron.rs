//! A schedule's cron expression, parsed once (by the `cron` crate) and evaluated in UTC.
//!
//! Expressions have a seconds field first (`sec min hour day-of-month month day-of-week
//! [year]`, e.g. `0 0 3 * * *` for 03:00 every day); a classic five-field crontab line
//! (`0 3 * * *`) is read as if it began with `0` seconds.

use super::ParseError;
use chrono::{DateTime, TimeZone, Utc};
use std::fmt;
use std::str::FromStr;

/// A parsed cron expression.
#[derive(Clone)]
pub struct Cron {
    text: String,
    schedule: cron::Schedule,
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let trimmed = text.trim();
        let fields = trimmed.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {trimmed}"),
            6 | 7 => trimmed.to_owned(),
            n => {
                return Err(ParseError(format!(
                    "a cron expression has 5, 6 or 7 fields (seconds first when 6 or 7); {n} given"
                )));
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| ParseError(format!("not a cron expression: {e}")))?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err(ParseError("the cron expression never fires again".into()));
        }
        Ok(Self {
            text: trimmed.to_owned(),
            schedule,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `after_ms` (ms since the Unix epoch), if any.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        self.schedule
            .after(&to_time(after_ms))
            .next()
            .map(|t| t.timestamp_millis())
    }

    /// The ticks in (`after_ms`, `until_ms`], oldest first, at most `max` of them; the flag
    /// says whether more were left out.
    pub fn ticks_between(&self, after_ms: i64, until_ms: i64, max: usize) -> (Vec<i64>, bool) {
        let mut ticks = Vec::new();
        for tick in self.schedule.after(&to_time(after_ms)) {
            let ms = tick.timestamp_millis();
            if ms > until_ms {
                return (ticks, false);
            }
            if ticks.len() == max {
                return (ticks, true);
            }
            ticks.push(ms);
        }
        (ticks, false)
    }

    /// The last tick at or before `at_ms`, if any.
    pub fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        self.schedule
            .after(&to_time(at_ms.saturating_add(1)))
            .next_back()
            .map(|t| t.timestamp_millis())
            .filter(|t| *t <= at_ms)
    }
}

fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> serde::Deserialize<'de> for Cron {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

impl serde::Serialize for Cron {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04T00:00:00Z
    const MIDNIGHT: i64 = 1_796_342_400_000;

    #[test]
    fn five_fields_read_as_minutes() {
        let cron = Cron::parse("30 3 * * *").unwrap();
        assert_eq!(
            cron.next_after(MIDNIGHT),
            Some(MIDNIGHT + (3 * 60 + 30) * 60_000)
        );
    }

    #[test]
    fn every_second_ticks_in_a_window() {
        let cron = Cron::parse("* * * * * *").unwrap();
        let (ticks, more) = cron.ticks_between(MIDNIGHT, MIDNIGHT + 3_500, 10);
        assert_eq!(
            ticks,
            vec![MIDNIGHT + 1_000, MIDNIGHT + 2_000, MIDNIGHT + 3_000]
        );
        assert!(!more);
        let (ticks, more) = cron.ticks_between(MIDNIGHT, MIDNIGHT + 3_500, 2);
        assert_eq!(ticks.len(), 2);
        assert!(more);
        assert_eq!(
            cron.last_at_or_before(MIDNIGHT + 2_500),
            Some(MIDNIGHT + 2_000)
        );
        assert_eq!(
            cron.last_at_or_before(MIDNIGHT + 2_000),
            Some(MIDNIGHT + 2_000)
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for bad in ["", "* *", "61 * * * * *", "* * * * * * * *", "a b c d e"] {
            let err = Cron::parse(bad).unwrap_err();
            assert!(!err.0.is_empty(), "{bad:?}");
        }
    }
}
