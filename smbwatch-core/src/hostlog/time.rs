//! Timestamps as Windows log formats write them.
//!
//! Hand-written rather than `chrono::format` parsing: the shapes are few
//! (`2020-09-20 06:57:46.164`, `2020-09-20T06:57:46.1640000Z`,
//! `2020-09-20T02:57:46-04:00`) and this runs once per event on the hot path.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// A parsed time: the wall-clock reading and its zone offset when written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub naive: NaiveDateTime,
    /// Seconds east of UTC, when the text carried a zone (`Z` is 0).
    pub offset: Option<i32>,
}

impl Stamp {
    /// As UTC, if the zone was written.
    pub fn utc(self) -> Option<DateTime<Utc>> {
        let off = FixedOffset::east_opt(self.offset?)?;
        off.from_local_datetime(&self.naive)
            .single()
            .map(|d| d.with_timezone(&Utc))
    }

    /// As UTC, taking a missing zone as UTC.
    pub fn utc_or_assume(self) -> DateTime<Utc> {
        self.utc()
            .unwrap_or_else(|| Utc.from_utc_datetime(&self.naive))
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Parse `YYYY-MM-DD[T ]HH:MM:SS[.f{1,}][Z|z|±HH[:MM]]` (also `YYYY/MM/DD`).
pub(crate) fn parse(s: &str) -> Option<Stamp> {
    let b = s.trim().as_bytes();
    let year = digits(b, 0, 4)?;
    let sep = *b.get(4)?;
    if (sep != b'-' && sep != b'/') || *b.get(7)? != sep {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let min = digits(b, 14, 2)?;
    let sec = digits(b, 17, 2)?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000u32;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i) {
        None => None,
        Some(b'Z' | b'z') if i + 1 == b.len() => Some(0),
        Some(&c @ (b'+' | b'-')) => {
            let h = digits(b, i + 1, 2)?;
            let rest = &b[i + 3..];
            let m = match rest {
                [] => 0,
                [b':', ..] if rest.len() == 3 => digits(rest, 1, 2)?,
                _ if rest.len() == 2 => digits(rest, 0, 2)?,
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            Some(if c == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    // A leap second (:60, which Windows does not write but a forwarder
    // might) is clamped to the minute's last nanosecond: chrono's own
    // leap-second form prints as `:60`, which RFC 5424 and ECS consumers
    // refuse, and sorts oddly.
    let (sec, nanos) = if sec == 60 {
        (59, 999_999_999)
    } else {
        (sec, nanos)
    };
    let naive = NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_nano_opt(hour, min, sec, nanos)?;
    Some(Stamp { naive, offset })
}

/// Host-event times accepted: from 1970-01-01T00:00:00Z (the Unix epoch;
/// nothing Windows logs is older) up to, not including,
/// 2201-01-01T00:00:00Z — far beyond any real clock and well within every
/// consumer's date range (year 9999 or an epoch of 8·10¹⁸ µs, year 255479,
/// are not). As Unix seconds.
pub(crate) const TIME_RANGE: std::ops::Range<i64> = 0..7_289_654_400;

/// True when `t` lies in [`TIME_RANGE`].
pub(crate) fn in_range(t: DateTime<Utc>) -> bool {
    TIME_RANGE.contains(&t.timestamp())
}

/// A Unix epoch number as NXLog writes `integer($EventTime)` (microseconds)
/// or as collectors rewrite it (milliseconds, seconds): the unit is told by
/// magnitude (seconds up to 10^11, i.e. year 5138; milliseconds up to
/// 10^14; microseconds beyond). Always UTC.
pub(crate) fn from_epoch(v: i64) -> Option<Stamp> {
    let (secs, nanos) = if v.unsigned_abs() < 100_000_000_000 {
        (v, 0)
    } else if v.unsigned_abs() < 100_000_000_000_000 {
        (v.div_euclid(1_000), v.rem_euclid(1_000) * 1_000_000)
    } else {
        (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) * 1_000)
    };
    let t = DateTime::from_timestamp(secs, u32::try_from(nanos).ok()?)?;
    Some(Stamp {
        naive: t.naive_utc(),
        offset: Some(0),
    })
}

/// The host's UTC offset implied by a local reading and a UTC reading of
/// (nearly) the same instant, rounded to 15 minutes (every real zone is a
/// multiple). `None` when the result is not a plausible zone (beyond ±14 h).
pub(crate) fn infer_offset(local: NaiveDateTime, utc: DateTime<Utc>) -> Option<i32> {
    let diff = (local - utc.naive_utc()).num_seconds();
    let quarter = 15 * 60;
    let rounded = (diff as f64 / quarter as f64).round() as i64 * quarter;
    (rounded.abs() <= 14 * 3600).then_some(rounded as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn shapes() {
        let a = parse("2020-09-20 06:57:46.164").unwrap();
        assert_eq!(a.offset, None);
        assert_eq!(a.utc_or_assume(), utc("2020-09-20T06:57:46.164Z"));
        let b = parse("2020-09-20T06:57:46.1640000Z").unwrap();
        assert_eq!(b.utc(), Some(utc("2020-09-20T06:57:46.164Z")));
        let c = parse("2020-09-20T02:57:46-04:00").unwrap();
        assert_eq!(c.utc(), Some(utc("2020-09-20T06:57:46Z")));
        let d = parse("2020-09-20T08:57:46+0200").unwrap();
        assert_eq!(d.utc(), Some(utc("2020-09-20T06:57:46Z")));
        assert_eq!(
            parse("2020-09-20 06:57:46").unwrap().naive.and_utc(),
            utc("2020-09-20T06:57:46Z")
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2020",
            "2020-13-01 00:00:00",
            "2020-02-30 00:00:00",
            "2020-09-20 25:00:00",
            "2020-09-20 06:57:46.",
            "2020-09-20 06:57:46Zx",
            "2020-09-20 06:57:46+4",
            "2020-09-20 06:57:46+99:00",
            "٢٠٢٠-09-20 06:57:46",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn epoch_numbers() {
        let want = utc("2020-09-20T06:57:46.576718Z");
        assert_eq!(from_epoch(1_600_585_066_576_718).unwrap().utc(), Some(want));
        assert_eq!(
            from_epoch(1_600_585_066_576).unwrap().utc(),
            Some(utc("2020-09-20T06:57:46.576Z"))
        );
        assert_eq!(
            from_epoch(1_600_585_066).unwrap().utc(),
            Some(utc("2020-09-20T06:57:46Z"))
        );
        assert_eq!(from_epoch(i64::MAX), None);
    }

    #[test]
    fn range_bounds_match_their_text() {
        const MIN_TIME: &str = "1970-01-01T00:00:00Z";
        const MAX_TIME: &str = "2200-12-31T23:59:59.999999999Z";
        assert!(in_range(utc(MIN_TIME)));
        assert!(in_range(utc(MAX_TIME)));
        assert!(!in_range(utc(MIN_TIME) - chrono::Duration::nanoseconds(1)));
        assert!(!in_range(utc(MAX_TIME) + chrono::Duration::nanoseconds(1)));
    }

    #[test]
    fn leap_second_is_an_ordinary_time() {
        let s = parse("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(s.utc(), Some(utc("2016-12-31T23:59:59.999999999Z")));
    }

    #[test]
    fn infers_zone_from_collector_time() {
        let local = parse("2020-09-20 02:57:46").unwrap().naive;
        // Collector received it 1.8 s later, in UTC.
        let off = infer_offset(local, utc("2020-09-20T06:57:47.846Z")).unwrap();
        assert_eq!(off, -4 * 3600);
        let india = infer_offset(
            parse("2020-09-20 12:27:46").unwrap().naive,
            utc("2020-09-20T06:57:50Z"),
        );
        assert_eq!(india, Some(5 * 3600 + 1800));
        assert_eq!(infer_offset(local, utc("2020-09-22T06:57:46Z")), None);
    }
}
