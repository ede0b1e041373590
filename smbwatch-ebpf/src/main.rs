//! The smbwatch XDP program.
//!
//! Counts bare SYNs to monitored ports per source, records each new
//! (source, destination) pair and its first answer, and reports both through a
//! ring buffer. It only reads the frame: every path returns `XDP_PASS`, because
//! a monitor on a router must fail open.
#![no_std]
#![no_main]
// Atomic adds: the bpfel target has no atomic types with fetch_add, but the
// intrinsic lowers to BPF_ATOMIC_ADD, which every kernel we support has.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use smbwatch_common::{
    stat, AddrKey, Event, PairKey, PairState, SourceStats, DEFAULT_MAX_PAIRS, DEFAULT_MAX_SOURCES,
    DEFAULT_RING_BYTES, EVENT_ACCEPTED, EVENT_FLAG_VLAN, EVENT_NEW_PAIR, EVENT_REFUSED,
    MAX_IPV6_EXT, MAX_PORTS, RING_WAKEUP_BYTES as WAKEUP_BYTES,
};

#[map]
static SOURCES: LruHashMap<AddrKey, SourceStats> =
    LruHashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map]
static PAIRS: LruHashMap<PairKey, PairState> = LruHashMap::with_max_entries(DEFAULT_MAX_PAIRS, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Monitored TCP ports in host byte order, 0 = unused slot. Set by the loader
/// (`EbpfLoader::set_global`); as read-only data the verifier folds the
/// comparisons into constants.
#[unsafe(no_mangle)]
static MONITORED_PORTS: [u16; MAX_PORTS] = [445, 0, 0, 0];

/// Ring-buffer space one event takes: the record plus its 8-byte header.
const RECORD_BYTES: u64 = size_of::<Event>() as u64 + 8;
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const TCP_FIN_SYN_RST_ACK: u8 = 0x17;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[xdp]
pub fn smbwatch(ctx: XdpContext) -> u32 {
    inspect(&ctx);
    xdp_action::XDP_PASS
}

/// An empty program: the per-packet floor the benchmarks compare with.
#[xdp]
pub fn smbwatch_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Bounces every frame back out of its interface. The traffic generator
/// runs it with BPF_F_TEST_XDP_LIVE_FRAMES on one end of a veth pair to push
/// frames into the other end; it is never attached.
#[xdp]
pub fn smbwatch_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Atomic `*p += 1` on a map value shared by all CPUs.
#[inline(always)]
unsafe fn add(p: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
}

/// Pointer to `len` bytes at `off`, or `None` when the frame is shorter.
#[inline(always)]
fn bytes_at(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
fn monitored(port: u16) -> bool {
    let mut i = 0;
    while i < MAX_PORTS {
        let p = unsafe { read_volatile(&MONITORED_PORTS[i]) };
        if p != 0 && p == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Where the L3 header starts and what it is, after up to two VLAN tags.
struct L2 {
    ethertype: u16,
    offset: usize,
    vlan: u16,
    flags: u8,
}

#[inline(always)]
fn parse_l2(ctx: &XdpContext) -> Option<L2> {
    let Some(eth) = bytes_at(ctx, 0, ETH_HLEN) else {
        count(stat::MALFORMED_ETH);
        return None;
    };
    let mut l2 = L2 {
        ethertype: be16(unsafe { eth.add(12) }),
        offset: ETH_HLEN,
        vlan: 0,
        flags: 0,
    };
    // Two tags cover 802.1Q and QinQ (802.1ad outer, 802.1Q inner).
    let mut tags = 0;
    while tags < 2 {
        if l2.ethertype != ETH_P_8021Q && l2.ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = bytes_at(ctx, l2.offset, 4) else {
            count(stat::MALFORMED_VLAN);
            return None;
        };
        if tags == 0 {
            // The outer tag names the segment on a router trunk.
            l2.vlan = be16(tag) & 0x0fff;
            l2.flags = EVENT_FLAG_VLAN;
            count(stat::VLAN);
        }
        l2.ethertype = be16(unsafe { tag.add(2) });
        l2.offset += 4;
        tags += 1;
    }
    Some(l2)
}

/// Where the addresses and the TCP header of a TCP packet are. Keys are
/// built only for the few packets that turn out to be SYNs or answers on a
/// monitored port: copying 32 address bytes costs more than the port test.
struct L3 {
    /// Offset of the source address; the destination follows it.
    addr: usize,
    v4: bool,
    tcp: usize,
}

impl L3 {
    /// (source, destination) as 16-byte keys.
    #[inline(always)]
    fn keys(&self, ctx: &XdpContext) -> Option<(AddrKey, AddrKey)> {
        if self.v4 {
            let p = bytes_at(ctx, self.addr, 8)?;
            // SAFETY: 8 bytes checked above.
            let (s, d) = unsafe {
                (
                    (p as *const [u8; 4]).read_unaligned(),
                    (p.add(4) as *const [u8; 4]).read_unaligned(),
                )
            };
            Some((AddrKey::from_v4(s), AddrKey::from_v4(d)))
        } else {
            let p = bytes_at(ctx, self.addr, 32)?;
            // SAFETY: 32 bytes checked above.
            let (s, d) = unsafe {
                (
                    (p as *const [u8; 16]).read_unaligned(),
                    (p.add(16) as *const [u8; 16]).read_unaligned(),
                )
            };
            Some((AddrKey { addr: s }, AddrKey { addr: d }))
        }
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Option<L3> {
    count(stat::IPV4);
    let Some(ip) = bytes_at(ctx, off, 20) else {
        count(stat::MALFORMED_IPV4);
        return None;
    };
    let ihl = (unsafe { *ip } & 0x0f) as usize * 4;
    if ihl < 20 || bytes_at(ctx, off, ihl).is_none() {
        count(stat::MALFORMED_IPV4);
        return None;
    }
    if unsafe { *ip.add(9) } != IPPROTO_TCP {
        return None;
    }
    // Only the first fragment (offset 0) carries the TCP header.
    if be16(unsafe { ip.add(6) }) & 0x1fff != 0 {
        return None;
    }
    Some(L3 {
        addr: off + 12,
        v4: true,
        tcp: off + ihl,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Option<L3> {
    count(stat::IPV6);
    let Some(ip) = bytes_at(ctx, off, 40) else {
        count(stat::MALFORMED_IPV6);
        return None;
    };
    let mut next = unsafe { *ip.add(6) };
    let mut pos = off + 40;
    // A bounded walk keeps the verifier happy and a hostile chain cheap.
    let mut i = 0;
    while i < MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                return Some(L3 {
                    addr: off + 8,
                    v4: false,
                    tcp: pos,
                })
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
                let Some(ext) = bytes_at(ctx, pos, 8) else {
                    count(stat::MALFORMED_IPV6);
                    return None;
                };
                let (nh, len) = unsafe { (*ext, *ext.add(1) as usize) };
                let hlen = match next {
                    IPPROTO_FRAGMENT => {
                        // Non-first fragments carry no TCP header.
                        if be16(unsafe { ext.add(2) }) & 0xfff8 != 0 {
                            return None;
                        }
                        8
                    }
                    IPPROTO_AH => (len + 2) * 4,
                    _ => (len + 1) * 8,
                };
                next = nh;
                pos += hlen;
            }
            _ => return None,
        }
        i += 1;
    }
    if next == IPPROTO_TCP {
        return Some(L3 {
            addr: off + 8,
            v4: false,
            tcp: pos,
        });
    }
    count(stat::IPV6_EXT_LIMIT);
    None
}

#[inline(always)]
fn inspect(ctx: &XdpContext) {
    count(stat::PACKETS);
    let Some(l2) = parse_l2(ctx) else { return };
    let l3 = match l2.ethertype {
        ETH_P_IP => parse_ipv4(ctx, l2.offset),
        ETH_P_IPV6 => parse_ipv6(ctx, l2.offset),
        _ => None,
    };
    let Some(l3) = l3 else { return };
    let Some(tcp) = bytes_at(ctx, l3.tcp, 20) else {
        count(stat::MALFORMED_TCP);
        return;
    };
    if unsafe { *tcp.add(12) } >> 4 < 5 {
        count(stat::MALFORMED_TCP);
        return;
    }
    let sport = be16(tcp);
    let dport = be16(unsafe { tcp.add(2) });
    let flags = unsafe { *tcp.add(13) } & TCP_FIN_SYN_RST_ACK;
    if flags == TCP_SYN {
        if monitored(dport) {
            on_syn(ctx, &l2, l3, sport, dport);
        }
    } else if (flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK) || flags & TCP_RST != 0)
        && monitored(sport)
    {
        on_answer(ctx, &l2, l3, sport, dport, flags);
    }
}

#[inline(always)]
fn on_syn(ctx: &XdpContext, l2: &L2, l3: L3, sport: u16, dport: u16) {
    count(stat::MONITORED_SYNS);
    let Some((src, dst)) = l3.keys(ctx) else {
        return;
    };
    // Counters need no better than the coarse clock (jiffies); it is several
    // times cheaper than the precise one. Events read the precise one.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let source = match SOURCES.get_ptr_mut(src) {
        Some(s) => s,
        None => {
            let fresh = SourceStats {
                syns: 0,
                pairs: 0,
                first_seen_ns: now,
                last_seen_ns: now,
            };
            // NOEXIST: another CPU may have inserted it meanwhile; then use theirs.
            let _ = SOURCES.insert(src, fresh, BPF_NOEXIST as u64);
            match SOURCES.get_ptr_mut(src) {
                Some(s) => s,
                None => {
                    count(stat::MAP_UPDATE_FAIL);
                    return;
                }
            }
        }
    };
    unsafe {
        add(&raw mut (*source).syns);
        (*source).last_seen_ns = now;
    }

    let key = PairKey { src, dst };
    // Look up first: an LRU insert takes a free node (possibly evicting)
    // before it notices the key exists, and a known pair is the common case.
    if PAIRS.get_ptr(key).is_some() {
        return;
    }
    let state = PairState {
        first_seen_ns: now,
        dport,
        answer: 0,
        _pad: [0; 5],
    };
    match PAIRS.insert(key, state, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // EEXIST: another CPU won the race; that CPU reports the pair.
        Err(e) if e == -17 => return,
        Err(_) => {
            count(stat::MAP_UPDATE_FAIL);
            return;
        }
    }
    count(stat::NEW_PAIRS);
    unsafe { add(&raw mut (*source).pairs) };
    emit(ctx, l2, &key, sport, dport, EVENT_NEW_PAIR);
}

#[inline(always)]
fn on_answer(ctx: &XdpContext, l2: &L2, l3: L3, sport: u16, dport: u16, flags: u8) {
    let Some((server, client)) = l3.keys(ctx) else {
        return;
    };
    // The answer travels server -> client; the pair is keyed client -> server.
    let key = PairKey {
        src: client,
        dst: server,
    };
    let Some(state) = PAIRS.get_ptr_mut(key) else {
        return;
    };
    let kind = if flags & TCP_RST != 0 {
        EVENT_REFUSED
    } else {
        EVENT_ACCEPTED
    };
    unsafe {
        if (*state).answer != 0 {
            return;
        }
        // Not atomic: two answers to one pair on two CPUs at the same instant
        // could both report. Answers of one flow hash to one RX queue, so in
        // practice the first wins.
        (*state).answer = kind;
    }
    count(stat::RESPONSES);
    emit(ctx, l2, &key, dport, sport, kind);
}

#[inline(always)]
fn emit(ctx: &XdpContext, l2: &L2, key: &PairKey, sport: u16, dport: u16, kind: u8) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(stat::RINGBUF_FULL);
        return;
    };
    entry.write(Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        src: key.src,
        dst: key.dst,
        ifindex: ctx.ingress_ifindex() as u32,
        sport,
        dport,
        vlan: l2.vlan,
        kind,
        flags: l2.flags,
        _pad: [0; 4],
    });
    // Waking the reader for every record costs it a context switch per
    // event under a scan; it drains on a short timer instead and is woken
    // early when unread data crosses WAKEUP_BYTES: by this record only, so a
    // reader that falls behind is not woken (at a few µs each) per event.
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if unread >= WAKEUP_BYTES && unread < WAKEUP_BYTES + RECORD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

const _: () = assert!(size_of::<Event>() == 56);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
