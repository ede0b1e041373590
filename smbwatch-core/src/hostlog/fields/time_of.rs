//! Which of a record's time fields is its event time.

use super::super::time::{self, Stamp};
use super::super::{RecordProblem, TimeSource};
use super::values::stamp;
use super::{Flavour, Raw};

impl Raw<'_> {
    /// Event time by precedence (documented in docs/hostlogs.md):
    /// 1. Sysmon `UtcTime` (when the action happened; Sysmon logs network
    ///    events late, so it beats `TimeCreated`);
    /// 2. `TimeCreated/@SystemTime` (UTC), or a zoned `TimeCreated` line;
    /// 3. Winlogbeat `@timestamp` (the event's creation time, UTC);
    /// 4. NXLog `EventTime`: zoned if written with a zone, else host local
    ///    time converted with the offset inferred from `@timestamp`;
    /// 5. NXLog `@timestamp` alone (collector time);
    /// 6. any remaining zone-less time, taken as UTC.
    pub(super) fn time(
        &self,
    ) -> Result<(chrono::DateTime<chrono::Utc>, TimeSource), RecordProblem> {
        let utc_time = stamp("UtcTime", self.utc_time.as_ref())?;
        let system_time = stamp("TimeCreated", self.system_time.as_ref())?;
        let at = stamp("@timestamp", self.at_timestamp.as_ref())?;
        let event_time = stamp("EventTime", self.event_time.as_ref())?;
        // Sysmon writes UtcTime without a zone: it is UTC by definition.
        if let Some(s) = utc_time {
            return Ok((s.utc_or_assume(), TimeSource::Utc));
        }
        if let Some(s) = system_time {
            if let Some(t) = s.utc() {
                return Ok((t, TimeSource::Utc));
            }
        }
        if self.flavour == Flavour::Winlogbeat {
            if let Some(t) = at.and_then(Stamp::utc) {
                return Ok((t, TimeSource::Utc));
            }
        }
        if let Some(s) = event_time {
            if let Some(t) = s.utc() {
                return Ok((t, TimeSource::Utc));
            }
            if let Some(collector) = at.and_then(Stamp::utc) {
                if let Some(off) = time::infer_offset(s.naive, collector) {
                    let t = Stamp {
                        naive: s.naive,
                        offset: Some(off),
                    };
                    if let Some(t) = t.utc() {
                        return Ok((t, TimeSource::LocalInferred));
                    }
                }
            }
        }
        if let Some(t) = at.and_then(Stamp::utc) {
            return Ok((t, TimeSource::Collector));
        }
        match system_time.or(event_time).or(at) {
            Some(s) => Ok((s.utc_or_assume(), TimeSource::AssumedUtc)),
            None => Err(RecordProblem::Missing(
                "event time (UtcTime, TimeCreated, EventTime or @timestamp)",
            )),
        }
    }
}
