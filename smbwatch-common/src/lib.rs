//! Types shared by the smbwatch XDP program and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding and no `bool`, so both
//! sides agree on the byte layout and the verifier never sees uninitialised
//! padding. With the `user` feature the types implement [`aya::Pod`].
#![no_std]

pub mod addr;
pub mod counters;
pub mod headers;
mod pair;
pub mod sample;
mod settings;

pub use pair::*;
pub use settings::*;
/// Protocol constants shared by the XDP parser, replay's framing and the
/// frame builder (one place, so they cannot drift apart).
pub mod proto {
    /// Ethernet header length.
    pub const ETH_HLEN: usize = 14;
    /// Ethertype of IPv4.
    pub const ETH_P_IP: u16 = 0x0800;
    /// Ethertype of IPv6.
    pub const ETH_P_IPV6: u16 = 0x86dd;
    /// TPID of an 802.1Q tag.
    pub const ETH_P_8021Q: u16 = 0x8100;
    /// TPID of an 802.1ad (QinQ service) tag.
    pub const ETH_P_8021AD: u16 = 0x88a8;
    /// The pre-standard QinQ TPID some switches still send.
    pub const ETH_P_QINQ_9100: u16 = 0x9100;
    /// VLAN tag length (TPID + TCI).
    pub const VLAN_HLEN: usize = 4;
    /// IPv4 header length without options.
    pub const IPV4_HLEN: usize = 20;
    /// IPv6 fixed header length.
    pub const IPV6_HLEN: usize = 40;
    /// TCP header length without options.
    pub const TCP_HLEN: usize = 20;
    /// IP protocol number of TCP.
    pub const IPPROTO_TCP: u8 = 6;
    /// IPv6 hop-by-hop options header.
    pub const IPPROTO_HOPOPTS: u8 = 0;
    /// IPv6 routing header.
    pub const IPPROTO_ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const IPPROTO_FRAGMENT: u8 = 44;
    /// IP authentication header.
    pub const IPPROTO_AH: u8 = 51;
    /// IPv6 destination options header.
    pub const IPPROTO_DSTOPTS: u8 = 60;

    /// TCP flag bits.
    pub mod tcp_flags {
        /// FIN.
        pub const FIN: u8 = 0x01;
        /// SYN.
        pub const SYN: u8 = 0x02;
        /// RST.
        pub const RST: u8 = 0x04;
        /// PSH.
        pub const PSH: u8 = 0x08;
        /// ACK.
        pub const ACK: u8 = 0x10;
    }
}

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

/// One slot of the per-source sketch table ([`SOURCES_MAP`]): a source that
/// opened pairs to at least two destinations within the repeat horizon.
///
/// Distinct destinations are counted by linear counting over a 128-bit
/// bitmap (one bit per destination hash), kept for the current and the
/// previous half-window: the estimate covers between half a fan-out window
/// and a whole one, and repeated pairs to one destination never inflate it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// The source; all zero for an empty slot.
    pub addr: AddrKey,
    /// Destination bitmap of the current half-window.
    pub cur: [u64; 2],
    /// Destination bitmap of the previous half-window.
    pub prev: [u64; 2],
    /// When the current half-window began (the program's clock, as
    /// [`Event::ts_ns`]).
    pub window_start_ns: u64,
    /// When the slot was claimed by this source.
    pub first_seen_ns: u64,
    /// The source's latest new pair.
    pub last_seen_ns: u64,
    /// New pairs counted since the slot was claimed (re-reported pairs included).
    pub new_pairs: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl SourceSlot {
    /// Distinct destinations in the last half to whole fan-out window, by
    /// linear counting over the union of both bitmaps (exact while small).
    pub fn distinct_estimate(&self) -> u32 {
        let set =
            (self.cur[0] | self.prev[0]).count_ones() + (self.cur[1] | self.prev[1]).count_ones();
        linear_count(set)
    }
}

/// `round(-128 ln(1 - k/128))` for k in 0..=127; all 128 bits set (and
/// the unused rest, up to 255) saturates at 700.
const LC128: [u16; 256] = lc_table([
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 27, 28,
    29, 30, 32, 33, 34, 35, 37, 38, 40, 41, 42, 44, 45, 47, 48, 49, 51, 52, 54, 55, 57, 59, 60, 62,
    63, 65, 67, 68, 70, 72, 74, 75, 77, 79, 81, 83, 85, 87, 89, 91, 93, 95, 97, 99, 101, 104, 106,
    108, 110, 113, 115, 118, 120, 123, 126, 128, 131, 134, 137, 140, 143, 146, 149, 152, 155, 159,
    162, 166, 170, 174, 177, 182, 186, 190, 195, 199, 204, 209, 214, 220, 225, 231, 238, 244, 251,
    258, 266, 274, 283, 293, 303, 314, 326, 340, 355, 372, 392, 415, 444, 480, 532, 621, 700,
]);

const fn lc_table(head: [u16; 129]) -> [u16; 256] {
    let mut t = [700u16; 256];
    let mut i = 0;
    while i < 129 {
        t[i] = head[i];
        i += 1;
    }
    t
}

/// Linear-counting estimate for `set` of 128 bits: `-m ln(1 - set/m)`,
/// from a table so both sides (the kernel has no floating point) agree.
pub fn linear_count(set: u32) -> u32 {
    // Masked, not clamped: the verifier must see the index bounded by the
    // table, and a u32 popcount sum above 255 never happens (at most 128).
    // (black_box keeps LLVM from proving the mask redundant and dropping it.)
    LC128[(core::hint::black_box(set) & 0xff) as usize] as u32
}

/// What a ring-buffer record reports (the `kind` byte of [`Event`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// First SYN of a (source, destination) pair.
    NewPair = 1,
    /// First SYN-ACK answering a known pair, from the server's side.
    Accepted = 2,
    /// RST answering a known pair: a refusal, or (with
    /// [`EVENT_FLAG_AFTER_ACCEPT`]) a server reset after its SYN-ACK that
    /// the client never confirmed, which turns the pair into a failure.
    Refused = 3,
    /// First SYN of a known pair in a later activity epoch than its latest
    /// report: the pair is in use again. [`Event::syns`] and the
    /// `EVENT_FLAG_SEEN_*` bits say what happened since that report.
    Active = 4,
    /// The client's ACK after the server's SYN-ACK: a completed handshake
    /// (a SYN-ACK answering a spoofed SYN never gets one).
    Confirmed = 5,
    /// A packet the program could not walk to its TCP header (more VLAN
    /// tags or IPv6 extension headers than [`MAX_VLAN_TAGS`] and
    /// [`MAX_IPV6_EXT`]); `src`/`dst` are its IP addresses (for a VLAN stack
    /// past the bound, its MAC addresses as modified EUI-64 link-local
    /// addresses, since no IP header was reached), ports 0. At most one per
    /// source per [`UNPARSED_WINDOW_SHIFT`] window.
    Unparsed = 6,
}

impl TryFrom<u8> for EventKind {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::NewPair),
            2 => Ok(Self::Accepted),
            3 => Ok(Self::Refused),
            4 => Ok(Self::Active),
            5 => Ok(Self::Confirmed),
            6 => Ok(Self::Unparsed),
            other => Err(other),
        }
    }
}

/// [`Event::flags`] bit: the frame carried at least one VLAN tag.
pub const EVENT_FLAG_VLAN: u8 = 1;
/// [`Event::flags`] bit: the SYN was a first IP fragment (a SYN has no
/// legitimate reason to be fragmented: an evasion attempt).
pub const EVENT_FLAG_FRAGMENTED: u8 = 2;
/// [`Event::flags`] bit: the source opened another pair within the repeat
/// horizon (it is tracked in [`SOURCES_MAP`]; `fanout` is its estimate).
pub const EVENT_FLAG_REPEAT: u8 = 4;
/// [`Event::flags`] bit: a Refused that follows an Accepted for the same pair.
pub const EVENT_FLAG_AFTER_ACCEPT: u8 = 8;
/// [`Event::flags`] bit (Active): a SYN-ACK was seen since the pair's previous report.
pub const EVENT_FLAG_SEEN_ACCEPTED: u8 = PAIR_FLAG_SEEN_ACCEPTED << SEEN_FLAGS_SHIFT;
/// [`Event::flags`] bit (Active): the client's ACK after a SYN-ACK was seen
/// since the pair's previous report.
pub const EVENT_FLAG_SEEN_CONFIRMED: u8 = PAIR_FLAG_SEEN_CONFIRMED << SEEN_FLAGS_SHIFT;
/// [`Event::flags`] bit (Active): a refusing RST was seen since the pair's previous report.
pub const EVENT_FLAG_SEEN_REFUSED: u8 = PAIR_FLAG_SEEN_REFUSED << SEEN_FLAGS_SHIFT;

/// A ring-buffer record. For every kind `src` is the client (the SYN sender)
/// and `dst` the server, so a response names the pair it answers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// When the packet was seen, on the program's clock: jiffies × the tick
    /// in ns ([`Settings::tick_ns`]), the start of the tick the packet fell
    /// in (at most one tick, 4 ms at HZ=250, 10 ms at HZ=100, before it).
    /// Not boot-based: `dataplane::KernelClock` turns it into UTC with a
    /// calibrated offset. The reading the budget already takes, inlined by
    /// the JIT where a clock helper cost a call per event.
    pub ts_ns: u64,
    /// Client address.
    pub src: AddrKey,
    /// Server address.
    pub dst: AddrKey,
    /// Ingress interface index (replay: the capture's interface id).
    pub ifindex: u32,
    /// Client port.
    pub sport: u16,
    /// Server (monitored) port.
    pub dport: u16,
    /// Outer VLAN id, valid when `flags & EVENT_FLAG_VLAN`.
    pub vlan: u16,
    /// An [`EventKind`] as a byte.
    pub kind: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u8,
    /// The kernel's distinct-destination estimate for the source (new and
    /// active pairs only; 0 when the source is not tracked).
    pub fanout: u16,
    /// Active: the pair's SYNs since its previous report, this one included
    /// (saturating at 65,535); 0 for other kinds.
    pub syns: u16,
    /// Ethernet source address of the frame behind the event (the client's
    /// frame for SYNs and client ACKs, the server's for answers); all zero
    /// where no Ethernet header was read.
    pub mac: addr::MacAddr,
    /// Explicit padding (keeps the record a multiple of 8 bytes).
    pub _pad: [u8; 2],
}

/// Per-CPU token bucket for events ([`BUDGET_MAP`]). Credit is kept in
/// nanoseconds: each event costs `1e9 / rate` ns of credit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Credit of the normal class (any new pair), in ns.
    pub credit_ns: u64,
    /// Credit of the priority class (tracked, multi-destination sources), in ns.
    pub priority_credit_ns: u64,
    /// Coarse time of the latest refill.
    pub last_ns: u64,
}

/// Indices of the per-CPU stats array ([`STATS_MAP`]).
pub mod stat {
    /// Every frame the program saw.
    pub const PACKETS: u32 = 0;
    /// IPv4 packets.
    pub const IPV4: u32 = 1;
    /// IPv6 packets.
    pub const IPV6: u32 = 2;
    /// Frames with VLAN tags.
    pub const VLAN: u32 = 3;
    /// Bare SYNs to a monitored port (first fragments included).
    pub const MONITORED_SYNS: u32 = 4;
    /// New (source, destination) pairs.
    pub const NEW_PAIRS: u32 = 5;
    /// Answers (SYN-ACK or RST) to known pairs that were reported.
    pub const RESPONSES: u32 = 6;
    /// Frame shorter than an Ethernet header.
    pub const MALFORMED_ETH: u32 = 7;
    /// Truncated VLAN tag.
    pub const MALFORMED_VLAN: u32 = 8;
    /// Truncated IPv4 header or IHL below 5.
    pub const MALFORMED_IPV4: u32 = 9;
    /// Truncated IPv6 header or extension header.
    pub const MALFORMED_IPV6: u32 = 10;
    /// Truncated TCP header or data offset below 5 (unfragmented packets).
    pub const MALFORMED_TCP: u32 = 11;
    /// IPv6 extension-header chains longer than the program walks ([`super::MAX_IPV6_EXT`]).
    pub const IPV6_EXT_LIMIT: u32 = 12;
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 13;
    /// New pairs whose source slot could not be claimed (both candidates
    /// held by busier, fresh sources).
    pub const SOURCES_FULL: u32 = 14;
    /// TCP first fragments to a monitored port (reported as connection attempts).
    pub const FRAGMENTED_SYNS: u32 = 15;
    /// Non-first IP fragments (carry no TCP header; not inspected).
    pub const LATER_FRAGMENTS: u32 = 16;
    /// Frames with more VLAN tags than the program walks ([`super::MAX_VLAN_TAGS`]).
    pub const VLAN_LIMIT: u32 = 17;
    /// New-pair events not sent because the per-CPU event budget was spent;
    /// the sketches still counted them.
    pub const EVENTS_SHED: u32 = 18;
    /// Answers ignored because they arrived on the SYN's own ingress
    /// (interface and VLAN): forged from the client's side.
    pub const ANSWERS_SAME_INGRESS: u32 = 19;
    /// Server resets after a SYN-ACK the client never confirmed.
    pub const RESETS_AFTER_ACCEPT: u32 = 20;
    /// New pairs from sources seen within the repeat horizon.
    pub const REPEAT_SOURCES: u32 = 21;
    /// Known pairs reported again: their first SYN in a later activity epoch.
    pub const ACTIVE_PAIRS: u32 = 22;
    /// Handshakes the client completed (its ACK after the SYN-ACK), reported.
    pub const CONFIRMED: u32 = 23;
    /// Packets past the walk's bounds reported as `unparsed` (the rest of
    /// `ipv6_ext_limit` and `vlan_limit` fell within a source's rate limit).
    pub const UNPARSED_REPORTS: u32 = 24;
    /// Sample records sent (segments of sampled connections, SMB payload).
    pub const SAMPLES: u32 = 25;
    /// Payload bytes in sample records sent.
    pub const SAMPLE_BYTES: u32 = 26;
    /// Connections that took a slot of the sampling flow table.
    pub const SAMPLE_FLOWS: u32 = 27;
    /// Connections not sampled: their slot held a connection still being sampled.
    pub const SAMPLE_FLOWS_BUSY: u32 = 28;
    /// Connections not sampled: their source was past its per-source rate.
    pub const SAMPLE_FLOWS_SHED: u32 = 29;
    /// Sample records not sent: the per-CPU sample budget was spent.
    pub const SAMPLES_SHED: u32 = 30;
    /// Sample records not sent: the sample ring buffer was full.
    pub const SAMPLE_RING_FULL: u32 = 31;
    /// Number of stat slots.
    pub const COUNT: u32 = 32;

    /// Names in index order, as the daemon prints them (from
    /// [`crate::counters::FAMILIES`], the one table of counters).
    pub const NAMES: [&str; COUNT as usize] = crate::counters::names();
}

/// Name of the per-source sketch table: an array of arrays of
/// [`SOURCE_INNER_LINES`] lines of two [`SourceSlot`]s.
pub const SOURCES_MAP: &str = "SOURCES";
/// Name of the pair cache (array of [`PairBucket`]).
pub const PAIRS_MAP: &str = "PAIRS";
/// Name of the repeat filter: an array of arrays of [`SEEN_INNER_LINES`]
/// lines, each two generation-tagged 64-bit bitmap words.
pub const SEEN_MAP: &str = "SEEN";
/// Name of the per-CPU event budget (array of one [`Budget`]).
pub const BUDGET_MAP: &str = "BUDGET";
/// Name of the event ring buffer.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU stats array.
pub const STATS_MAP: &str = "STATS";
/// Name of the unparsed-report rate limiter (array of
/// [`UNPARSED_SLOTS`] words: a source's hash tag and its latest window).
pub const UNPARSED_MAP: &str = "UNPARSED";
/// Name of the XDP program.
pub const PROGRAM_NAME: &str = "smbwatch";
/// Name of the empty XDP program (benchmark floor).
pub const FLOOR_PROGRAM_NAME: &str = "smbwatch_floor";
/// Name of the XDP_TX program the traffic generator runs with live frames.
pub const TX_PROGRAM_NAME: &str = "smbwatch_tx";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers/arrays with explicit padding.
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::SourceSlot {}
    unsafe impl aya::Pod for super::PairKey {}
    unsafe impl aya::Pod for super::PairSlot {}
    unsafe impl aya::Pod for super::PairBucket {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Budget {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::ReplayMeta {}
    unsafe impl aya::Pod for super::sample::SampleHeader {}
    unsafe impl aya::Pod for super::sample::SampleFlow {}
    unsafe impl aya::Pod for super::sample::SampleBudget {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<AddrKey>(), 16);
        assert_eq!(size_of::<SourceSlot>(), 80);
        assert_eq!(size_of::<PairKey>(), 32);
        assert_eq!(size_of::<PairSlot>(), 16);
        assert_eq!(size_of::<PairBucket>(), 64);
        assert_eq!(size_of::<Event>(), 64);
        assert_eq!(size_of::<Budget>(), 24);
        assert_eq!(size_of::<Settings>(), 112);
        assert_eq!(size_of::<ReplayMeta>(), 16);
    }

    /// Every inner array, with the kernel's array header (312 bytes on
    /// 6.18), fits the 32 KiB that `bpf_map_area_alloc` kmallocs.
    #[test]
    fn inner_arrays_fit_the_kmalloc_bound() {
        const KMALLOC_MAX: u32 = 32 * 1024;
        const HEADER: u32 = 312;
        for (entries, size) in [
            (SEEN_INNER_LINES, 16),
            (SOURCE_INNER_LINES, 2 * size_of::<SourceSlot>()),
        ] {
            let bytes = entries * size as u32;
            assert!(bytes <= INNER_ARRAY_BYTES, "{entries} x {size}");
            assert!(bytes + HEADER <= KMALLOC_MAX);
            assert!(bytes + HEADER > KMALLOC_MAX - 2048, "not wasting the page");
        }
        assert_eq!(DEFAULT_SETTINGS.seen_outer, 1058);
        assert_eq!(outer_arrays(0, 198), 1);
        assert_eq!(outer_arrays(198, 198), 1);
        assert_eq!(outer_arrays(199, 198), 2);
    }

    #[test]
    fn linear_counting_table_matches_the_formula() {
        for k in 0..128u32 {
            let m = 128.0f64;
            let want = (-m * (1.0 - k as f64 / m).ln()).round() as u32;
            assert_eq!(linear_count(k), want, "k={k}");
        }
        assert_eq!(linear_count(128), 700);
    }

    #[test]
    fn event_kind_round_trip() {
        for k in [
            EventKind::NewPair,
            EventKind::Accepted,
            EventKind::Refused,
            EventKind::Active,
            EventKind::Confirmed,
            EventKind::Unparsed,
        ] {
            assert_eq!(EventKind::try_from(k as u8), Ok(k));
        }
        assert_eq!(EventKind::try_from(0), Err(0));
        assert_eq!(EventKind::try_from(7), Err(7));
    }

    #[test]
    fn pair_states_and_slot_words() {
        for s in [
            PairState::Syn,
            PairState::Accepted,
            PairState::Confirmed,
            PairState::Refused,
        ] {
            assert_eq!(PairState::from_u8(s as u8), Some(s));
        }
        assert_eq!(PairState::from_u8(0), None);
        let tag = pair_tag(0xffff_ffff_ffff_ffff);
        assert_eq!(tag & EPOCH_MASK, 0, "the tag leaves the epoch bits free");
        assert_ne!(pair_tag(0), 0, "a used way is never empty");
        let w = slot_word(tag, 0x1_2345);
        assert_eq!((w & !EPOCH_MASK, w & EPOCH_MASK), (tag, 0x2345));
        assert_eq!(origin(3, 0), 3);
        assert_ne!(origin(3, 10), origin(3, 11));
    }

    #[test]
    fn v4_mapped() {
        let k = AddrKey::from_v4([192, 0, 2, 1]);
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.addr[12..], &[192, 0, 2, 1]);
    }
}
