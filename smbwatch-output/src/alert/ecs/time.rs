//! Times and keyword numbers as ECS writes them.

use std::fmt::Display;

use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};
use serde::{Serialize, Serializer};

/// A time as ECS dates and RFC 5424 TIMESTAMPs are written: RFC 3339, UTC,
/// milliseconds, `Z`.
///
/// Always valid: RFC 3339 allows years 0001 to 9999 (four digits) and RFC
/// 5424 forbids the leap second `:60`, while an alert's time comes from
/// events (host logs, captures) that can say anything chrono can hold.
/// [`Timestamp::new`] clamps into range (a leap second becomes .999 of the
/// second before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The earliest time written: 0001-01-01T00:00:00.000Z.
    pub fn min() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
            .single()
            .expect("year 1 is in chrono's range")
    }

    /// The latest time written: 9999-12-31T23:59:59.999Z.
    pub fn max() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .single()
            .expect("year 9999 is in chrono's range")
            + chrono::Duration::milliseconds(999)
    }

    /// `ts` clamped into what RFC 3339 and RFC 5424 can express.
    pub fn new(ts: DateTime<Utc>) -> Self {
        let ts = ts.clamp(Self::min(), Self::max());
        // chrono marks a leap second with nanoseconds past 1e9.
        let leap = ts.timestamp_subsec_nanos() >= 1_000_000_000;
        Self(if leap {
            ts.with_nanosecond(999_999_999).unwrap_or(ts)
        } else {
            ts
        })
    }

    /// The time written.
    pub fn time(self) -> DateTime<Utc> {
        self.0
    }
}

impl Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A number ECS types as `keyword` (interface and VLAN ids): written as a
/// string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyword<T>(pub T);

impl<T: Display> Serialize for Keyword<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::NaiveDate;

    use super::*;

    /// What RFC 3339 (4-digit year 0001-9999) and RFC 5424 (no second 60)
    /// accept, checked on the text.
    pub(crate) fn assert_valid_time(s: &str) {
        let b = s.as_bytes();
        assert_eq!(s.len(), 24, "{s}");
        assert!(
            b[..4].iter().all(u8::is_ascii_digit) && &s[..4] != "0000",
            "{s}"
        );
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19], b[23]),
            (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
            "{s}"
        );
        let sec: u32 = s[17..19].parse().unwrap();
        assert!(sec <= 59, "{s}");
        DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }

    fn leap_second() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 1_500)
            .unwrap()
            .and_utc()
    }

    /// Times an event can carry that RFC 3339 / 5424 cannot: far future
    /// (8e18 microseconds after the epoch, year 255,479), chrono's extremes,
    /// year 0, negative years, a leap second.
    pub(crate) fn out_of_range_times() -> Vec<(DateTime<Utc>, &'static str)> {
        vec![
            (
                DateTime::from_timestamp_micros(8_000_000_000_000_000_000).unwrap(),
                "9999-12-31T23:59:59.999Z",
            ),
            (DateTime::<Utc>::MAX_UTC, "9999-12-31T23:59:59.999Z"),
            (DateTime::<Utc>::MIN_UTC, "0001-01-01T00:00:00.000Z"),
            (
                Utc.with_ymd_and_hms(0, 6, 1, 0, 0, 0).unwrap(),
                "0001-01-01T00:00:00.000Z",
            ),
            (
                Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
                "9999-12-31T23:59:59.999Z",
            ),
            (leap_second(), "9999-12-31T23:59:59.999Z"),
            (
                NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_milli_opt(23, 59, 59, 1_250)
                    .unwrap()
                    .and_utc(),
                "2016-12-31T23:59:59.999Z",
            ),
        ]
    }

    #[test]
    fn timestamps_are_clamped_into_rfc3339() {
        for (ts, want) in out_of_range_times() {
            let t = Timestamp::new(ts);
            assert_eq!(t.to_string(), want, "{ts:?}");
            assert_valid_time(&t.to_string());
            assert_ne!(t.time(), ts);
        }
        for s in [
            "0001-01-01T00:00:00.000Z",
            "2024-05-01T12:00:07.250Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let ts = DateTime::parse_from_rfc3339(s).unwrap().to_utc();
            assert_eq!(Timestamp::new(ts).time(), ts);
            assert_eq!(Timestamp::new(ts).to_string(), s);
        }
    }
}
