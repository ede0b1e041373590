//! The fleet's message format: a batch of gateway and host events per
//! JetStream message, versioned by its first byte.
//!
//! One message per event would cost the broker, the publisher and the
//! aggregator several microseconds each per event; a gateway batches what
//! one drain turn produced for one partition (at most [`BATCH_BYTES`]), so
//! batching adds no delay. Gateway events are the bulk (one per new pair and
//! per answer): a fixed 54-byte little-endian body; host events are rare and
//! rich: the [`HostEvent`]'s JSON. `docs/fleet.md` documents both.
//!
//! ```text
//! message: version (1 byte, = 1), then records until the end
//! record:  type (1 byte), body length (u32), body
//!
//! offset size  gateway event body (type 1, 54 bytes)
//!  0     1     kind: 0 new pair, 1 accepted, 2 refused
//!  1     1     flags: 1 vlan, 2 fragmented, 4 after_accept, 8 kernel_fanout
//!  2     8     time, ns since the Unix epoch (i64)
//! 10    16     client address (IPv6; IPv4 as ::ffff:a.b.c.d)
//! 26    16     server address
//! 42     2     client port
//! 44     2     server port
//! 46     4     ingress ifindex on the gateway
//! 50     2     VLAN id (0 without the vlan flag)
//! 52     2     kernel fan-out estimate (0 without its flag)
//!
//! host event body (type 2): the event's JSON
//! ```
//!
//! Decoding trusts nothing: a broker may carry messages from any gateway
//! that holds credentials. Lengths, kinds and string caps are checked and a
//! bad record is an error naming the problem, never a panic.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};
use smbwatch_common::addr::{from_mapped, to_mapped};

use crate::{
    event::{GatewayEvent, GatewayEventKind},
    hostlog::HostEvent,
};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Size of a gateway event's body.
pub const GATEWAY_LEN: usize = 54;
/// Record header: type and body length.
const HEADER: usize = 5;
/// A gateway closes a batch once it holds this many bytes.
pub const BATCH_BYTES: usize = 32 * 1024;
/// Largest message accepted: a full batch plus one host event (whose JSON
/// at its caps, escaped, stays well under 128 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;

const TYPE_GATEWAY: u8 = 1;
const TYPE_HOST: u8 = 2;

const FLAG_VLAN: u8 = 1;
const FLAG_FRAGMENTED: u8 = 2;
const FLAG_AFTER_ACCEPT: u8 = 4;
const FLAG_FANOUT: u8 = 8;

/// One decoded record of a fleet message.
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
    #[error("message of {0} bytes (expected 1 to {MAX_MESSAGE})")]
    Size(usize),
    /// A record runs past the end of the message.
    #[error("record at byte {0} runs past the end of the message")]
    Truncated(usize),
    /// Written by another format version.
    #[error(
        "format version {0} (this build reads version {VERSION}; upgrade the aggregator first)"
    )]
    Version(u8),
    /// An unknown record type.
    #[error("unknown record type {0}")]
    Type(u8),
    /// A gateway event body of the wrong length.
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

/// A message being built: events of one partition, in order.
#[derive(Clone, Debug)]
pub struct Batch {
    buf: Vec<u8>,
    records: u32,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch (just the version byte).
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1024);
        buf.push(VERSION);
        Self { buf, records: 0 }
    }

    /// Appends a gateway event.
    pub fn push_gateway(&mut self, ev: &GatewayEvent) {
        let kind = match ev.kind {
            GatewayEventKind::NewPair => 0u8,
            GatewayEventKind::Accepted => 1,
            GatewayEventKind::Refused => 2,
            GatewayEventKind::Active => 3,
            GatewayEventKind::Confirmed => 4,
            GatewayEventKind::Unparsed => 5,
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
        let out = &mut self.buf;
        out.push(TYPE_GATEWAY);
        out.extend_from_slice(&(GATEWAY_LEN as u32).to_le_bytes());
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&ev.ts.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&v6(ev.src).octets());
        out.extend_from_slice(&v6(ev.dst).octets());
        out.extend_from_slice(&ev.sport.to_le_bytes());
        out.extend_from_slice(&ev.dport.to_le_bytes());
        out.extend_from_slice(&ev.ifindex.to_le_bytes());
        out.extend_from_slice(&ev.vlan.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&ev.kernel_fanout.unwrap_or(0).to_le_bytes());
        self.records += 1;
    }

    /// Appends a host event (its JSON).
    pub fn push_host(&mut self, ev: &HostEvent) {
        let start = self.buf.len();
        self.buf.push(TYPE_HOST);
        self.buf.extend_from_slice(&[0; 4]);
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, ev);
        let len = (self.buf.len() - start - HEADER) as u32;
        self.buf[start + 1..start + HEADER].copy_from_slice(&len.to_le_bytes());
        self.records += 1;
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no event was added.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Events so far.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Checks a message's size and version; its records follow.
pub fn decode(msg: &[u8]) -> Result<Records<'_>, WireError> {
    if msg.is_empty() || msg.len() > MAX_MESSAGE {
        return Err(WireError::Size(msg.len()));
    }
    if msg[0] != VERSION {
        return Err(WireError::Version(msg[0]));
    }
    Ok(Records { msg, at: 1 })
}

/// The records of a message, in order. A bad record is an error and the
/// next ones are still read; a record whose length runs past the end ends
/// the message with an error.
pub struct Records<'a> {
    msg: &'a [u8],
    at: usize,
}

impl Iterator for Records<'_> {
    type Item = Result<FleetEvent, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.msg[self.at..];
        if rest.is_empty() {
            return None;
        }
        let start = self.at;
        let body = rest
            .get(1..HEADER)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|len| rest.get(HEADER..HEADER.checked_add(len)?));
        let Some(body) = body else {
            self.at = self.msg.len();
            return Some(Err(WireError::Truncated(start)));
        };
        self.at += HEADER + body.len();
        Some(match rest[0] {
            TYPE_GATEWAY => decode_gateway(body).map(FleetEvent::Gateway),
            TYPE_HOST => serde_json::from_slice::<HostEvent>(body)
                .map_err(|e| WireError::Host(e.to_string()))
                .and_then(|ev| {
                    check_caps(&ev)?;
                    Ok(FleetEvent::Host(Box::new(ev)))
                }),
            t => Err(WireError::Type(t)),
        })
    }
}

fn decode_gateway(m: &[u8]) -> Result<GatewayEvent, WireError> {
    let m: &[u8; GATEWAY_LEN] = m
        .try_into()
        .map_err(|_| WireError::GatewayLength(m.len()))?;
    let kind = match m[0] {
        0 => GatewayEventKind::NewPair,
        1 => GatewayEventKind::Accepted,
        2 => GatewayEventKind::Refused,
        3 => GatewayEventKind::Active,
        4 => GatewayEventKind::Confirmed,
        5 => GatewayEventKind::Unparsed,
        k => return Err(WireError::Kind(k)),
    };
    let flags = m[1];
    let u16_at = |i: usize| u16::from_le_bytes([m[i], m[i + 1]]);
    let addr = |i: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&m[i..i + 16]);
        unmap(Ipv6Addr::from(o))
    };
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&m[2..10]);
    let mut ifindex = [0u8; 4];
    ifindex.copy_from_slice(&m[46..50]);
    Ok(GatewayEvent {
        ts: DateTime::<Utc>::from_timestamp_nanos(i64::from_le_bytes(ns)),
        kind,
        src: addr(10),
        dst: addr(26),
        sport: u16_at(42),
        dport: u16_at(44),
        ifindex: u32::from_le_bytes(ifindex),
        vlan: (flags & FLAG_VLAN != 0).then(|| u16_at(50)),
        fragmented: flags & FLAG_FRAGMENTED != 0,
        after_accept: flags & FLAG_AFTER_ACCEPT != 0,
        kernel_fanout: (flags & FLAG_FANOUT != 0).then(|| u16_at(52)),
        activity: None,
        src_mac: None,
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
    to_mapped(a)
}

fn unmap(a: Ipv6Addr) -> IpAddr {
    from_mapped(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlog::{Account, HostRecord, ShareAccess, ShareLog, TimeSource};

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
            activity: None,
            src_mac: None,
        }
    }

    fn host() -> HostEvent {
        HostEvent {
            ts: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            time_source: TimeSource::Utc,
            host: Some("ws1.example".into()),
            channel: Some("Security".into()),
            record_id: Some(7),
            record: HostRecord::ShareAccess(ShareAccess {
                log: ShareLog::Share,
                src_ip: Some("203.0.113.10".parse().unwrap()),
                src_port: Some(40000),
                share_name: Some("ADMIN$".into()),
                relative_target: None,
                access_mask: None,
                logon_id: None,
                account: Account {
                    domain: Some("EXAMPLE".into()),
                    name: Some("alice".into()),
                    sid: Some("S-1-5-21-1-2-3-1104".into()),
                },
            }),
        }
    }

    fn all(msg: &[u8]) -> Vec<Result<FleetEvent, WireError>> {
        decode(msg).unwrap().collect()
    }

    #[test]
    fn a_batch_round_trips_gateway_and_host_events_in_order() {
        let plain = GatewayEvent {
            vlan: None,
            kernel_fanout: None,
            activity: None,
            src_mac: None,
            fragmented: false,
            after_accept: false,
            kind: GatewayEventKind::NewPair,
            dst: "198.51.100.7".parse().unwrap(),
            ..gateway()
        };
        let mut b = Batch::new();
        b.push_gateway(&gateway());
        b.push_host(&host());
        b.push_gateway(&plain);
        assert_eq!(b.records(), 3);
        let msg = b.into_bytes();
        assert_eq!(
            all(&msg),
            [
                Ok(FleetEvent::Gateway(gateway())),
                Ok(FleetEvent::Host(Box::new(host()))),
                Ok(FleetEvent::Gateway(plain)),
            ]
        );
        // 1 version byte, then 59 bytes per gateway event.
        let mut one = Batch::new();
        one.push_gateway(&gateway());
        assert_eq!(one.len(), 1 + HEADER + GATEWAY_LEN);
    }

    #[test]
    fn hostile_messages_are_named_errors() {
        assert!(matches!(decode(&[]), Err(WireError::Size(0))));
        assert!(matches!(
            decode(&vec![1; MAX_MESSAGE + 1]),
            Err(WireError::Size(_))
        ));
        assert!(matches!(decode(&[2, 1, 0]), Err(WireError::Version(2))));
        let mut b = Batch::new();
        b.push_gateway(&gateway());
        let good = b.into_bytes();
        // A record past the end, an unknown type, a wrong length, a bad
        // kind: each an error; later good records are still read.
        assert_eq!(all(&good[..40]), [Err(WireError::Truncated(1))]);
        let mut unknown = vec![1, 9, 0, 0, 0, 0];
        unknown.extend_from_slice(&good[1..]);
        assert_eq!(
            all(&unknown),
            [Err(WireError::Type(9)), Ok(FleetEvent::Gateway(gateway()))]
        );
        assert_eq!(
            all(&[1, 1, 3, 0, 0, 0, 0, 0, 0]),
            [Err(WireError::GatewayLength(3))]
        );
        let mut bad_kind = good.clone();
        bad_kind[HEADER + 1] = 7;
        assert_eq!(all(&bad_kind), [Err(WireError::Kind(7))]);
        // A length field of 4 GiB does not overflow or allocate.
        assert_eq!(
            all(&[1, 2, 0xff, 0xff, 0xff, 0xff, b'{']),
            [Err(WireError::Truncated(1))]
        );
        assert!(matches!(
            all(&[1, 2, 2, 0, 0, 0, b'{', 0xff])[..],
            [Err(WireError::Host(_))]
        ));
        let mut huge = host();
        if let HostRecord::ShareAccess(s) = &mut huge.record {
            s.relative_target = Some("x".repeat(crate::hostlog::MAX_PATH_BYTES + 1));
        }
        let mut b = Batch::new();
        b.push_host(&huge);
        assert_eq!(all(&b.into_bytes()), [Err(WireError::FieldTooLong)]);
        // A record whose event id and kind disagree (a 5140 sent as a
        // logon) is refused by name, not read as either.
        let json = serde_json::to_string(&host())
            .unwrap()
            .replace(r#""kind":"share_access""#, r#""kind":"logon""#);
        let mut msg = vec![VERSION, TYPE_HOST];
        msg.extend_from_slice(&(json.len() as u32).to_le_bytes());
        msg.extend_from_slice(json.as_bytes());
        match &all(&msg)[..] {
            [Err(WireError::Host(e))] => assert!(e.contains("event_id 5140"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
