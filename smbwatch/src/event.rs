//! Gateway events in user space: what the XDP program reported, decoded.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a gateway event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayEventKind {
    /// First bare SYN of a (source, destination) pair.
    NewPair,
    /// The server answered the pair with SYN-ACK.
    Accepted,
    /// The server answered the pair with RST.
    Refused,
}

/// One decoded ring-buffer record. For every kind `src` is the client (the
/// SYN sender) and `dst` the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayEvent {
    /// Wall-clock time (UTC) of the packet; in replay, the capture's timestamp.
    pub ts: DateTime<Utc>,
    /// What happened.
    pub kind: GatewayEventKind,
    /// Client address (IPv4-mapped addresses are returned as IPv4).
    pub src: IpAddr,
    /// Server address.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Server port (a monitored port).
    pub dport: u16,
    /// Ingress interface index (0 in replay).
    pub ifindex: u32,
    /// Outer VLAN id, if the frame was tagged.
    pub vlan: Option<u16>,
}
