//! The alert as an Elastic Common Schema document, typed.
//!
//! [`Document`] is the one place that knows which alert field goes where:
//! the JSON line is its serialisation, and the syslog structured data reads
//! its parameters from it. The structs mirror ECS's nesting (`event`,
//! `source`, `destination`, `rule`, `threat`, `observer`, `process`,
//! `user`, `host`, `related`, ...); fields ECS has no name for live under
//! `smbwatch`. Every field emitted is defined (type, array, allowed values)
//! in [`fields`], from ECS [`ECS_VERSION`]; a test holds documents of every
//! alert kind to it.
//!
//! Absent fields are omitted, never `null`, and so are objects left empty.
//! Adding a field is its declaration (with its `skip_serializing_if`), its
//! value in [`Document::new`] and its definition in [`fields`]; order of
//! declaration is order of output. What a kind means (rule, category,
//! techniques) is its entry in [`super::kinds`].
//!
//! This file assembles the document (and `event.id`); the objects it is
//! made of live by what they say: `network` (where), `actor` (who),
//! `extension` (`smbwatch.*`), [`threat`], [`smb`], [`time`].

mod actor;
mod extension;
pub mod fields;
pub mod gateway;
mod network;
pub mod smb;
pub mod threat;
pub mod time;
pub mod user;

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use sha1::{Digest, Sha1};

use super::kinds::{Category, EventType};
use super::sensor::{Sensor, OBSERVER_TYPE, PRODUCT, VERSION};
use super::{Alert, Severity};
use actor::push_unique;
pub use actor::{Host, Parent, Process, Related, User};
pub use extension::{Scan, Smbwatch};
pub use network::{Direction, Endpoint, Id, Ingress, Interface, Network, Observer};
pub use threat::{Threat, THREAT_FRAMEWORK};
pub use time::{Keyword, Timestamp};

/// The ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "9.4.0";
/// `event.module` of everything smbwatch writes.
pub const MODULE: &str = "smbwatch";
/// `event.dataset` of alerts.
pub const ALERT_DATASET: &str = "smbwatch.alert";
/// `rule.ruleset` of every alert.
pub const RULESET: &str = "smbwatch";
/// Where `rule.reference` points: the rule's section in the SIEM guide.
pub const RULE_DOCS: &str = "docs/siem.md";

/// What `skip_serializing_if` asks of an object: would it write nothing
/// (every field absent)? Absent objects are left out, never written `{}`.
/// Written per struct rather than found by serialising (documents are
/// built for every alert and event line, and nested checks would
/// serialise each level again); the test
/// `empty_checks_match_serialisation` holds every check to what the object
/// serialises to, so a field added without its check fails there.
pub trait Empty {
    /// True when the object would serialise to `{}`.
    fn is_empty(&self) -> bool;
}

fn empty<T: Empty>(v: &T) -> bool {
    v.is_empty()
}

/// The oracle of [`Empty`]: `v` serialises to nothing (`null`, `{}`, `[]`).
#[cfg(test)]
pub(crate) fn serializes_to_nothing<T: Serialize>(v: &T) -> bool {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.is_empty(),
        Ok(serde_json::Value::Array(a)) => a.is_empty(),
        Ok(serde_json::Value::Null) => true,
        _ => false,
    }
}

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// When the alerting condition held (on replay, capture or log time).
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// One-line summary.
    pub message: &'a str,
    /// `ecs.*`.
    pub ecs: Ecs,
    /// `event.*`.
    pub event: Event,
    /// `rule.*`.
    pub rule: Rule,
    /// `source.*`.
    #[serde(skip_serializing_if = "empty")]
    pub source: Endpoint,
    /// `destination.*`.
    #[serde(skip_serializing_if = "empty")]
    pub destination: Endpoint,
    /// `network.*`.
    #[serde(skip_serializing_if = "empty")]
    pub network: Network<'a>,
    /// `threat.*`.
    #[serde(skip_serializing_if = "empty")]
    pub threat: Threat,
    /// `observer.*`.
    pub observer: Observer<'a>,
    /// `process.*`.
    #[serde(skip_serializing_if = "empty")]
    pub process: Process<'a>,
    /// `user.*`.
    #[serde(skip_serializing_if = "empty")]
    pub user: User<'a>,
    /// `host.*`.
    #[serde(skip_serializing_if = "empty")]
    pub host: Host,
    /// `related.*`: every address, user and host named, for pivoting.
    #[serde(skip_serializing_if = "empty")]
    pub related: Related,
    /// `file.*`: the file an SMB alert names.
    #[serde(skip_serializing_if = "empty")]
    pub file: smb::File,
    /// `smb.*`: what the wire showed (SMB alerts).
    #[serde(skip_serializing_if = "empty")]
    pub smb: smb::Smb,
    /// `rpc.*`: the RPC interface and operations (SMB alerts).
    #[serde(skip_serializing_if = "empty")]
    pub rpc: smb::Rpc,
    /// `smbwatch.*`: what ECS has no field for.
    #[serde(skip_serializing_if = "empty")]
    pub smbwatch: Smbwatch<'a>,
}

/// `ecs.*`.
#[derive(Debug, Serialize)]
pub struct Ecs {
    /// [`ECS_VERSION`].
    pub version: &'static str,
}

/// `event.*`.
#[derive(Debug, Serialize)]
pub struct Event {
    /// Always `alert`.
    pub kind: &'static str,
    /// ECS categories of the kind.
    pub category: &'static [Category],
    /// ECS types of the kind.
    #[serde(rename = "type")]
    pub types: &'static [EventType],
    /// [`MODULE`].
    pub module: &'static str,
    /// [`ALERT_DATASET`].
    pub dataset: &'static str,
    /// The source event's code (a Windows event id), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Keyword<u32>>,
    /// Unique per alert, stable across re-delivery: see [`event_id`].
    pub id: String,
    /// ECS severity number (higher is worse).
    #[serde(serialize_with = "severity_number")]
    pub severity: Severity,
    /// `event.risk_score` (0-100): the severity number, Elastic's default
    /// risk of each severity (21, 47, 73, 99).
    pub risk_score: f64,
    /// When smbwatch raised the alert (wall clock, given to
    /// [`Document::new`]); differs from `@timestamp` on replay.
    pub created: Timestamp,
    /// Start of the evidence (scan alerts: the first event in the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// End of the evidence (scan alerts: the latest event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

fn severity_number<S: Serializer>(v: &Severity, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(v.number())
}

/// `rule.*`.
#[derive(Debug, Serialize)]
pub struct Rule {
    /// The kind's stable snake_case id.
    pub id: &'static str,
    /// Human-readable rule name.
    pub name: &'static str,
    /// The rule's section in [`RULE_DOCS`].
    pub reference: String,
    /// [`RULESET`].
    pub ruleset: &'static str,
    /// The rule's version.
    pub version: &'static str,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `event.id`: the first 128 bits of SHA-1 over smbwatch's own record of
/// the alert (kind, time, addresses, evidence, message, ...), in hex.
///
/// Unique per alert (two alerts differ in at least their time, kind or
/// subject) and stable: the same alert re-read from a file, re-sent after
/// a reconnect, or raised again by replaying the same capture and logs
/// keeps its id, so a SIEM can drop duplicates (e.g. use it as the
/// document `_id`). `event.created` is not hashed: it is when this copy
/// was raised, not what was seen.
pub fn event_id(alert: &Alert) -> String {
    /// Feeds what is written straight into the hash (no buffer).
    struct Hashing(Sha1);
    impl std::io::Write for Hashing {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha1::new());
    // Strings, numbers, addresses and times: serialising cannot fail.
    serde_json::to_writer(&mut h, alert).expect("an alert serialises");
    let digest = h.0.finalize();
    let mut id = String::with_capacity(32);
    for b in &digest[..16] {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

impl<'a> Document<'a> {
    /// The document of one alert, raised at `created` (the caller's wall
    /// clock: pure code is given the time) by `sensor`.
    pub fn new(alert: &'a Alert, sensor: &'a Sensor, created: DateTime<Utc>) -> Self {
        let spec = alert.kind.spec();
        let timestamp = Timestamp::new(alert.ts);
        let original_timestamp = (timestamp.time() != alert.ts)
            .then(|| alert.ts.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let account = alert.user.as_deref().map(user::split);
        let host = alert.host.as_deref().map(str::to_lowercase);
        let addr = alert.source_ip.or(alert.destination_ip);
        let mut related = Related::default();
        for ip in alert.source_ip.iter().chain(&alert.destination_ip) {
            push_unique(&mut related.ip, *ip);
        }
        for ip in alert.scan.iter().flat_map(|s| &s.destinations) {
            push_unique(&mut related.ip, *ip);
        }
        let members = alert.scan.iter().flat_map(|s| &s.prefix);
        for ip in members.flat_map(|p| &p.top_members) {
            push_unique(&mut related.ip, *ip);
        }
        if let Some(a) = &account {
            push_unique(&mut related.user, a.name.to_owned());
        }
        if let Some(id) = &alert.user_id {
            push_unique(&mut related.user, id.clone());
        }
        related.hosts.extend(host.clone());
        Self {
            timestamp,
            message: &alert.message,
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: Event {
                kind: "alert",
                category: spec.category,
                types: spec.types,
                module: MODULE,
                dataset: ALERT_DATASET,
                code: alert.event_code.map(Keyword),
                id: event_id(alert),
                severity: alert.severity,
                risk_score: f64::from(alert.severity.number()),
                created: Timestamp::new(created),
                start: alert.scan.as_ref().map(|s| Timestamp::new(s.first_seen)),
                end: alert.scan.as_ref().map(|s| Timestamp::new(s.last_seen)),
            },
            rule: Rule {
                id: spec.rule_id,
                name: spec.rule_name,
                reference: format!("{RULE_DOCS}#{}", spec.rule_id),
                ruleset: RULESET,
                version: spec.rule_version,
            },
            source: Endpoint {
                ip: alert.source_ip,
                port: alert.source_port,
                domain: alert.smb.as_ref().and_then(|s| s.workstation.clone()),
            },
            destination: Endpoint {
                ip: alert.destination_ip,
                port: alert.destination_port,
                domain: None,
            },
            network: Network {
                transport: (addr.is_some() || alert.destination_port.is_some()).then_some("tcp"),
                kind: addr.map(|a| match a {
                    IpAddr::V4(_) => "ipv4",
                    IpAddr::V6(_) => "ipv6",
                }),
                protocol: alert.smb.as_ref().map(|_| "smb"),
                direction: alert
                    .source_ip
                    .zip(alert.destination_ip)
                    .map(|(s, d)| Direction::of(s, d)),
                community_id: alert.community_id.as_deref(),
            },
            threat: Threat::of(&alert.techniques),
            observer: Observer {
                kind: OBSERVER_TYPE,
                vendor: PRODUCT,
                product: PRODUCT,
                version: VERSION,
                hostname: sensor.hostname.as_deref(),
                name: alert.observers.clone(),
                ingress: Ingress {
                    interface: Interface {
                        id: alert.ifindex.map(Keyword),
                        name: alert
                            .ifindex
                            .and_then(|i| sensor.interfaces.get(&i))
                            .map(String::as_str),
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
                .unwrap_or_default()
                .with_context(alert.process_context.as_ref()),
            user: User {
                name: account.as_ref().map(|a| a.name),
                domain: account.and_then(|a| a.domain),
                id: alert.user_id.as_deref(),
            },
            host: Host { name: host },
            related,
            file: smb::File::of_alert(alert.smb.as_ref()),
            smb: smb::Smb::of_alert(alert.smb.as_ref()),
            rpc: smb::Rpc::of_alert(alert.smb.as_ref()),
            smbwatch: Smbwatch {
                share: alert.share.as_deref(),
                scan: alert.scan.as_ref().map(Scan::from),
                processes: alert.processes.iter().map(Process::from).collect(),
                process_class: alert
                    .process_context
                    .as_ref()
                    .and_then(|c| c.class)
                    .map(|c| c.code()),
                original_timestamp,
            },
        }
    }
}

/// The sensor of unit tests: no host name, no interface names.
#[cfg(test)]
pub(crate) static TEST_SENSOR: Sensor = Sensor {
    hostname: None,
    interfaces: std::collections::BTreeMap::new(),
};

/// The document unit tests format: [`TEST_SENSOR`], raised at
/// 2026-01-02T03:04:05Z.
#[cfg(test)]
pub(crate) fn test_doc(alert: &Alert) -> Document<'_> {
    use chrono::TimeZone;
    let created = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    Document::new(alert, &TEST_SENSOR, created)
}
