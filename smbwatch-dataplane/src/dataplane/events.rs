//! The event ring buffer's records: decoded, drained in order, and turned
//! into the core's gateway events.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use smbwatch_common::{
    addr::MacAddr, AddrKey, Event, EventKind, EVENT_FLAG_AFTER_ACCEPT, EVENT_FLAG_FRAGMENTED,
    EVENT_FLAG_REPEAT, EVENT_FLAG_SEEN_ACCEPTED, EVENT_FLAG_SEEN_CONFIRMED,
    EVENT_FLAG_SEEN_REFUSED, EVENT_FLAG_VLAN,
};
use smbwatch_core::event::{GatewayEvent, GatewayEventKind, PairActivity};

/// The address a 16-byte key holds; IPv4-mapped keys become IPv4.
pub fn addr_to_ip(k: &AddrKey) -> IpAddr {
    k.ip()
}

/// The 16-byte key for an address.
pub fn ip_to_addr(ip: IpAddr) -> AddrKey {
    AddrKey::from_ip(ip)
}

/// Decodes one ring-buffer record; `None` for a record of the wrong size or kind.
pub fn decode_event(bytes: &[u8]) -> Option<(Event, EventKind)> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is repr(C) plain data and the length was checked; the
    // ring buffer only guarantees 8-byte alignment, so read unaligned anyway.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    let kind = EventKind::try_from(ev.kind).ok()?;
    Some((ev, kind))
}

/// Turns a kernel event into a gateway event stamped with `ts`.
pub fn to_gateway_event(
    ev: &Event,
    kind: EventKind,
    ts: chrono::DateTime<chrono::Utc>,
) -> GatewayEvent {
    let activity = (kind == EventKind::Active).then(|| PairActivity {
        syns: u32::from(ev.syns),
        accepted: ev.flags & EVENT_FLAG_SEEN_ACCEPTED != 0,
        confirmed: ev.flags & EVENT_FLAG_SEEN_CONFIRMED != 0,
        refused: ev.flags & EVENT_FLAG_SEEN_REFUSED != 0,
    });
    GatewayEvent {
        ts,
        kind: match kind {
            EventKind::NewPair => GatewayEventKind::NewPair,
            EventKind::Active => GatewayEventKind::Active,
            EventKind::Accepted => GatewayEventKind::Accepted,
            EventKind::Confirmed => GatewayEventKind::Confirmed,
            EventKind::Refused => GatewayEventKind::Refused,
            EventKind::Unparsed => GatewayEventKind::Unparsed,
        },
        src: addr_to_ip(&ev.src),
        dst: addr_to_ip(&ev.dst),
        sport: ev.sport,
        dport: ev.dport,
        ifindex: ev.ifindex,
        vlan: (ev.flags & EVENT_FLAG_VLAN != 0).then_some(ev.vlan),
        fragmented: ev.flags & EVENT_FLAG_FRAGMENTED != 0,
        after_accept: ev.flags & EVENT_FLAG_AFTER_ACCEPT != 0,
        kernel_fanout: (ev.flags & EVENT_FLAG_REPEAT != 0).then_some(ev.fanout),
        activity,
        // All zero: no Ethernet header behind the record (replay of raw-IP
        // and Linux-cooked captures frames them with zero MACs).
        src_mac: (ev.mac != MacAddr::ZERO).then_some(ev.mac),
    }
}

/// Reads every record in the ring buffer, in order, handing each decoded
/// event to `f`; the one reader for the daemon, replay and the kernel tests.
/// Returns how many records were read and how many of them were malformed.
pub fn drain(rb: &mut RingBuf<MapData>, mut f: impl FnMut(&Event, EventKind)) -> Drained {
    let mut n = Drained::default();
    while let Some(item) = rb.next() {
        n.records += 1;
        match decode_event(&item) {
            Some((ev, kind)) => f(&ev, kind),
            None => n.malformed += 1,
        }
    }
    n
}

/// What one [`drain`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records read.
    pub records: u64,
    /// Records of the wrong size or an unknown kind (skipped).
    pub malformed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_round_trip() {
        for ip in ["192.0.2.1", "2001:db8::7", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(addr_to_ip(&ip_to_addr(ip)), ip);
        }
    }

    #[test]
    fn decode_rejects_short_and_unknown() {
        assert!(decode_event(&[0u8; 10]).is_none());
        let ev = Event {
            kind: 9,
            ..Default::default()
        };
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        };
        assert!(decode_event(bytes).is_none());
    }

    #[test]
    fn kernel_kinds_decode_to_gateway_kinds() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ev = Event {
            syns: 7,
            flags: EVENT_FLAG_SEEN_ACCEPTED | EVENT_FLAG_SEEN_CONFIRMED,
            ..Default::default()
        };
        let active = to_gateway_event(&ev, EventKind::Active, ts);
        assert_eq!(active.kind, GatewayEventKind::Active);
        assert_eq!(
            active.activity,
            Some(PairActivity {
                syns: 7,
                accepted: true,
                confirmed: true,
                refused: false,
            })
        );
        for (k, g) in [
            (EventKind::NewPair, GatewayEventKind::NewPair),
            (EventKind::Accepted, GatewayEventKind::Accepted),
            (EventKind::Confirmed, GatewayEventKind::Confirmed),
            (EventKind::Refused, GatewayEventKind::Refused),
            (EventKind::Unparsed, GatewayEventKind::Unparsed),
        ] {
            let e = to_gateway_event(&ev, k, ts);
            assert_eq!((e.kind, e.activity), (g, None));
        }
    }

    #[test]
    fn the_frame_mac_decodes_and_zero_means_none() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mac = MacAddr([0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]);
        let ev = Event {
            kind: EventKind::NewPair as u8,
            mac,
            ..Default::default()
        };
        let e = to_gateway_event(&ev, EventKind::NewPair, ts);
        assert_eq!(e.src_mac, Some(mac));
        let none = to_gateway_event(&Event::default(), EventKind::NewPair, ts);
        assert_eq!(none.src_mac, None, "all-zero MAC: no header was read");
    }
}
