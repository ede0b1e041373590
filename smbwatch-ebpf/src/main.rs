//! The smbwatch XDP program.
//!
//! Reports each new (source, destination) pair on a monitored port and its
//! answer through a ring buffer, and keeps per-source sketches so fan-out
//! stays measurable when events must be shed. Every table is an array:
//! constant time per packet, no inserts, no eviction walks, no locks (see
//! docs/architecture.md for what was measured against LRU hashes). It only
//! reads the frame: every path returns `XDP_PASS`, because a monitor on a
//! router must fail open.
#![no_std]
#![no_main]
// Atomics: compare-and-swap claims a pair slot, so exactly one CPU reports a
// new pair. The intrinsic lowers to BPF_CMPXCHG.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod parse;
mod sample;
mod state;

use core::{mem::size_of, ptr::read_volatile};

use aya_ebpf::{
    bindings::{xdp_action, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{Array as InnerArray, ArrayOfMaps},
    macros::{btf_map, map, xdp},
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use smbwatch_common::{
    stat, Budget, Event, EventKind, PairBucket, ReplayMeta, Settings, SourceSlot,
    DEFAULT_PAIR_BUCKETS, DEFAULT_RING_BYTES, DEFAULT_SETTINGS, MAX_PORTS,
    RING_WAKEUP_BYTES as WAKEUP_BYTES, SEEN_INNER_LINES, SOURCE_INNER_LINES, UNPARSED_SLOTS,
};

use parse::{
    parse_l2, parse_l3, parse_tcp, Addr, Cursor, Hdr, Stop, Tcp, TCP_ACK, TCP_RST, TCP_SYN,
};
use smbwatch_common::headers::EthHdr;

// The repeat filter and the source table are arrays of arrays of at most
// 31 KiB each: the kernel kmallocs those into its directly mapped
// (huge-page) memory instead of vmalloc'ing 4 KiB pages
// (INNER_ARRAY_BYTES). The loader sizes the outer arrays and fills every
// slot before the program can run; both lookups are inlined by the
// verifier (array of maps, inner arrays of the template's size). The pair
// cache stays a plain array: on the known-pair path the second lookup cost
// more than the direct map saved (state.rs, `bucket`).

#[btf_map]
static SOURCES: ArrayOfMaps<
    InnerArray<[SourceSlot; 2], { SOURCE_INNER_LINES as usize }>,
    { DEFAULT_SETTINGS.source_outer as usize },
> = ArrayOfMaps::new();

#[map]
static PAIRS: Array<PairBucket> = Array::with_max_entries(DEFAULT_PAIR_BUCKETS, 0);

/// The repeat filter: per line, the two generations' words side by side.
#[btf_map]
static SEEN: ArrayOfMaps<
    InnerArray<[u64; 2], { SEEN_INNER_LINES as usize }>,
    { DEFAULT_SETTINGS.seen_outer as usize },
> = ArrayOfMaps::new();

#[map]
static BUDGET: PerCpuArray<Budget> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Rate limiter of unparsed reports: per slot, a (source, destination)
/// hash tag (high 32 bits) and the window of its latest report (low 32 bits).
#[map]
static UNPARSED: Array<u64> = Array::with_max_entries(UNPARSED_SLOTS, 0);

/// Load-time settings (`EbpfLoader::override_global`); as read-only data
/// the verifier folds them into constants.
#[unsafe(no_mangle)]
static SETTINGS: Settings = DEFAULT_SETTINGS;

/// Reads one field of [`SETTINGS`]; volatile so the compiler does not fold
/// the build-time defaults (the loader rewrites them).
macro_rules! setting {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { ::core::ptr::read_volatile(&raw const $crate::SETTINGS.$field) };
        v
    }};
}
pub(crate) use setting;

/// Ring-buffer space one event takes: the record plus its 8-byte header.
const RECORD_BYTES: u64 = size_of::<Event>() as u64 + 8;

// `#[xdp]` wraps this in the section's entry function; without
// `inline(always)` LLVM stops inlining it once the program is large and
// every packet pays a BPF-to-BPF call and return (about 6 ns here, the
// return through the kernel's return thunk: ARP went 1.20x -> 1.46x).
#[xdp]
#[inline(always)]
pub fn smbwatch(ctx: XdpContext) -> u32 {
    let meta = meta(&ctx);
    // Only a segment the sampler noted can be armed: everything else (not
    // TCP, another port, a bare SYN) skips its per-CPU lookup. Sampling
    // off: whatever was noted is left (the next packet's note overwrites
    // it).
    if inspect(&ctx, meta) && setting!(sample_segments) != 0 {
        sample::run(&ctx, meta);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn monitored(port: u16) -> bool {
    let mut i = 0;
    while i < MAX_PORTS {
        let p = unsafe { read_volatile(&SETTINGS.ports[i]) };
        if p != 0 && p == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Where and when a packet came in.
#[derive(Clone, Copy)]
pub(crate) struct Meta {
    /// The interface, or in replay the capture's interface id.
    pub ingress: u32,
    /// Replay only: the packet's capture time (ns); 0 outside replay.
    pub replay_ns: u64,
}

/// Where the packet came in and, in replay, when: replay passes a
/// [`ReplayMeta`] as XDP metadata in front of the frame.
///
/// Read first thing, straight from the context: later, LLVM turns a context
/// field read into a load through an offset pointer, which the verifier refuses.
#[inline(always)]
fn meta(ctx: &XdpContext) -> Meta {
    let ifindex = unsafe { read_volatile(&raw const (*ctx.ctx).ingress_ifindex) };
    if setting!(replay) != 0 {
        let meta = ctx.metadata();
        if meta + size_of::<ReplayMeta>() <= ctx.metadata_end() {
            // SAFETY: the bounds check above covers the whole ReplayMeta.
            let m = unsafe { (meta as *const ReplayMeta).read_unaligned() };
            return Meta {
                ingress: m.ingress,
                replay_ns: m.ts_ns,
            };
        }
    }
    Meta {
        ingress: ifindex,
        replay_ns: 0,
    }
}

/// Client and server of a pair.
#[derive(Clone, Copy)]
pub(crate) struct Pair {
    pub src: Addr,
    pub dst: Addr,
}

/// What a packet needs to be reported: who, where it came in, how.
pub(crate) struct Seen {
    pub key: Pair,
    pub ingress: u32,
    /// Replay: the packet's capture time (ns); 0 outside replay.
    pub replay_ns: u64,
    pub vlan: u16,
    /// `EVENT_FLAG_*` bits known from parsing (VLAN, fragmented).
    pub flags: u8,
    pub sport: u16,
    pub dport: u16,
    /// The frame's Ethernet header: its source MAC is copied into the event
    /// only when one is sent.
    pub eth: Hdr<EthHdr>,
}

/// Parses the packet and acts on its role; `true` when it noted a segment
/// for the sampler (only then has [`sample::run`] anything to do).
#[inline(always)]
fn inspect(ctx: &XdpContext, meta: Meta) -> bool {
    count(stat::PACKETS);
    let mut c = Cursor::new(ctx);
    let l2 = match parse_l2(&mut c) {
        Ok(l2) => l2,
        Err(stop) => {
            stopped(meta, stop);
            return false;
        }
    };
    let l3 = match parse_l3(ctx, &mut c, &l2) {
        Ok(l3) => l3,
        Err(stop) => {
            stopped(meta, stop);
            return false;
        }
    };
    // Filled in place: returned as an Option, the fields were packed into
    // one register where the parser's exits join and unpacked after.
    let mut tcp = Tcp::default();
    if !parse_tcp(&c, &l3, &mut tcp) {
        return false;
    }
    let flags = tcp.flags;
    // Each port tested once, before address keys (copying 32 address bytes
    // costs more). A test's match teaches the verifier the port's value, one
    // state per monitored port; testing again at each use multiplied them
    // (four ports took 811k of its million instructions, now about 500k:
    // tests/tests/kernel_configs.rs). A bare SYN needs only its destination.
    let to_server = monitored(tcp.dport);
    let to_client = flags != TCP_SYN && monitored(tcp.sport);
    let role = if flags == TCP_SYN && to_server {
        Role::Syn
    } else if (flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK) || flags & TCP_RST != 0)
        && to_client
    {
        Role::Answer
    } else if flags & TCP_SYN == 0 && flags & (TCP_ACK | TCP_RST) != 0 && to_server {
        Role::ClientAck
    } else if to_server || to_client {
        Role::Segment
    } else {
        return false;
    };
    // SMB payload sampling (sample.rs); bare SYNs keep their cost.
    if !matches!(role, Role::Syn) {
        sample::note(&c, &l3, &tcp);
    }
    if let Role::Segment = role {
        sample::arm_unhashed(tcp.sport, tcp.dport, l2.vlan, l2.flags, !to_server);
        return true;
    }
    let (src, dst) = l3.addrs();
    let mut ev_flags = l2.flags;
    if l3.fragmented {
        ev_flags |= smbwatch_common::EVENT_FLAG_FRAGMENTED;
    }
    // Pairs are keyed client -> server; an answer travels server -> client.
    let to_client_side = matches!(role, Role::Answer);
    let (key, sport, dport) = if to_client_side {
        (Pair { src: dst, dst: src }, tcp.dport, tcp.sport)
    } else {
        (Pair { src, dst }, tcp.sport, tcp.dport)
    };
    let seen = Seen {
        key,
        ingress: meta.ingress,
        replay_ns: meta.replay_ns,
        vlan: l2.vlan,
        flags: ev_flags,
        sport,
        dport,
        eth: l2.eth,
    };
    if let Role::Syn = role {
        if l3.fragmented {
            count(stat::FRAGMENTED_SYNS);
        }
        state::on_syn(&seen);
        return false;
    }
    // One keyed hash of the pair serves the pair cache and the sampler's
    // flow table (which mixes the ports in).
    let h = state::hash_key(&seen.key);
    sample::arm(&seen, h, to_client_side);
    match role {
        Role::Answer => state::on_answer(&seen, h.pair, flags & TCP_RST != 0),
        Role::ClientAck => state::on_client_ack(&seen, h.pair, flags & TCP_RST != 0),
        Role::Syn | Role::Segment => {}
    }
    true
}

/// A packet the parser stopped on: past a walk's bound it is reported (rate
/// limited per source); anything else was counted where it stopped.
#[inline(always)]
fn stopped(meta: Meta, stop: Stop) {
    let (key, vlan, flags, eth) = match stop {
        Stop::Done => return,
        Stop::VlanLimit { vlan, eth } => {
            // No IP header reached: the frame's MACs stand for its ends.
            let (src, dst) = parse::macs(eth);
            (
                Pair { src, dst },
                vlan,
                smbwatch_common::EVENT_FLAG_VLAN,
                eth,
            )
        }
        Stop::Ipv6ExtLimit { ip, l2 } => {
            let (src, dst) = parse::ipv6_addrs(ip);
            (Pair { src, dst }, l2.vlan, l2.flags, l2.eth)
        }
    };
    let seen = Seen {
        key,
        ingress: meta.ingress,
        replay_ns: meta.replay_ns,
        vlan,
        flags,
        sport: 0,
        dport: 0,
        eth,
    };
    state::on_unparsed(&seen);
}

enum Role {
    /// A bare SYN to a monitored port.
    Syn,
    /// Any other segment of a monitored port: sampled only.
    Segment,
    /// SYN-ACK or RST from a monitored port.
    Answer,
    /// ACK or RST from a client to a monitored port: an ACK after the
    /// SYN-ACK completes the handshake.
    ClientAck,
}

/// Sends one event stamped `now` (the coarse clock, see [`Event::ts_ns`]).
#[inline(always)]
pub(crate) fn emit(seen: &Seen, now: u64, kind: EventKind, flags: u8, fanout: u16, syns: u16) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(stat::RINGBUF_FULL);
        return;
    };
    // Field by field into the reserved record (no stack copy); addresses
    // as words: the record is 8-aligned and src/dst sit at 8 and 24.
    let p = entry.as_mut_ptr();
    unsafe {
        (*p).ts_ns = now;
        *(&raw mut (*p).src).cast::<[u64; 2]>() = seen.key.src.0;
        *(&raw mut (*p).dst).cast::<[u64; 2]>() = seen.key.dst.0;
        (*p).ifindex = seen.ingress;
        (*p).sport = seen.sport;
        (*p).dport = seen.dport;
        (*p).vlan = seen.vlan;
        (*p).kind = kind as u8;
        (*p).flags = seen.flags | flags;
        (*p).fanout = fanout;
        (*p).syns = syns;
        // The MAC and the padding after it as one word (the record is
        // 8-aligned and `mac` sits at 56): padding must not leak
        // whatever the ring buffer held before.
        *(&raw mut (*p).mac).cast::<u64>() = seen.eth.src_mac();
    }
    entry.submit(wake_flag(
        EVENTS.query(BPF_RB_AVAIL_DATA as u64),
        RECORD_BYTES,
    ));
}

/// The submit flag of a ring record of `bytes` that leaves `unread` bytes
/// unread (events and samples alike). Waking the reader for every record
/// costs it a context switch per record under a scan; it drains on a short
/// timer instead and is woken early when unread data crosses WAKEUP_BYTES:
/// by this record only, so a reader that falls behind is not woken (at a
/// few µs each) per record.
#[inline(always)]
pub(crate) fn wake_flag(unread: u64, bytes: u64) -> u64 {
    let flag = if unread >= WAKEUP_BYTES && unread < WAKEUP_BYTES + bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flag as u64
}

const _: () = assert!(size_of::<Event>() == 64);
const _: () = assert!(core::mem::offset_of!(Event, mac) == 56);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
