//! The alert as an Elastic Common Schema document, typed.
//!
//! [`Document`] is the one place that knows which alert field goes where:
//! the JSON line is its serialisation, and the syslog structured data reads
//! its parameters from it. The structs mirror ECS's nesting (`event`,
//! `source`, `destination`, `rule`, `threat`, `observer`, `process`,
//! `user`, `host`, ...); fields ECS has no name for live under `smbwatch`.
//!
//! Absent fields are omitted, never `null`, and so are objects left empty.
//! Adding a field is its declaration (with its `skip_serializing_if`) and
//! its value in [`Document::new`]; order of declaration is order of output.

use std::fmt::Display;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};
use serde::{Serialize, Serializer};

use super::{Alert, ProcessInfo, ScanEvidence, Severity};

/// `threat.framework` for every alert: technique ids are MITRE ATT&CK ids.
pub const THREAT_FRAMEWORK: &str = "MITRE ATT&CK";

/// True when `v` serialises to nothing: a `None`, an empty list, or an
/// object all of whose fields were skipped. Alerts are rare, so building a
/// value to find out is cheap enough, and it spares every struct a
/// hand-written emptiness check that a new field could forget.
fn is_empty<T: Serialize>(v: &T) -> bool {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.is_empty(),
        Ok(serde_json::Value::Array(a)) => a.is_empty(),
        Ok(serde_json::Value::Null) => true,
        _ => false,
    }
}

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

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// When the alerting condition held.
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// One-line summary.
    pub message: &'a str,
    /// `event.*`.
    pub event: Event,
    /// `rule.*`.
    pub rule: Rule,
    /// `source.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub source: Endpoint,
    /// `destination.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub destination: Endpoint,
    /// `threat.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub threat: Threat<'a>,
    /// `network.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub network: Network<'a>,
    /// `observer.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub observer: Observer,
    /// `process.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub process: Process<'a>,
    /// `user.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub user: Named<'a>,
    /// `host.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub host: Named<'a>,
    /// `smbwatch.*`: what ECS has no field for.
    #[serde(skip_serializing_if = "is_empty")]
    pub smbwatch: Smbwatch<'a>,
}

/// `event.*`.
#[derive(Debug, Serialize)]
pub struct Event {
    /// Always `alert`.
    pub kind: &'static str,
    /// The alert kind code.
    pub code: &'static str,
    /// ECS severity number (higher is worse).
    #[serde(serialize_with = "severity_number")]
    pub severity: Severity,
}

fn severity_number<S: Serializer>(v: &Severity, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(v.number())
}

/// `rule.*`.
#[derive(Debug, Serialize)]
pub struct Rule {
    /// Human-readable rule name.
    pub name: &'static str,
}

/// `source.*` or `destination.*`.
#[derive(Debug, Default, Serialize)]
pub struct Endpoint {
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `threat.*`.
#[derive(Debug, Default, Serialize)]
pub struct Threat<'a> {
    /// [`THREAT_FRAMEWORK`] when there are techniques.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<&'static str>,
    /// `threat.technique.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub technique: Technique<'a>,
}

/// `threat.technique.*`.
#[derive(Debug, Default, Serialize)]
pub struct Technique<'a> {
    /// MITRE ATT&CK technique ids.
    #[serde(skip_serializing_if = "is_empty")]
    pub id: &'a [&'static str],
}

/// `network.*`.
#[derive(Debug, Default, Serialize)]
pub struct Network<'a> {
    /// Community ID of the first flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<&'a str>,
}

/// `observer.*`: the router smbwatch runs on.
#[derive(Debug, Default, Serialize)]
pub struct Observer {
    /// `observer.name`: the gateways that saw the source (set by the fleet
    /// aggregator; one router's own alerts leave it out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// `observer.ingress.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub ingress: Ingress,
}

/// `observer.ingress.*`.
#[derive(Debug, Default, Serialize)]
pub struct Ingress {
    /// `observer.ingress.interface.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub interface: Id<u32>,
    /// `observer.ingress.vlan.*`.
    #[serde(skip_serializing_if = "is_empty")]
    pub vlan: Id<u16>,
}

/// An object with a keyword `id`.
#[derive(Debug, Serialize)]
pub struct Id<T: Display> {
    /// The id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Keyword<T>>,
}

impl<T: Display> Default for Id<T> {
    fn default() -> Self {
        Self { id: None }
    }
}

/// An object with a `name` (`user`, `host`).
#[derive(Debug, Default, Serialize)]
pub struct Named<'a> {
    /// The name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

/// `process.*` (and the elements of `smbwatch.processes`).
#[derive(Debug, Default, Serialize)]
pub struct Process<'a> {
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Full path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
}

impl<'a> From<&'a ProcessInfo> for Process<'a> {
    fn from(p: &'a ProcessInfo) -> Self {
        Self {
            name: p.name.as_deref(),
            pid: p.pid,
            executable: p.executable.as_deref(),
        }
    }
}

/// `smbwatch.*`.
#[derive(Debug, Default, Serialize)]
pub struct Smbwatch<'a> {
    /// Share name (share-access alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<&'a str>,
    /// Scan evidence (scan alerts).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub scan: Option<Scan>,
    /// Processes seen for the source (correlated scan alerts).
    #[serde(skip_serializing_if = "is_empty")]
    pub processes: Vec<Process<'a>>,
    /// The alert's own time when `@timestamp` had to be clamped (see
    /// [`Timestamp`]), as chrono writes it (`+10000-01-01T00:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
}

/// Scan evidence, under `smbwatch.*`.
#[derive(Debug, Serialize)]
pub struct Scan {
    /// Distinct destinations in the window.
    pub distinct_destinations: usize,
    /// The destinations (capped, first seen first).
    pub destinations: Vec<IpAddr>,
    /// SYNs (new pairs) in the window.
    pub syns: u64,
    /// SYNs that came as first IP fragments (left out when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub fragmented_syns: u64,
    /// Pairs answered with SYN-ACK.
    pub accepted: u64,
    /// Pairs refused or unanswered.
    pub refused: u64,
    /// Window length in seconds.
    pub window_secs: u64,
    /// First event of the source in the window.
    pub first_seen: Timestamp,
    /// Latest event of the source.
    pub last_seen: Timestamp,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&ScanEvidence> for Scan {
    fn from(ev: &ScanEvidence) -> Self {
        Self {
            distinct_destinations: ev.distinct_destinations,
            destinations: ev.destinations.clone(),
            syns: ev.syns,
            fragmented_syns: ev.fragmented_syns,
            accepted: ev.accepted,
            refused: ev.refused,
            window_secs: ev.window_secs,
            first_seen: Timestamp::new(ev.first_seen),
            last_seen: Timestamp::new(ev.last_seen),
        }
    }
}

impl<'a> Document<'a> {
    /// The document of one alert.
    pub fn new(alert: &'a Alert) -> Self {
        let techniques = alert.techniques.as_slice();
        let timestamp = Timestamp::new(alert.ts);
        let original_timestamp = (timestamp.time() != alert.ts)
            .then(|| alert.ts.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        Self {
            timestamp,
            message: &alert.message,
            event: Event {
                kind: "alert",
                code: alert.kind.code(),
                severity: alert.severity,
            },
            rule: Rule {
                name: alert.kind.rule_name(),
            },
            source: Endpoint {
                ip: alert.source_ip,
                port: None,
            },
            destination: Endpoint {
                ip: alert.destination_ip,
                port: alert.destination_port,
            },
            threat: Threat {
                framework: (!techniques.is_empty()).then_some(THREAT_FRAMEWORK),
                technique: Technique { id: techniques },
            },
            network: Network {
                community_id: alert.community_id.as_deref(),
            },
            observer: Observer {
                name: alert.observers.clone(),
                ingress: Ingress {
                    interface: Id {
                        id: alert.ifindex.map(Keyword),
                    },
                    vlan: Id {
                        id: alert.vlan.map(Keyword),
                    },
                },
            },
            process: alert
                .process
                .as_ref()
                .map(Process::from)
                .unwrap_or_default(),
            user: Named {
                name: alert.user.as_deref(),
            },
            host: Named {
                name: alert.host.as_deref(),
            },
            smbwatch: Smbwatch {
                share: alert.share.as_deref(),
                scan: alert.scan.as_ref().map(Scan::from),
                processes: alert.processes.iter().map(Process::from).collect(),
                original_timestamp,
            },
        }
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
