//! Capture time: the event times replay hands out, which never go backwards.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Turns capture timestamps into event times that never go backwards.
///
/// A timestamp earlier than the latest seen is replaced by the latest seen
/// (and counted): detection windows and response timeouts are measured
/// forward in time, and a step back would make a window appear to shrink.
/// A record without a timestamp takes the latest seen (the Unix epoch before
/// the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureClock {
    latest: Option<Duration>,
    /// Timestamps that were earlier than the latest seen.
    pub backwards: u64,
    /// Records without a (representable) timestamp.
    pub missing: u64,
}

impl CaptureClock {
    /// The event time for a record stamped `ts`.
    pub fn stamp(&mut self, ts: Option<Duration>) -> DateTime<Utc> {
        let ts = ts.and_then(|t| {
            // Beyond chrono's range (year 262143): treat as missing.
            DateTime::from_timestamp(i64::try_from(t.as_secs()).ok()?, t.subsec_nanos()).map(|_| t)
        });
        let t = match (ts, self.latest) {
            (None, latest) => {
                self.missing += 1;
                latest.unwrap_or_default()
            }
            (Some(t), Some(latest)) if t < latest => {
                self.backwards += 1;
                latest
            }
            (Some(t), _) => t,
        };
        self.latest = Some(t);
        to_utc(t)
    }

    /// The latest time handed out.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.latest.map(to_utc)
    }
}

fn to_utc(t: Duration) -> DateTime<Utc> {
    // CaptureClock only keeps representable times.
    DateTime::from_timestamp(t.as_secs() as i64, t.subsec_nanos()).unwrap_or_default()
}
