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
    /// Ingress interface index (in replay, the test run's: loopback, 1).
    pub ifindex: u32,
    /// Outer VLAN id, if the frame was tagged.
    pub vlan: Option<u16>,
    /// The SYN came as a first IP fragment (an evasion attempt).
    pub fragmented: bool,
    /// A Refused that follows this pair's Accepted: the server reset a
    /// SYN-ACK the client never confirmed (a forged or aborted handshake).
    pub after_accept: bool,
    /// The kernel's distinct-destination estimate for the source, when the
    /// source is tracked there (it opened another pair within the repeat
    /// horizon, which the daemon may not have been told of).
    pub kernel_fanout: Option<u16>,
}

impl GatewayEvent {
    /// An event without VLAN, flags or kernel estimate (ifindex 0): the
    /// usual start for scripted events in tests and benchmarks.
    pub fn new(
        ts: DateTime<Utc>,
        kind: GatewayEventKind,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Self {
        Self {
            ts,
            kind,
            src,
            dst,
            sport,
            dport,
            ifindex: 0,
            vlan: None,
            fragmented: false,
            after_accept: false,
            kernel_fanout: None,
        }
    }
}
