//! Gateway events in user space: what the XDP program reported, decoded.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
pub use smbwatch_common::addr::MacAddr;

/// What a gateway event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayEventKind {
    /// First bare SYN of a (source, destination) pair.
    NewPair,
    /// First SYN of a known pair in a later activity epoch: the pair is in
    /// use again (a second sweep, a client's daily use). `activity` says
    /// what the kernel saw of it since its previous report.
    Active,
    /// The server answered the pair with SYN-ACK.
    Accepted,
    /// The client completed the handshake: its ACK after the SYN-ACK. Only
    /// this proves the client is real (a SYN-ACK answers spoofed SYNs too).
    Confirmed,
    /// The server answered the pair with RST.
    Refused,
    /// A packet to which the kernel could not walk to the TCP header (an
    /// IPv6 extension chain or VLAN stack past its bound). Addresses are
    /// the packet's; ports are unknown (0).
    Unparsed,
}

impl GatewayEventKind {
    /// Every kind, in wire order.
    pub const ALL: [Self; 6] = [
        Self::NewPair,
        Self::Active,
        Self::Accepted,
        Self::Confirmed,
        Self::Refused,
        Self::Unparsed,
    ];

    /// A pair's first SYN in this report period (the first ever, or the
    /// first of a later activity epoch): what fan-out counts.
    pub fn is_contact(self) -> bool {
        matches!(self, Self::NewPair | Self::Active)
    }
}

/// What the kernel saw of a pair between its previous report and this one
/// (carried by [`GatewayEventKind::Active`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PairActivity {
    /// SYNs of the pair since its previous report (saturating).
    pub syns: u32,
    /// A SYN-ACK was seen since the previous report.
    pub accepted: bool,
    /// The client's ACK after a SYN-ACK was seen since the previous report.
    pub confirmed: bool,
    /// A RST from the server was seen since the previous report.
    pub refused: bool,
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
    /// On [`GatewayEventKind::Active`]: the pair's activity since its
    /// previous report.
    pub activity: Option<PairActivity>,
    /// The Ethernet source address of the frame behind this event (the
    /// client's for SYNs and the client's ACK, the server's for answers):
    /// the host itself where the router is its first hop, else the previous
    /// router. `None` where no frame header was read (fleet wire, host logs).
    pub src_mac: Option<MacAddr>,
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
            activity: None,
            src_mac: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new` leaves VLAN, flags and the kernel's estimate unset (ifindex 0);
    /// a struct update changes only what it names. The event's ECS line is
    /// smbwatch-output's (`alert::ecs::gateway`).
    #[test]
    fn new_sets_only_the_pair_and_its_time() {
        let ev = GatewayEvent {
            ts: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            kind: GatewayEventKind::NewPair,
            src: "203.0.113.10".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            sport: 40000,
            dport: 445,
            ifindex: 3,
            vlan: None,
            fragmented: false,
            after_accept: false,
            kernel_fanout: Some(2),
            activity: None,
            src_mac: None,
        };
        let plain = GatewayEvent::new(ev.ts, ev.kind, ev.src, ev.dst, ev.sport, ev.dport);
        assert_eq!(
            plain,
            GatewayEvent {
                ifindex: 0,
                kernel_fanout: None,
                ..ev.clone()
            }
        );
        let r = GatewayEvent {
            kind: GatewayEventKind::Refused,
            vlan: Some(10),
            ..ev
        };
        assert_eq!(
            (r.kind, r.vlan, r.src, r.dst),
            (GatewayEventKind::Refused, Some(10), ev.src, ev.dst)
        );
    }
}
