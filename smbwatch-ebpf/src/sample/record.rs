//! What a sampled segment sends: its record (the header and the first
//! bytes of its payload, in one of a few constant sizes), and the two
//! budgets that may shed it (per-CPU ring bytes, per-source new flows).

use core::mem::size_of;

use aya_ebpf::{
    bindings::BPF_RB_AVAIL_DATA,
    helpers::bpf_xdp_load_bytes,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use smbwatch_common::{
    proto::ETH_HLEN,
    sample::{
        SampleBudget, SampleRecord, DEFAULT_SAMPLE_RING_BYTES, SAMPLE_CLASSES, SAMPLE_SOURCE_SLOTS,
        SAMPLE_SOURCE_WINDOW_SHIFT,
    },
    stat,
};

use super::bytes_at;
use crate::{count, setting, Meta};

#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_SAMPLE_RING_BYTES, 0);

#[map]
static SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::with_max_entries(1, 0);

/// Per slot: a source's hash tag (high 32 bits), its window (24 bits) and
/// the connections it started sampling in that window (low 8 bits).
#[map]
static SAMPLE_SOURCES: Array<u64> = Array::with_max_entries(SAMPLE_SOURCE_SLOTS, 0);

/// What a record says besides its bytes.
pub(super) struct Sample {
    pub(super) client: [u64; 2],
    pub(super) server: [u64; 2],
    pub(super) client_port: u16,
    pub(super) server_port: u16,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) wire_len: u32,
    pub(super) direction: u8,
    pub(super) flags: u8,
    pub(super) vlan: u16,
    /// Offset of the payload in the frame.
    pub(super) payload: usize,
    /// Bytes to copy (at most the configured sample size).
    pub(super) cap: usize,
}
/// Sends `s` in the smallest record size that holds its bytes.
#[inline(always)]
pub(super) fn send(ctx: &XdpContext, meta: Meta, s: &Sample, now: u64) {
    if s.cap == 0 {
        record::<0>(ctx, meta, s, now);
    } else if s.cap <= SAMPLE_CLASSES[0] {
        record::<{ SAMPLE_CLASSES[0] }>(ctx, meta, s, now);
    } else if s.cap <= SAMPLE_CLASSES[1] {
        record::<{ SAMPLE_CLASSES[1] }>(ctx, meta, s, now);
    } else {
        record::<{ SAMPLE_CLASSES[2] }>(ctx, meta, s, now);
    }
}

// `record`'s length mask needs each class a power of two.
const _: () = assert!(
    SAMPLE_CLASSES[0].is_power_of_two()
        && SAMPLE_CLASSES[1].is_power_of_two()
        && SAMPLE_CLASSES[2].is_power_of_two()
);

#[inline(always)]
fn record<const N: usize>(ctx: &XdpContext, meta: Meta, s: &Sample, now: u64) {
    let bytes = (size_of::<SampleRecord<N>>() + 8) as u64;
    if !budget(bytes, now) {
        count(stat::SAMPLES_SHED);
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<SampleRecord<N>>(0) else {
        count(stat::SAMPLE_RING_FULL);
        return;
    };
    let p = entry.as_mut_ptr();
    let mac = bytes_at(ctx, 6, ETH_HLEN - 6);
    unsafe {
        let h = &raw mut (*p).head;
        // The coarse clock (or the capture's), as events are stamped: the
        // reading the budget took, not a helper call more per record.
        (*h).ts_ns = now;
        *(&raw mut (*h).client).cast::<[u64; 2]>() = s.client;
        *(&raw mut (*h).server).cast::<[u64; 2]>() = s.server;
        (*h).seq = s.seq;
        (*h).ack = s.ack;
        (*h).wire_len = s.wire_len;
        (*h).ifindex = meta.ingress;
        (*h).client_port = s.client_port;
        (*h).server_port = s.server_port;
        (*h).vlan = s.vlan;
        (*h).direction = s.direction;
        (*h).flags = s.flags;
        (*h).src_mac = match mac {
            Some(m) => [*m, *m.add(1), *m.add(2), *m.add(3), *m.add(4), *m.add(5)],
            None => [0; 6],
        };
        (*h).cap_len = 0;
    }
    let mut copied = 0u16;
    if N > 0 {
        // 1..=N as the verifier can see it: `send` chose the class so that
        // 1 <= cap <= N, and for a power of two N the mask below keeps such
        // a length as it is. An explicit `1 <= n <= N` test is not enough:
        // LLVM folds it into one range compare on a copy of the register,
        // and the verifier then saw a length up to 1,023 for a 256-byte room.
        let n = ((s.cap as u32).wrapping_sub(1) & (N as u32 - 1)) + 1;
        let dst = unsafe { (&raw mut (*p).data).cast::<core::ffi::c_void>() };
        let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, s.payload as u32, dst, n) };
        if rc == 0 {
            copied = n as u16;
        }
        // A frame shorter than its IP length: the record says wire_len
        // with no bytes, a hole the parser reports.
    }
    unsafe { (*p).head.cap_len = copied };
    count(stat::SAMPLES);
    if copied > 0 {
        if let Some(slot) = crate::STATS.get_ptr_mut(stat::SAMPLE_BYTES) {
            unsafe { *slot += u64::from(copied) };
        }
    }
    entry.submit(crate::wake_flag(
        SAMPLES.query(BPF_RB_AVAIL_DATA as u64),
        bytes,
    ));
}

/// Per-CPU token bucket of ring bytes; `true` when `bytes` may be sent.
#[inline(always)]
fn budget(bytes: u64, now: u64) -> bool {
    let per_kib = setting!(sample_ns_per_kib);
    if per_kib == 0 {
        return true;
    }
    let Some(b) = SAMPLE_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    let cost = (bytes * per_kib) >> 10;
    unsafe {
        let elapsed = now.wrapping_sub((*b).last_ns);
        (*b).last_ns = now;
        let credit = (*b)
            .credit_ns
            .saturating_add(elapsed)
            .min(setting!(sample_burst_ns));
        if credit >= cost {
            (*b).credit_ns = credit - cost;
            true
        } else {
            (*b).credit_ns = credit;
            false
        }
    }
}

/// Per-source rate of new sampled connections: at most
/// `sample_source_flows` per window of 2^30 ns per rate-limiter slot. Plain
/// writes: a race lets one connection more through.
#[inline(always)]
pub(super) fn source_allows(hs: u64, now: u64) -> bool {
    let limit = u64::from(setting!(sample_source_flows));
    if limit == 0 {
        return true;
    }
    let Some(slot) = SAMPLE_SOURCES.get_ptr_mut((hs as u32) & (SAMPLE_SOURCE_SLOTS - 1)) else {
        return true;
    };
    let stamp =
        (hs & 0xffff_ffff_0000_0000) | (((now >> SAMPLE_SOURCE_WINDOW_SHIFT) & 0xff_ffff) << 8);
    let w = unsafe { *slot };
    if w & !0xff == stamp {
        if w & 0xff >= limit {
            return false;
        }
        unsafe { *slot = w + 1 };
    } else {
        unsafe { *slot = stamp | 1 };
    }
    true
}
