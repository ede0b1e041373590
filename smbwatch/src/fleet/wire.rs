//! The fleet's message format: one gateway or host event per JetStream
//! message, versioned by its first byte.
//!
//! Gateway events are the bulk (one per new pair and per answer), so they
//! are a fixed 56-byte little-endian record; host events are rare and rich,
//! so they are the [`HostEvent`]'s JSON. `docs/fleet.md` documents both.
//!
//! ```text
//! offset size  gateway event (type 1)
//!  0     1     version = 1
//!  1     1     type = 1
//!  2     1     kind: 0 new pair, 1 accepted, 2 refused
//!  3     1     flags: 1 vlan, 2 fragmented, 4 after_accept, 8 kernel_fanout
//!  4     8     time, ns since the Unix epoch (i64)
//! 12    16     client address (IPv6; IPv4 as ::ffff:a.b.c.d)
//! 28    16     server address
//! 44     2     client port
//! 46     2     server port
//! 48     4     ingress ifindex on the gateway
//! 52     2     VLAN id (0 without the vlan flag)
//! 54     2     kernel fan-out estimate (0 without its flag)
//!
//!  0     1     version = 1
//!  1     1     type = 2: host event, the rest is its JSON
//! ```
//!
//! Decoding trusts nothing: a broker may carry messages from any gateway
//! that holds credentials. Lengths, kinds, times and string caps are checked
//! and a bad message is an error naming the problem, never a panic.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};

use crate::{
    event::{GatewayEvent, GatewayEventKind},
    hostlog::HostEvent,
};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Size of an encoded gateway event.
pub const GATEWAY_LEN: usize = 56;
/// Largest message accepted (a host event's JSON at its caps is under 20 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

const TYPE_GATEWAY: u8 = 1;
const TYPE_HOST: u8 = 2;

const FLAG_VLAN: u8 = 1;
const FLAG_FRAGMENTED: u8 = 2;
const FLAG_AFTER_ACCEPT: u8 = 4;
const FLAG_FANOUT: u8 = 8;

/// One decoded fleet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// A gateway's pair or answer event.
    Gateway(GatewayEvent),
    /// A host event a gateway received from its host-log inputs.
    Host(Box<HostEvent>),
}

/// Why a message was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty or longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes (expected 2 to {MAX_MESSAGE})")]
    Size(usize),
    /// Written by another format version.
    #[error(
        "format version {0} (this build reads version {VERSION}; upgrade the aggregator first)"
    )]
    Version(u8),
    /// An unknown message type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// A gateway event of the wrong length.
    #[error("gateway event of {0} bytes (expected {GATEWAY_LEN})")]
    GatewayLength(usize),
    /// An unknown event kind.
    #[error("unknown gateway event kind {0}")]
    Kind(u8),
    /// A host event that is not valid JSON of a host event.
    #[error("host event: {0}")]
    Host(String),
    /// A host event field longer than the parsers ever produce.
    #[error("a host event field is longer than the host-log parsers' caps (docs/hostlogs.md)")]
    FieldTooLong,
}

/// Encodes a gateway event (56 bytes).
pub fn encode_gateway(ev: &GatewayEvent, out: &mut Vec<u8>) {
    out.reserve(GATEWAY_LEN);
    let kind = match ev.kind {
        GatewayEventKind::NewPair => 0u8,
        GatewayEventKind::Accepted => 1,
        GatewayEventKind::Refused => 2,
    };
    let mut flags = 0;
    if ev.vlan.is_some() {
        flags |= FLAG_VLAN;
    }
    if ev.fragmented {
        flags |= FLAG_FRAGMENTED;
    }
    if ev.after_accept {
        flags |= FLAG_AFTER_ACCEPT;
    }
    if ev.kernel_fanout.is_some() {
        flags |= FLAG_FANOUT;
    }
    out.extend_from_slice(&[VERSION, TYPE_GATEWAY, kind, flags]);
    out.extend_from_slice(&ev.ts.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&v6(ev.src).octets());
    out.extend_from_slice(&v6(ev.dst).octets());
    out.extend_from_slice(&ev.sport.to_le_bytes());
    out.extend_from_slice(&ev.dport.to_le_bytes());
    out.extend_from_slice(&ev.ifindex.to_le_bytes());
    out.extend_from_slice(&ev.vlan.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&ev.kernel_fanout.unwrap_or(0).to_le_bytes());
}

/// Encodes a host event (its JSON after the two header bytes).
pub fn encode_host(ev: &HostEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, TYPE_HOST]);
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, ev);
}

/// Decodes one message.
pub fn decode(msg: &[u8]) -> Result<FleetEvent, WireError> {
    if msg.len() < 2 || msg.len() > MAX_MESSAGE {
        return Err(WireError::Size(msg.len()));
    }
    if msg[0] != VERSION {
        return Err(WireError::Version(msg[0]));
    }
    match msg[1] {
        TYPE_GATEWAY => decode_gateway(msg).map(FleetEvent::Gateway),
        TYPE_HOST => {
            let ev: HostEvent =
                serde_json::from_slice(&msg[2..]).map_err(|e| WireError::Host(e.to_string()))?;
            check_caps(&ev)?;
            Ok(FleetEvent::Host(Box::new(ev)))
        }
        t => Err(WireError::Type(t)),
    }
}

fn decode_gateway(m: &[u8]) -> Result<GatewayEvent, WireError> {
    let m: &[u8; GATEWAY_LEN] = m
        .try_into()
        .map_err(|_| WireError::GatewayLength(m.len()))?;
    let kind = match m[2] {
        0 => GatewayEventKind::NewPair,
        1 => GatewayEventKind::Accepted,
        2 => GatewayEventKind::Refused,
        k => return Err(WireError::Kind(k)),
    };
    let flags = m[3];
    let u16_at = |i: usize| u16::from_le_bytes([m[i], m[i + 1]]);
    let addr = |i: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&m[i..i + 16]);
        unmap(Ipv6Addr::from(o))
    };
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&m[4..12]);
    let mut ifindex = [0u8; 4];
    ifindex.copy_from_slice(&m[48..52]);
    Ok(GatewayEvent {
        ts: DateTime::<Utc>::from_timestamp_nanos(i64::from_le_bytes(ns)),
        kind,
        src: addr(12),
        dst: addr(28),
        sport: u16_at(44),
        dport: u16_at(46),
        ifindex: u32::from_le_bytes(ifindex),
        vlan: (flags & FLAG_VLAN != 0).then(|| u16_at(52)),
        fragmented: flags & FLAG_FRAGMENTED != 0,
        after_accept: flags & FLAG_AFTER_ACCEPT != 0,
        kernel_fanout: (flags & FLAG_FANOUT != 0).then(|| u16_at(54)),
    })
}

/// The caps the host-log parsers apply, checked again on what a broker
/// delivers, so a rogue publisher cannot make the aggregator's tables
/// hold more than a parsed event ever does.
fn check_caps(ev: &HostEvent) -> Result<(), WireError> {
    let mut capped = ev.clone();
    if capped.cap_fields() {
        return Err(WireError::FieldTooLong);
    }
    Ok(())
}

/// IPv4 as IPv4-mapped IPv6, so every address is 16 bytes on the wire.
pub(crate) fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn unmap(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlog::{HostEventKind, TimeSource};

    fn gateway() -> GatewayEvent {
        GatewayEvent {
            ts: DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
            kind: GatewayEventKind::Refused,
            src: "203.0.113.10".parse().unwrap(),
            dst: "2001:db8:b::7".parse().unwrap(),
            sport: 40000,
            dport: 445,
            ifindex: 3,
            vlan: Some(100),
            fragmented: true,
            after_accept: true,
            kernel_fanout: Some(17),
        }
    }

    fn host() -> HostEvent {
        HostEvent {
            ts: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            time_source: TimeSource::Utc,
            host: Some("ws1.example".into()),
            channel: Some("Security".into()),
            event_id: 5140,
            kind: HostEventKind::ShareAccess,
            record_id: Some(7),
            src_ip: Some("203.0.113.10".parse().unwrap()),
            src_port: Some(40000),
            dst_ip: None,
            dst_port: None,
            protocol: None,
            direction: None,
            pid: None,
            image: None,
            image_name: None,
            user: Some("EXAMPLE\\alice".into()),
            logon_type: None,
            share_name: Some("ADMIN$".into()),
            relative_target: None,
            target_filename: None,
            parent_image: None,
            command_line: None,
            user_sid: Some("S-1-5-21-1-2-3-1104".into()),
            process_guid: None,
            parent_process_guid: None,
            parent_pid: None,
            access_mask: None,
        }
    }

    #[test]
    fn gateway_events_round_trip_in_56_bytes() {
        for ev in [
            gateway(),
            GatewayEvent {
                vlan: None,
                kernel_fanout: None,
                fragmented: false,
                after_accept: false,
                kind: GatewayEventKind::NewPair,
                dst: "198.51.100.7".parse().unwrap(),
                ..gateway()
            },
        ] {
            let mut buf = Vec::new();
            encode_gateway(&ev, &mut buf);
            assert_eq!(buf.len(), GATEWAY_LEN);
            assert_eq!(decode(&buf), Ok(FleetEvent::Gateway(ev)));
        }
    }

    #[test]
    fn host_events_round_trip() {
        let mut buf = Vec::new();
        encode_host(&host(), &mut buf);
        assert_eq!(decode(&buf), Ok(FleetEvent::Host(Box::new(host()))));
    }

    #[test]
    fn hostile_messages_are_named_errors() {
        let mut good = Vec::new();
        encode_gateway(&gateway(), &mut good);
        assert_eq!(decode(&[]), Err(WireError::Size(0)));
        assert_eq!(
            decode(&vec![1; MAX_MESSAGE + 1]),
            Err(WireError::Size(MAX_MESSAGE + 1))
        );
        assert_eq!(decode(&[2, 1, 0]), Err(WireError::Version(2)));
        assert_eq!(decode(&[1, 9, 0]), Err(WireError::Type(9)));
        assert_eq!(decode(&good[..40]), Err(WireError::GatewayLength(40)));
        let mut bad_kind = good.clone();
        bad_kind[2] = 7;
        assert_eq!(decode(&bad_kind), Err(WireError::Kind(7)));
        assert!(matches!(
            decode(&[1, 2, b'{', 0xff]),
            Err(WireError::Host(_))
        ));
        let mut huge = host();
        huge.command_line = Some("x".repeat(crate::hostlog::MAX_COMMAND_LINE_BYTES + 1));
        let mut buf = Vec::new();
        encode_host(&huge, &mut buf);
        assert_eq!(decode(&buf), Err(WireError::FieldTooLong));
    }
}
