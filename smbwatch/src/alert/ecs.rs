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

use chrono::{DateTime, SecondsFormat, Utc};
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

/// A time as ECS dates are written: RFC 3339, UTC, milliseconds, `Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

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

impl From<&ScanEvidence> for Scan {
    fn from(ev: &ScanEvidence) -> Self {
        Self {
            distinct_destinations: ev.distinct_destinations,
            destinations: ev.destinations.clone(),
            syns: ev.syns,
            accepted: ev.accepted,
            refused: ev.refused,
            window_secs: ev.window_secs,
            first_seen: Timestamp(ev.first_seen),
            last_seen: Timestamp(ev.last_seen),
        }
    }
}

impl<'a> Document<'a> {
    /// The document of one alert.
    pub fn new(alert: &'a Alert) -> Self {
        let techniques = alert.techniques.as_slice();
        Self {
            timestamp: Timestamp(alert.ts),
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
            },
        }
    }
}
