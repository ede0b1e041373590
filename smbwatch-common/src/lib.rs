//! Types shared by the smbwatch XDP program and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding and no `bool`, so both
//! sides agree on the byte layout and the verifier never sees uninitialised
//! padding. With the `user` feature the types implement [`aya::Pod`].
#![no_std]

/// A 16-byte IP address: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so one map serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    /// Address bytes in network order.
    pub addr: [u8; 16],
}

impl AddrKey {
    /// The IPv4-mapped form of an IPv4 address given in network byte order.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self { addr }
    }
}

/// Per-source counters (value of [`SOURCES_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Bare SYNs to a monitored port, retransmissions included.
    pub syns: u64,
    /// Distinct (source, destination) pairs this source opened.
    pub pairs: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the first SYN.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns` of the latest SYN.
    pub last_seen_ns: u64,
}

/// Key of [`PAIRS_MAP`]: client and server of a monitored-port connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// The host that sent the SYN.
    pub src: AddrKey,
    /// The host it was sent to.
    pub dst: AddrKey,
}

/// Value of [`PAIRS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairState {
    /// `bpf_ktime_get_ns` of the first SYN of the pair.
    pub first_seen_ns: u64,
    /// Monitored destination port of the first SYN.
    pub dport: u16,
    /// 0 until answered, then [`EVENT_ACCEPTED`] or [`EVENT_REFUSED`].
    pub answer: u8,
    /// Explicit padding.
    pub _pad: [u8; 5],
}

/// First SYN of a (source, destination) pair.
pub const EVENT_NEW_PAIR: u8 = 1;
/// First SYN-ACK answering a known pair.
pub const EVENT_ACCEPTED: u8 = 2;
/// First RST answering a known pair.
pub const EVENT_REFUSED: u8 = 3;

/// [`Event::flags`] bit: the frame carried at least one VLAN tag.
pub const EVENT_FLAG_VLAN: u8 = 1;

/// A ring-buffer record. For every kind `src` is the client (the SYN sender)
/// and `dst` the server, so a response names the pair it answers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns` when the packet was seen.
    pub ts_ns: u64,
    /// Client address.
    pub src: AddrKey,
    /// Server address.
    pub dst: AddrKey,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Client port.
    pub sport: u16,
    /// Server (monitored) port.
    pub dport: u16,
    /// Outer VLAN id, valid when `flags & EVENT_FLAG_VLAN`.
    pub vlan: u16,
    /// One of the `EVENT_*` kinds.
    pub kind: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 4],
}

/// Indices of the per-CPU stats array ([`STATS_MAP`]).
pub mod stat {
    /// Every frame the program saw.
    pub const PACKETS: u32 = 0;
    /// IPv4 packets.
    pub const IPV4: u32 = 1;
    /// IPv6 packets.
    pub const IPV6: u32 = 2;
    /// Frames with one or two VLAN tags.
    pub const VLAN: u32 = 3;
    /// Bare SYNs to a monitored port.
    pub const MONITORED_SYNS: u32 = 4;
    /// New (source, destination) pairs.
    pub const NEW_PAIRS: u32 = 5;
    /// First answers (SYN-ACK or RST) to known pairs.
    pub const RESPONSES: u32 = 6;
    /// Frame shorter than an Ethernet header.
    pub const MALFORMED_ETH: u32 = 7;
    /// Truncated VLAN tag.
    pub const MALFORMED_VLAN: u32 = 8;
    /// Truncated IPv4 header or IHL below 5.
    pub const MALFORMED_IPV4: u32 = 9;
    /// Truncated IPv6 header or extension header.
    pub const MALFORMED_IPV6: u32 = 10;
    /// Truncated TCP header or data offset below 5.
    pub const MALFORMED_TCP: u32 = 11;
    /// IPv6 extension-header chain longer than the program walks.
    pub const IPV6_EXT_LIMIT: u32 = 12;
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 13;
    /// Failed map inserts (other than "already exists").
    pub const MAP_UPDATE_FAIL: u32 = 14;
    /// Number of stat slots.
    pub const COUNT: u32 = 15;

    /// Names in index order, as the daemon prints them.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets",
        "ipv4",
        "ipv6",
        "vlan",
        "monitored_syns",
        "new_pairs",
        "responses",
        "malformed_eth",
        "malformed_vlan",
        "malformed_ipv4",
        "malformed_ipv6",
        "malformed_tcp",
        "ipv6_ext_limit",
        "ringbuf_full",
        "map_update_fail",
    ];
}

/// Name of the per-source LRU hash.
pub const SOURCES_MAP: &str = "SOURCES";
/// Name of the (source, destination) pair LRU hash.
pub const PAIRS_MAP: &str = "PAIRS";
/// Name of the event ring buffer.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU stats array.
pub const STATS_MAP: &str = "STATS";
/// Name of the XDP program.
pub const PROGRAM_NAME: &str = "smbwatch";
/// Name of the empty XDP program (benchmark floor).
pub const FLOOR_PROGRAM_NAME: &str = "smbwatch_floor";
/// Name of the XDP_TX program the traffic generator runs with live frames.
pub const TX_PROGRAM_NAME: &str = "smbwatch_tx";
/// Name of the read-only global holding the monitored ports.
pub const PORTS_GLOBAL: &str = "MONITORED_PORTS";

/// How many monitored ports the program can hold; 0 marks an unused slot.
pub const MAX_PORTS: usize = 4;
/// Default capacity of the source table.
pub const DEFAULT_MAX_SOURCES: u32 = 262_144;
/// Default capacity of the pair table.
pub const DEFAULT_MAX_PAIRS: u32 = 1_048_576;
/// Default ring-buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
/// Unread ring-buffer bytes past which the program wakes the reader at
/// once; below it the daemon drains every [`RING_DRAIN_INTERVAL_MS`].
pub const RING_WAKEUP_BYTES: u64 = 256 * 1024;
/// How often the daemon drains the ring buffer without a wake-up.
pub const RING_DRAIN_INTERVAL_MS: u64 = 20;
/// How many IPv6 extension headers the program walks before giving up.
pub const MAX_IPV6_EXT: usize = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers/arrays with explicit padding.
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::SourceStats {}
    unsafe impl aya::Pod for super::PairKey {}
    unsafe impl aya::Pod for super::PairState {}
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<AddrKey>(), 16);
        assert_eq!(size_of::<SourceStats>(), 32);
        assert_eq!(size_of::<PairKey>(), 32);
        assert_eq!(size_of::<PairState>(), 16);
        assert_eq!(size_of::<Event>(), 56);
    }

    #[test]
    fn v4_mapped() {
        let k = AddrKey::from_v4([192, 0, 2, 1]);
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.addr[12..], &[192, 0, 2, 1]);
    }
}
