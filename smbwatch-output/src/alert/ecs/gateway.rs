//! Gateway event lines (`--events`) as ECS documents with `event.kind:
//! event`, so they can share a stream (and an index) with the alerts.
//!
//! `new_pair` is `event.action: new_pair`, `event.type: [connection,
//! start]`; an answer is `event.action: accepted` (`event.outcome:
//! success`) or `refused` (`event.outcome: failure`, `event.type:
//! [connection, end]`). The source is always the client (the SYN sender).

use serde::Serialize;

use super::{empty, Ecs, Empty, Endpoint, Id, Keyword, Timestamp, ECS_VERSION, MODULE};
use smbwatch_core::event::{GatewayEvent, GatewayEventKind};

/// `event.dataset` of gateway event lines.
pub const GATEWAY_DATASET: &str = "smbwatch.gateway";

/// One gateway event line.
#[derive(Debug, Serialize)]
pub struct EventLine {
    /// Packet time (in replay, the capture's).
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// `ecs.*`.
    pub ecs: Ecs,
    /// `event.*`.
    pub event: LineEvent,
    /// The client.
    pub source: Endpoint,
    /// The server.
    pub destination: Endpoint,
    /// `network.*`.
    pub network: LineNetwork,
    /// `observer.ingress.*`.
    pub observer: LineObserver,
    /// `smbwatch.*`: the kernel's flags and hints.
    #[serde(skip_serializing_if = "empty")]
    pub smbwatch: LineSmbwatch,
}

/// `event.*` of an event line.
#[derive(Debug, Serialize)]
pub struct LineEvent {
    /// Always `event`.
    pub kind: &'static str,
    /// `["network"]` (SMB lines add `authentication` or `file`).
    pub category: &'static [&'static str],
    /// See the module documentation.
    #[serde(rename = "type")]
    pub types: &'static [&'static str],
    /// `new_pair`, `accepted` or `refused` (SMB lines: `smb_tree_connect`…).
    pub action: &'static str,
    /// `success` (accepted), `failure` (refused); none for `new_pair`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// [`MODULE`].
    pub module: &'static str,
    /// [`GATEWAY_DATASET`] (SMB lines: `smbwatch.smb`).
    pub dataset: &'static str,
}

/// `network.*` of an event line.
#[derive(Debug, Serialize)]
pub struct LineNetwork {
    /// `tcp`.
    pub transport: &'static str,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `smb` on SMB lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
}

/// `observer.*` of an event line.
#[derive(Debug, Serialize)]
pub struct LineObserver {
    /// `observer.ingress.*`.
    pub ingress: LineIngress,
}

/// `observer.ingress.*` of an event line.
#[derive(Debug, Serialize)]
pub struct LineIngress {
    /// Interface index (in replay, the capture interface's id + 1).
    pub interface: Id<u32>,
    /// Outer VLAN id, when tagged.
    #[serde(skip_serializing_if = "empty")]
    pub vlan: Id<u16>,
}

/// `smbwatch.*` of an event line.
#[derive(Debug, Default, Serialize)]
pub struct LineSmbwatch {
    /// `new_pair`: the SYN came as a first IP fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragmented: Option<bool>,
    /// `new_pair`: the kernel's distinct-destination estimate for the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_fanout: Option<u16>,
    /// `refused`: the server reset a SYN-ACK the client never confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_accept: Option<bool>,
}

impl Empty for LineSmbwatch {
    fn is_empty(&self) -> bool {
        self.fragmented.is_none() && self.kernel_fanout.is_none() && self.after_accept.is_none()
    }
}

impl EventLine {
    /// The line of one gateway event.
    pub fn new(ev: &GatewayEvent) -> Self {
        let (types, action, outcome): (&'static [&'static str], _, _) = match ev.kind {
            GatewayEventKind::NewPair => (&["connection", "start"], "new_pair", None),
            GatewayEventKind::Active => (&["connection", "start"], "active", None),
            GatewayEventKind::Accepted => (&["connection"], "accepted", Some("success")),
            GatewayEventKind::Confirmed => (&["connection"], "confirmed", Some("success")),
            GatewayEventKind::Refused => (&["connection", "end"], "refused", Some("failure")),
            GatewayEventKind::Unparsed => (&["info"], "unparsed", None),
        };
        let new_pair = ev.kind.is_contact();
        Self {
            timestamp: Timestamp::new(ev.ts),
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: LineEvent {
                kind: "event",
                category: &["network"],
                types,
                action,
                outcome,
                module: MODULE,
                dataset: GATEWAY_DATASET,
            },
            source: Endpoint {
                ip: Some(ev.src),
                port: Some(ev.sport),
                domain: None,
            },
            destination: Endpoint {
                ip: Some(ev.dst),
                port: Some(ev.dport),
                domain: None,
            },
            network: LineNetwork {
                transport: "tcp",
                kind: if ev.src.is_ipv4() { "ipv4" } else { "ipv6" },
                protocol: None,
            },
            observer: LineObserver {
                ingress: LineIngress {
                    interface: Id {
                        id: Some(Keyword(ev.ifindex)),
                    },
                    vlan: Id {
                        id: ev.vlan.map(Keyword),
                    },
                },
            },
            smbwatch: LineSmbwatch {
                fragmented: new_pair.then_some(ev.fragmented),
                kernel_fanout: ev.kernel_fanout.filter(|_| new_pair),
                after_accept: (ev.kind == GatewayEventKind::Refused).then_some(ev.after_accept),
            },
        }
    }
}

/// A gateway event as an ECS event line (the `run` and `replay --events`
/// output). A trait because the event is `smbwatch-core`'s and its
/// document this crate's.
pub trait ToEventLine {
    /// The event as its typed ECS document (serialise it straight to text
    /// on hot paths).
    fn to_ecs(&self) -> EventLine;

    /// The event as one ECS document (`event.kind: event`).
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_ecs()).expect("an event line serialises")
    }
}

impl ToEventLine for GatewayEvent {
    fn to_ecs(&self) -> EventLine {
        EventLine::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn event_lines_are_ecs() {
        let ev = GatewayEvent {
            ifindex: 3,
            kernel_fanout: Some(2),
            ..GatewayEvent::new(
                DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                GatewayEventKind::NewPair,
                "203.0.113.10".parse().unwrap(),
                "198.51.100.7".parse().unwrap(),
                40000,
                445,
            )
        };
        assert_eq!(
            ev.to_json().to_string(),
            r#"{"@timestamp":"2023-11-14T22:13:20.000Z","ecs":{"version":"9.4.0"},"event":{"kind":"event","category":["network"],"type":["connection","start"],"action":"new_pair","module":"smbwatch","dataset":"smbwatch.gateway"},"source":{"ip":"203.0.113.10","port":40000},"destination":{"ip":"198.51.100.7","port":445},"network":{"transport":"tcp","type":"ipv4"},"observer":{"ingress":{"interface":{"id":"3"}}},"smbwatch":{"fragmented":false,"kernel_fanout":2}}"#
        );
        let r = GatewayEvent {
            kind: GatewayEventKind::Refused,
            vlan: Some(10),
            ..ev
        };
        let j = r.to_json();
        assert_eq!(j["event"]["action"], "refused");
        assert_eq!(j["event"]["outcome"], "failure");
        assert_eq!(j["source"]["ip"], "203.0.113.10");
        assert_eq!(j["destination"]["ip"], "198.51.100.7");
        assert_eq!(j["observer"]["ingress"]["vlan"]["id"], "10");
        assert_eq!(j["smbwatch"], serde_json::json!({"after_accept": false}));
        for kind in GatewayEventKind::ALL {
            let v = GatewayEvent { kind, ..ev.clone() }.to_json();
            let errors = super::super::fields::validate(&v);
            assert!(errors.is_empty(), "{kind:?}: {errors:#?}");
        }
    }
}
