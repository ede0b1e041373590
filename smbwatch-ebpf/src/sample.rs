//! SMB payload sampling: the TCP payload of the first segments of each
//! monitored-port connection, both directions, copied to user space through
//! a ring buffer of its own (`SAMPLES`), so the event ring's records stay
//! 56 bytes and a burst of payload never crowds out contact events.
//!
//! - **Flow table** (`SAMPLE_FLOWS`): an array of 16-byte slots,
//!   direct-mapped by a keyed hash of (client, server, client port, server
//!   port): the pair cache's hash of (client, server), computed once per
//!   packet, with the ports mixed in. A slot is claimed with
//!   compare-and-swap on the server's SYN-ACK (not the bare SYN: the SYN
//!   path keeps its cost, and spoofed SYNs to hosts that never answer claim
//!   nothing; the claim sends no record, as user space starts each
//!   direction at its first payload) or on a data segment that finds its
//!   slot empty or idle for about 17 s (a connection that began before the
//!   program, or lost its slot). A SYN-ACK also takes a slot whose
//!   connection closed. Per direction it counts the segments sampled and
//!   sets a bit when the count reaches `sample_segments`. Racing CPUs: the
//!   claim is one CAS (one winner); the counts are plain byte stores, so a
//!   race samples a segment more or less, never corrupts the slot. Two
//!   connections on one slot: the second is not sampled until the first is
//!   done and idle.
//! - **Where it runs**: [`note`] keeps the segment's offsets in a per-CPU
//!   slot before the addresses are read (so the parser's header layouts
//!   end there for the verifier); a pure ACK goes no further. A client's
//!   segment or a server's answer, whose key and hash the pair cache needs
//!   anyway, is then tested by [`arm`]: past its sample, that is one mix,
//!   one lookup, a tag compare and a bit test, and [`run`] has nothing to
//!   do. Any other segment (the server's data) is left to [`run`], which
//!   hashes its addresses itself: hashing them in the parser's code was
//!   verified once per monitored port. [`run`] does the claim, the counts,
//!   the budgets and the record once the packet's other processing is done.
//! - **Budget**: a per-CPU token bucket in ring bytes (`sample_ns_per_kib`)
//!   and a per-source rate of new sampled connections (`SAMPLE_SOURCES`,
//!   4,096 words: source tag, ~1 s window, count). What either sheds is
//!   counted (`samples_shed`, `sample_flows_shed`); a shed segment still
//!   counts towards its connection's cap, so the parser sees a hole, said.
//! - **Records**: [`SampleHeader`] then the payload, copied with
//!   `bpf_xdp_load_bytes` (which also reads multi-buffer frames). The
//!   verifier only takes constant reservation sizes, so a record is one of
//!   a few sizes ([`SAMPLE_CLASSES`], or header only).

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use smbwatch_common::{
    proto::tcp_flags::{ACK, FIN, RST, SYN},
    sample::{
        SampleFlow, DEFAULT_SAMPLE_FLOWS, SAMPLE_FLAG_FIN, SAMPLE_FLAG_RST, SAMPLE_FLAG_VLAN,
        SAMPLE_FLOW_DONE, SAMPLE_FLOW_FULL, SAMPLE_STALE_UNITS, SAMPLE_TO_CLIENT, SAMPLE_TO_SERVER,
    },
    stat, EVENT_FLAG_VLAN,
};

use crate::{
    count,
    parse::{Addr, Cursor, Ip, Tcp, L3},
    setting, state, Meta, Pair, Seen,
};

mod record;

use record::{send, source_allows, Sample};

#[map]
static SAMPLE_FLOWS: Array<SampleFlow> = Array::with_max_entries(DEFAULT_SAMPLE_FLOWS, 0);

/// `len` bytes at offset `off` of the packet, if they lie inside it.
/// [`run`] reads by offsets kept from the parse, so the verifier checks it
/// once rather than once per header layout the cursor's walk can end in.
#[inline(always)]
fn bytes_at(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const u8)
}

/// A big-endian u16 at `p`.
///
/// # Safety
/// `p` and `p + 1` lie inside a range [`bytes_at`] returned.
#[inline(always)]
unsafe fn be16(p: *const u8) -> u16 {
    // SAFETY: the caller checked both bytes against the packet's end.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// One word-sized load from packet memory (unaligned loads are allowed
/// where XDP runs; see parse.rs's `load`).
///
/// # Safety
/// `size_of::<T>()` bytes at `p` lie inside a range [`bytes_at`] returned.
#[inline(always)]
unsafe fn read_word<T: Copy>(p: *const u8) -> T {
    #[allow(clippy::cast_ptr_alignment)]
    // SAFETY: see the function's contract.
    unsafe {
        core::ptr::read(p as *const T)
    }
}

/// (source, destination) from the source address's offset.
#[inline(always)]
fn addrs_at(ctx: &XdpContext, addr: usize, v4: bool) -> Option<(Addr, Addr)> {
    if v4 {
        let p = bytes_at(ctx, addr, 8)?;
        // SAFETY: 8 bytes checked above.
        let (s, d) = unsafe { (read_word::<u32>(p), read_word::<u32>(p.add(4))) };
        Some((Addr::v4(s), Addr::v4(d)))
    } else {
        let p = bytes_at(ctx, addr, 32)?;
        // SAFETY: 32 bytes checked above.
        unsafe {
            Some((
                Addr([read_word::<u64>(p), read_word::<u64>(p.add(8))]),
                Addr([read_word::<u64>(p.add(16)), read_word::<u64>(p.add(24))]),
            ))
        }
    }
}

/// A big-endian u32 at `p`.
///
/// # Safety
/// Four bytes at `p` lie inside a range `bytes_at` returned.
#[inline(always)]
unsafe fn be32(p: *const u8) -> u32 {
    unsafe { (u32::from(be16(p)) << 16) | u32::from(be16(p.add(2))) }
}

/// Whether a noted segment may be sampled: the server's SYN-ACK
/// (`answer`: it came from the monitored port), a segment with payload, a
/// FIN or RST. Flags and lengths only: a pure ACK costs the sampler no
/// flow lookup and no address.
#[inline(always)]
fn wanted(flags: u8, wire_len: usize, answer: bool) -> bool {
    if flags & SYN != 0 {
        // Only the server's SYN-ACK opens a sample.
        return answer && flags & ACK != 0;
    }
    wire_len != 0 || flags & (FIN | RST) != 0
}

/// What [`note`] and [`arm`] leave for [`run`]: a segment [`wanted`] said
/// may be sampled, by offsets and the connection's hash. Per-CPU: one
/// packet's run consumes it.
#[repr(C)]
struct Pending {
    /// The connection's hash ([`flow_hash`]).
    flow: u64,
    /// The client's ([`state::Hash::src`]).
    src: u64,
    /// 1 when armed.
    set: u32,
    /// Offset of the TCP header.
    tcp: u32,
    /// Offset of the source address.
    addr: u32,
    /// TCP bytes the IP header says the packet carries.
    l4_len: u32,
    client_port: u16,
    server_port: u16,
    vlan: u16,
    /// TCP header length.
    hlen: u8,
    flags: u8,
    l2flags: u8,
    direction: u8,
    /// 1 for IPv4.
    v4: u8,
    /// 1 when `flow` and `src` hold the hashes ([`arm`]); 0: [`run`]
    /// computes them ([`arm_unhashed`]).
    hashed: u8,
    /// 1 when [`note`] noted this packet (not a fragment).
    noted: u8,
}

#[map]
static SAMPLE_PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// The keyed hash of a connection: the pair's (client -> server), with
/// the ports mixed in. The flow table's slot is its bits 32 and up, the
/// slot's tag the hash with its low bit set (never 0, which means empty).
#[inline(always)]
fn flow_hash(pair: u64, client_port: u16, server_port: u16) -> u64 {
    state::mix(pair ^ ((u64::from(client_port) << 16) | u64::from(server_port)))
}

/// Notes the offsets, lengths and flags of a monitored-port segment that
/// is not a bare SYN, for [`arm`] or [`arm_unhashed`] and [`run`]. Called
/// before the addresses are read and with no test but the fragment's, so
/// the parser's offsets die here: the verifier checks what follows once,
/// not once per header layout the parser can end in (the offsets go to a
/// per-CPU slot, where it does not track them). Sampling off is decided in
/// [`run`]'s caller, not here: with the setting a constant 0 the verifier
/// pruned the parser's states so much worse that the program passed a
/// million instructions. `c` is the cursor at the TCP header.
#[inline(always)]
pub(crate) fn note(c: &Cursor, l3: &L3, tcp: &Tcp) {
    let Some(p) = SAMPLE_PENDING.get_ptr_mut(0) else {
        return;
    };
    if l3.fragmented {
        unsafe { (*p).noted = 0 };
        return;
    }
    // The source address: 12 bytes into an IPv4 header, 8 into IPv6.
    let (v4, addr) = match l3.ip {
        Ip::V4(h) => (true, c.offset_of(h) + 12),
        Ip::V6(h) => (false, c.offset_of(h) + 8),
    };
    unsafe {
        (*p).noted = 1;
        (*p).tcp = c.offset() as u32;
        (*p).addr = addr as u32;
        (*p).l4_len = l3.l4_len as u32;
        (*p).hlen = tcp.hlen;
        (*p).flags = tcp.flags;
        (*p).v4 = u8::from(v4);
    }
}

/// Arms [`run`] for the segment [`note`] noted, unless its connection is
/// past its sample: that test (one mix of the ports into the pair's hash,
/// one lookup, a tag compare and a bit test) is all such a segment costs
/// the sampler. `seen.key` is client -> server with its ports, `h` its
/// hash; `to_client`: the segment travels server -> client.
#[inline(always)]
pub(crate) fn arm(seen: &Seen, h: state::Hash, to_client: bool) {
    let direction = if to_client {
        SAMPLE_TO_CLIENT
    } else {
        SAMPLE_TO_SERVER
    };
    let Some(p) = SAMPLE_PENDING.get_ptr_mut(0) else {
        return;
    };
    let (noted, flags, l4_len, hlen) =
        unsafe { ((*p).noted, (*p).flags, (*p).l4_len, u32::from((*p).hlen)) };
    // A lying IP length (shorter than the TCP header) is not sampled.
    if noted == 0 || l4_len < hlen || !wanted(flags, (l4_len - hlen) as usize, to_client) {
        return;
    }
    let flow = flow_hash(h.pair, seen.sport, seen.dport);
    let Some(slot) = SAMPLE_FLOWS.get_ptr(((flow >> 32) as u32) & setting!(sample_flow_mask))
    else {
        return;
    };
    let (tag, state) = unsafe { ((*slot).tag, (*slot).state) };
    if tag == flow | 1
        && (flags & SYN != 0 || state & (SAMPLE_FLOW_DONE | (SAMPLE_FLOW_FULL << direction)) != 0)
    {
        // Its own retransmitted SYN-ACK, closed, or this direction past
        // its cap. (Sampling off never claims a slot: no tag matches.)
        return;
    }
    unsafe {
        (*p).flow = flow;
        (*p).src = h.src;
        (*p).hashed = 1;
        (*p).set = 1;
        (*p).client_port = seen.sport;
        (*p).server_port = seen.dport;
        (*p).vlan = seen.vlan;
        (*p).l2flags = seen.flags;
        (*p).direction = direction;
    }
}

/// Arms [`run`] for a noted segment that has no role in the pair cache
/// (a server's data or pure ACK, a FIN or RST from either side that is not
/// an answer): no key is built here for it, [`run`] tests what [`arm`]
/// tests and hashes its addresses. Hashing in
/// the parser's code would be verified once per monitored port the ports
/// matched (four ports took the worst configuration from 0.5 to 0.87 of
/// the verifier's million instructions); in [`run`] it is verified once.
#[inline(always)]
pub(crate) fn arm_unhashed(sport: u16, dport: u16, vlan: u16, l2flags: u8, to_client: bool) {
    let Some(p) = SAMPLE_PENDING.get_ptr_mut(0) else {
        return;
    };
    let (direction, client_port, server_port) = if to_client {
        (SAMPLE_TO_CLIENT, dport, sport)
    } else {
        (SAMPLE_TO_SERVER, sport, dport)
    };
    unsafe {
        (*p).hashed = 0;
        (*p).set = 1;
        (*p).client_port = client_port;
        (*p).server_port = server_port;
        (*p).vlan = vlan;
        (*p).l2flags = l2flags;
        (*p).direction = direction;
    }
}

/// Samples the segment [`note`] left, if any: the flow table, the budgets,
/// the record. Runs once per packet, after everything else.
#[inline(always)]
pub(crate) fn run(ctx: &XdpContext, meta: Meta) {
    let Some(p) = SAMPLE_PENDING.get_ptr_mut(0) else {
        return;
    };
    if unsafe { (*p).set } == 0 {
        return;
    }
    unsafe { (*p).set = 0 };
    let (flow, src_hash, tcp, addr, l4_len, client_port, server_port, vlan) = unsafe {
        (
            (*p).flow,
            (*p).src,
            (*p).tcp as usize,
            (*p).addr as usize,
            (*p).l4_len as usize,
            (*p).client_port,
            (*p).server_port,
            (*p).vlan,
        )
    };
    let (hlen, flags, l2flags, direction, v4, hashed, noted) = unsafe {
        (
            (*p).hlen as usize,
            (*p).flags,
            (*p).l2flags,
            (*p).direction,
            (*p).v4 != 0,
            (*p).hashed != 0,
            (*p).noted != 0,
        )
    };
    // Bounds the verifier can see: note() got these from the parser, which
    // never goes past a few hundred bytes of headers.
    if !noted || tcp > 1024 || addr > 1024 || hlen > 60 || l4_len > 0xffff || l4_len < hlen {
        return;
    }
    let wire_len = l4_len - hlen;
    // arm() tested this already; arm_unhashed() did not (and its segments
    // are never answers).
    if !hashed && !wanted(flags, wire_len, false) {
        return;
    }
    let Some((src, dst)) = addrs_at(ctx, addr, v4) else {
        return;
    };
    let (client, server) = if direction == SAMPLE_TO_SERVER {
        (src, dst)
    } else {
        (dst, src)
    };
    let (hf, hs) = if hashed {
        (flow, src_hash)
    } else {
        let h = state::hash_key(&Pair {
            src: client,
            dst: server,
        });
        (flow_hash(h.pair, client_port, server_port), h.src)
    };
    // wanted() let a SYN through only as the server's SYN-ACK.
    let synack = flags & SYN != 0;
    let closing = flags & (FIN | RST) != 0;
    let tag = hf | 1;
    let Some(slot) = SAMPLE_FLOWS.get_ptr_mut(((hf >> 32) as u32) & setting!(sample_flow_mask))
    else {
        return;
    };
    let word = unsafe { (*slot).tag };
    let dir = direction as usize & 1;
    let cap = setting!(sample_segments);
    // This direction's bit once this segment reaches the cap.
    let full = SAMPLE_FLOW_FULL << direction;
    let now;
    if word == tag {
        let (seen, state) = unsafe { ((*slot).segs[dir], (*slot).state) };
        // arm() let through neither a retransmitted SYN-ACK nor a direction
        // past its cap (checked again against a racing CPU); arm_unhashed()
        // did not look: its segments past their sample end here, with no
        // clock read and no store.
        if synack || state & (SAMPLE_FLOW_DONE | full) != 0 || u32::from(seen) >= cap {
            return;
        }
        now = clock(meta);
        let units = (now >> 20) as u32;
        let mut next = state;
        if u32::from(seen) + 1 >= cap {
            next |= full;
        }
        if closing {
            next |= SAMPLE_FLOW_DONE;
        }
        unsafe {
            (*slot).segs[dir] = seen + 1;
            (*slot).last = units;
            (*slot).state = next;
        }
    } else {
        if !synack && wire_len == 0 {
            return; // a FIN or RST of a connection not sampled claims nothing
        }
        now = clock(meta);
        let units = (now >> 20) as u32;
        let (last, state) = unsafe { ((*slot).last, (*slot).state) };
        let stale = word == 0 || units.wrapping_sub(last) >= SAMPLE_STALE_UNITS;
        if !stale && !(synack && state & SAMPLE_FLOW_DONE != 0) {
            if synack {
                count(stat::SAMPLE_FLOWS_BUSY);
            }
            return;
        }
        if !source_allows(hs, now) {
            count(stat::SAMPLE_FLOWS_SHED);
            return;
        }
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                &raw mut (*slot).tag,
                word,
                tag,
            )
        };
        if !won {
            return; // another CPU took the slot meanwhile
        }
        let mut next = 0;
        if closing {
            next |= SAMPLE_FLOW_DONE;
        }
        if !synack && cap <= 1 {
            next |= full;
        }
        unsafe {
            (*slot).last = units;
            (*slot).segs = [0, 0];
            if !synack {
                (*slot).segs[dir] = 1;
            }
            (*slot).state = next;
        }
        count(stat::SAMPLE_FLOWS);
        if synack {
            // The claim is what the SYN-ACK is for: user space starts each
            // direction at its first payload segment, so a record of it
            // (a ring reservation and its clock read) would be thrown away.
            return;
        }
    }
    let Some(h) = bytes_at(ctx, tcp, 20) else {
        return;
    };
    let seq = unsafe { be32(h.add(4)) };
    let ack = unsafe { be32(h.add(8)) };
    let mut rec_flags = 0;
    if l2flags & EVENT_FLAG_VLAN != 0 {
        rec_flags |= SAMPLE_FLAG_VLAN;
    }
    if flags & FIN != 0 {
        rec_flags |= SAMPLE_FLAG_FIN;
    }
    if flags & RST != 0 {
        rec_flags |= SAMPLE_FLAG_RST;
    }
    let want = setting!(sample_bytes) as usize;
    let s = Sample {
        client: client.0,
        server: server.0,
        client_port,
        server_port,
        seq,
        ack,
        wire_len: wire_len as u32,
        direction,
        flags: rec_flags,
        vlan,
        payload: tcp + hlen,
        cap: if wire_len < want { wire_len } else { want },
    };
    send(ctx, meta, &s, now);
}

/// The sampler's clock: the program's (`state::now_coarse`), or in replay the capture's.
#[inline(always)]
fn clock(meta: Meta) -> u64 {
    if setting!(replay) != 0 {
        meta.replay_ns
    } else {
        state::now_coarse()
    }
}
