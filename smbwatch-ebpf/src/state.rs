//! The program's state: a set-associative pair cache with activity epochs,
//! a repeat filter, per-source distinct-destination sketches, a per-CPU
//! event budget and the unparsed-report rate limiter. All are arrays indexed
//! by a keyed hash: one or two map lookups per packet, whatever the traffic.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use smbwatch_common::{
    origin, pair_tag, slot_word, stat, EventKind, PairSlot, PairState, SourceSlot,
    ANSWERS_OTHER_INGRESS, EPOCH_MASK, EVENT_FLAG_AFTER_ACCEPT, EVENT_FLAG_REPEAT, PAIR_FLAGS_SEEN,
    PAIR_FLAG_SEEN_ACCEPTED, PAIR_FLAG_SEEN_CONFIRMED, PAIR_FLAG_SEEN_REFUSED, PAIR_FLAG_SHED,
    PAIR_WAYS, PRIORITY_FANOUT_CAP, SEEN_BITS_PER_WORD, SEEN_FLAGS_SHIFT, SEEN_INNER_LINES,
    SOURCE_INNER_LINES, UNPARSED_SLOTS, UNPARSED_WINDOW_SHIFT,
};

use crate::{
    count, emit, parse::Addr, setting, Pair, Seen, BUDGET, PAIRS, SEEN, SOURCES, UNPARSED,
};

const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// A strong 64-bit finaliser (murmur3's): every input bit reaches every
/// output bit, so slots and tags are independent.
#[inline(always)]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Keyed hash of a source.
#[inline(always)]
pub(crate) fn hash_src(a: &Addr) -> u64 {
    // An IPv4 source (IPv4-mapped: its first word is 0) starts from
    // mix(key), the same for all of them: read from KEY_MIXED instead of
    // computed, one finaliser less on the chain before the bucket load.
    let inner = if a.0[0] == 0 {
        key_mixed()
    } else {
        mix(setting!(hash_key) ^ a.0[0])
    };
    mix(inner.wrapping_add(a.0[1].wrapping_mul(K)))
}

/// `mix(hash_key)`, computed on first use (0 = not yet; should it ever be
/// 0, it is computed every time). Two CPUs racing store the same value.
#[unsafe(no_mangle)]
static mut KEY_MIXED: u64 = 0;

/// `mix(hash_key)`: the first step of every IPv4 source's hash.
#[inline(always)]
fn key_mixed() -> u64 {
    let cached = unsafe { core::ptr::read_volatile(&raw const KEY_MIXED) };
    if cached != 0 {
        return cached;
    }
    let m = mix(setting!(hash_key));
    unsafe { core::ptr::write_volatile(&raw mut KEY_MIXED, m) };
    m
}

/// Keyed hash of a pair, chained from the source's.
///
/// The destination's first word gets a finaliser of its own before the
/// second is added. Combined with `^` and `+` alone, flipping the top bit
/// of both words (`d0 ^ 2^63`, `d1 + 2^63`) gave the same hash whatever the
/// key: a sender could pick a decoy destination whose pair hides another's
/// (tests/tests/kernel.rs has the case). A first word of 0 (every IPv4
/// destination) has nothing to flip and skips it.
#[inline(always)]
pub(crate) fn hash_pair(hs: u64, dst: &Addr) -> u64 {
    let x = if dst.0[0] == 0 {
        hs
    } else {
        mix(hs ^ dst.0[0])
    };
    mix(x.wrapping_add(dst.0[1].wrapping_mul(K)))
}

/// The program's clock in ns: jiffies × the tick (`Settings::tick_ns`).
/// `bpf_jiffies64` is inlined by the JIT, so this is a load and a multiply
/// where a clock helper cost a call (20–35 ns on a VM: retpoline and return
/// thunk). Tick resolution (1–10 ms) is plenty for windows and budgets of
/// seconds and for the events' times; the daemon turns it into UTC with a
/// calibrated offset (jiffies do not start at boot). Tick 0: the coarse
/// helper, for the benchmark's same-object comparison (the verifier drops
/// the branch not taken: the setting is read-only).
#[inline(always)]
pub(crate) fn now_coarse() -> u64 {
    let tick = setting!(tick_ns);
    if tick == 0 {
        return unsafe { bpf_ktime_get_coarse_ns() };
    }
    unsafe { bpf_jiffies64() }.wrapping_mul(tick)
}

/// The clock a packet is counted and stamped by: the program's, or in
/// replay its capture time, so that the sources' windows, the repeat
/// filter's generations, the unparsed reporter's windows and the events'
/// times mean in replay what they mean live (a capture of hours replays in
/// seconds).
#[inline(always)]
fn now_for(seen: &Seen) -> u64 {
    if setting!(replay) != 0 {
        seen.replay_ns
    } else {
        now_coarse()
    }
}

/// The way holding `tag` in its bucket, and its word.
#[inline(always)]
fn find(bucket: *mut PairSlot, tag: u64) -> Option<(*mut PairSlot, u64)> {
    let mut w = 0;
    while w < PAIR_WAYS {
        let slot = unsafe { bucket.add(w) };
        let word = unsafe { (*slot).word };
        if word & !EPOCH_MASK == tag {
            return Some((slot, word));
        }
        w += 1;
    }
    None
}

/// The keyed hashes of a pair: its source's and its own. Computed once
/// per packet: the pair cache and the sampler's flow table (sample.rs,
/// which mixes the ports in) share them.
#[derive(Clone, Copy)]
pub(crate) struct Hash {
    pub src: u64,
    pub pair: u64,
}

/// [`Hash`] of a client -> server key.
#[inline(always)]
pub(crate) fn hash_key(key: &Pair) -> Hash {
    let src = hash_src(&key.src);
    Hash {
        src,
        pair: hash_pair(src, &key.dst),
    }
}

/// An index below `n` from the low 32 bits of `bits` (multiply-shift: no
/// division, so table sizes need not be powers of two).
#[inline(always)]
fn reduce(bits: u64, n: u32) -> u32 {
    (((bits & 0xffff_ffff) * n as u64) >> 32) as u32
}

/// Bucket and tag of a pair from its hash. A plain array, not an array of
/// arrays like SEEN and SOURCES: the second lookup cost every known pair,
/// answer and client segment 1.2-2 ns, more than the 10-46 ns it took off
/// a new pair is worth (BENCHMARKS.md, "Arrays of arrays").
#[inline(always)]
fn bucket(hp: u64) -> Option<(*mut PairSlot, u64)> {
    let bucket = PAIRS.get_ptr_mut((hp as u32) & setting!(pair_mask))?;
    Some((bucket.cast::<PairSlot>(), pair_tag(hp)))
}

/// Bucket and tag of a pair, and the source's hash.
#[inline(always)]
fn locate(key: &Pair) -> Option<(*mut PairSlot, u64, u64)> {
    let h = hash_key(key);
    let (bucket, tag) = bucket(h.pair)?;
    Some((bucket, tag, h.src))
}

/// The current epoch and when it ends: `(end in jiffies << 16) | epoch`
/// (jiffies stay below 2^48 for millennia). One word, so a reader never
/// sees an end from one epoch with the number of another; every CPU may
/// refresh it, with the same value.
#[unsafe(no_mangle)]
static mut EPOCH_NOW: u64 = 0;

/// The activity epoch (its low 16 bits) a SYN falls in: jiffies (inlined
/// by the JIT, so no helper call on the known-pair path) against the
/// cached epoch end, dividing only once per epoch; in replay the capture's
/// time (which may start anywhere) over the epoch length in ns.
#[inline(always)]
fn epoch(seen: &Seen) -> u64 {
    let len = setting!(epoch_ticks);
    if setting!(replay) != 0 {
        // A zero length (never loaded so) would make one endless epoch.
        return seen.replay_ns.checked_div(len).unwrap_or(0) & EPOCH_MASK;
    }
    let now = unsafe { bpf_jiffies64() };
    let cached = unsafe { core::ptr::read_volatile(&raw const EPOCH_NOW) };
    if now < cached >> 16 {
        return cached & EPOCH_MASK;
    }
    let e = now.checked_div(len).unwrap_or(0);
    let end = (e + 1).wrapping_mul(len);
    unsafe { core::ptr::write_volatile(&raw mut EPOCH_NOW, (end << 16) | (e & EPOCH_MASK)) };
    e & EPOCH_MASK
}

/// Claims `slot` from `old` to `new` (compare-and-swap): true for the one
/// CPU that did.
#[inline(always)]
fn claim_word(slot: *mut PairSlot, old: u64, new: u64) -> bool {
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            &raw mut (*slot).word,
            old,
            new,
        )
    };
    won
}

/// A bare SYN to a monitored port.
#[inline(always)]
pub fn on_syn(seen: &Seen) {
    count(stat::MONITORED_SYNS);
    let Some((bucket, tag, hs)) = locate(&seen.key) else {
        return;
    };
    let now_epoch = epoch(seen);
    if let Some((slot, word)) = find(bucket, tag) {
        if word & EPOCH_MASK == now_epoch {
            // A known pair within its epoch, the common case: count the SYN.
            // Plain writes: a lost count under a race costs one SYN.
            unsafe { (*slot).syns = (*slot).syns.saturating_add(1) };
            return;
        }
        // Its first SYN in a new epoch: report it again, once (the CAS).
        if claim_word(slot, word, slot_word(tag, now_epoch)) {
            report_again(seen, slot, hs, tag);
        }
        return;
    }
    // Victim: the first empty way, else one picked by the hash (random to an
    // attacker who does not know the key).
    let mut victim = unsafe { bucket.add(((tag >> 40) as usize) % PAIR_WAYS) };
    let mut w = 0;
    while w < PAIR_WAYS {
        let slot = unsafe { bucket.add(w) };
        if unsafe { (*slot).word } == 0 {
            victim = slot;
            break;
        }
        w += 1;
    }
    let old = unsafe { (*victim).word };
    if !claim_word(victim, old, slot_word(tag, now_epoch)) {
        return; // another CPU claimed the way meanwhile; it reports
    }
    unsafe {
        (*victim).origin = origin(seen.ingress, seen.vlan);
        (*victim).syns = 0;
        (*victim).state = PairState::Syn as u8;
        (*victim).flags = 0;
    }
    count(stat::NEW_PAIRS);
    report_contact(seen, victim, hs, tag, EventKind::NewPair, 0, 0);
}

/// A known pair's first SYN in a later epoch (this CPU won the claim):
/// report it with what was seen since its previous report, and start the
/// epoch afresh so that its answers are reported again.
#[inline(always)]
fn report_again(seen: &Seen, slot: *mut PairSlot, hs: u64, tag: u64) {
    let (syns, flags) = unsafe { ((*slot).syns, (*slot).flags) };
    unsafe {
        (*slot).origin = origin(seen.ingress, seen.vlan);
        (*slot).syns = 0;
        (*slot).state = PairState::Syn as u8;
        (*slot).flags = 0;
    }
    count(stat::ACTIVE_PAIRS);
    // A pair whose previous report was shed is news to the daemon.
    let kind = if flags & PAIR_FLAG_SHED != 0 {
        EventKind::NewPair
    } else {
        EventKind::Active
    };
    let seen_flags = (flags & PAIR_FLAGS_SEEN) << SEEN_FLAGS_SHIFT;
    report_contact(
        seen,
        slot,
        hs,
        tag,
        kind,
        seen_flags,
        syns.saturating_add(1),
    );
}

/// Counts a contact (new pair, or a known one in a new epoch) against its
/// source and reports it within the budget.
#[inline(always)]
fn report_contact(
    seen: &Seen,
    slot: *mut PairSlot,
    hs: u64,
    tag: u64,
    kind: EventKind,
    flags: u8,
    syns: u16,
) {
    let now = now_for(seen);
    let dbit = ((tag >> 48) & 127) as u32;
    let fanout = track_source(&seen.key.src, hs, dbit, now);
    let priority = fanout > 0 && fanout < PRIORITY_FANOUT_CAP;
    if !budget(now, priority) {
        unsafe { (*slot).flags = PAIR_FLAG_SHED };
        count(stat::EVENTS_SHED);
        return;
    }
    let repeat = if fanout > 0 { EVENT_FLAG_REPEAT } else { 0 };
    emit(seen, now, kind, flags | repeat, fanout, syns);
}

/// A SYN-ACK (`rst == false`) or RST from a monitored port; `seen.key` is
/// already client -> server. Reported when it changes the pair's outcome in
/// this epoch: the first answer, a SYN-ACK after a refusal (the server came
/// up), a RST after an unconfirmed SYN-ACK. `hp`: the key's
/// [`Hash::pair`].
#[inline(always)]
pub fn on_answer(seen: &Seen, hp: u64, rst: bool) {
    let Some((bucket, tag)) = bucket(hp) else {
        return;
    };
    let Some((slot, _)) = find(bucket, tag) else {
        return;
    };
    let (state, flags, from) = unsafe { ((*slot).state, (*slot).flags, (*slot).origin) };
    if setting!(answers) == ANSWERS_OTHER_INGRESS && from == origin(seen.ingress, seen.vlan) {
        // A router sees a server's answer come in on the server's side; one
        // arriving where the SYN came from was injected by the client's side.
        count(stat::ANSWERS_SAME_INGRESS);
        return;
    }
    let Some(state) = PairState::from_u8(state) else {
        return;
    };
    let (next, kind, extra, bit) = match (state, rst) {
        (PairState::Syn | PairState::Refused, false) => (
            PairState::Accepted,
            EventKind::Accepted,
            0,
            PAIR_FLAG_SEEN_ACCEPTED,
        ),
        (PairState::Syn, true) => (
            PairState::Refused,
            EventKind::Refused,
            0,
            PAIR_FLAG_SEEN_REFUSED,
        ),
        (PairState::Accepted, true) => {
            count(stat::RESETS_AFTER_ACCEPT);
            (
                PairState::Refused,
                EventKind::Refused,
                EVENT_FLAG_AFTER_ACCEPT,
                PAIR_FLAG_SEEN_REFUSED,
            )
        }
        // Retransmitted or settled: remembered for the next Active report.
        (PairState::Accepted | PairState::Confirmed, false) => {
            mark(slot, flags, PAIR_FLAG_SEEN_ACCEPTED);
            return;
        }
        (PairState::Refused, true) => {
            mark(slot, flags, PAIR_FLAG_SEEN_REFUSED);
            return;
        }
        (PairState::Confirmed, true) => return, // a reset of a complete connection
    };
    // Plain writes: answers of one flow hash to one RX queue, so two CPUs
    // racing on one pair's answer is not a case worth an atomic per answer.
    unsafe {
        (*slot).state = next as u8;
        (*slot).flags = flags | bit;
    }
    if flags & PAIR_FLAG_SHED != 0 {
        return; // the daemon never heard of the pair this epoch
    }
    count(stat::RESPONSES);
    emit(seen, now_for(seen), kind, extra, 0, 0);
}

/// Sets `bit` in a slot's flags unless set (no store when nothing changes).
#[inline(always)]
fn mark(slot: *mut PairSlot, flags: u8, bit: u8) {
    if flags & bit == 0 {
        unsafe { (*slot).flags = flags | bit };
    }
}

/// An ACK or RST from the client. An ACK after the SYN-ACK completes the
/// handshake: reported as Confirmed, once per epoch. A spoofed SYN's
/// SYN-ACK goes to the forged address, which never sends one (at most a
/// RST, which confirms nothing). `hp`: the key's [`Hash::pair`].
#[inline(always)]
pub fn on_client_ack(seen: &Seen, hp: u64, rst: bool) {
    let Some((bucket, tag)) = bucket(hp) else {
        return;
    };
    let Some((slot, _)) = find(bucket, tag) else {
        return;
    };
    if rst || unsafe { (*slot).state } != PairState::Accepted as u8 {
        return;
    }
    let flags = unsafe { (*slot).flags };
    unsafe {
        (*slot).state = PairState::Confirmed as u8;
        (*slot).flags = flags | PAIR_FLAG_SEEN_CONFIRMED;
    }
    if flags & PAIR_FLAG_SHED != 0 {
        return;
    }
    count(stat::CONFIRMED);
    emit(seen, now_for(seen), EventKind::Confirmed, 0, 0, 0);
}

/// A packet past the walk's bounds: reported once per (source,
/// destination) per window (about a minute), within the event budget. Per
/// pair, not per source: a sweep hidden behind a long header chain must
/// show the detector every host it reaches (`smb_evasion_attempt` counts
/// destinations), while a flood at one host costs one report a window.
#[inline(always)]
pub fn on_unparsed(seen: &Seen) {
    let hs = hash_pair(hash_src(&seen.key.src), &seen.key.dst);
    let Some(slot) = UNPARSED.get_ptr_mut((hs as u32) & (UNPARSED_SLOTS - 1)) else {
        return;
    };
    let now = now_for(seen);
    let stamp = (hs & 0xffff_ffff_0000_0000) | ((now >> UNPARSED_WINDOW_SHIFT) & 0xffff_ffff);
    if unsafe { *slot } == stamp {
        return; // reported in this window already
    }
    // A plain write: two CPUs racing on one pair report it twice, once.
    unsafe { *slot = stamp };
    if !budget(now, false) {
        count(stat::EVENTS_SHED);
        return;
    }
    count(stat::UNPARSED_REPORTS);
    emit(seen, now, EventKind::Unparsed, 0, 0, 0);
}

/// Counts a new pair against its source. Returns the source's
/// distinct-destination estimate when it is tracked (it opened another pair
/// within the repeat horizon), else 0.
///
/// The repeat filter is asked first: a one-shot source (a spoofed flood)
/// then costs one cache line here, not three. A tracked source that paused
/// longer than the horizon loses that one pair from its bitmap, nothing more.
#[inline(always)]
fn track_source(src: &Addr, hs: u64, dbit: u32, now: u64) -> u16 {
    if !seen_before(hs, now) {
        return 0;
    }
    count(stat::REPEAT_SOURCES);
    // Two candidate slots side by side in one inner array: the second
    // costs no extra cache miss (nor lookup).
    let outer = reduce(hs, setting!(source_outer));
    let line = reduce(hs >> 32, SOURCE_INNER_LINES);
    let Some(a) = SOURCES.get_value_ptr_mut(outer, &line) else {
        return 0;
    };
    let a = a.cast::<SourceSlot>();
    // SAFETY: a line is two slots.
    let b = unsafe { a.add(1) };
    let slot = if holds(a, src) {
        a
    } else if holds(b, src) {
        b
    } else {
        let Some(slot) = claim(a, b, now) else {
            count(stat::SOURCES_FULL);
            // Still a repeat: report it as one, with the smallest estimate.
            return 2;
        };
        unsafe {
            // The key's 16 bytes as two words: the slot is 8-aligned.
            *(&raw mut (*slot).addr).cast::<[u64; 2]>() = src.0;
            (*slot).cur = [0, 0];
            (*slot).prev = [0, 0];
            (*slot).window_start_ns = now;
            (*slot).first_seen_ns = now;
            (*slot).new_pairs = 1; // the pair the filter remembered
        }
        slot
    };
    unsafe {
        let half = setting!(half_window_ns);
        let age = now.wrapping_sub((*slot).window_start_ns);
        if age >= half {
            (*slot).prev = if age >= 2 * half { [0, 0] } else { (*slot).cur };
            (*slot).cur = [0, 0];
            (*slot).window_start_ns = now;
        }
        (*slot).cur[(dbit >> 6) as usize & 1] |= 1u64 << (dbit & 63);
        (*slot).new_pairs += 1;
        (*slot).last_seen_ns = now;
        // The filter's earlier pair is not in the bitmap (its destination is
        // unknown): count it, so a tracked source is never below 2.
        ((*slot).distinct_estimate() + 1).min(u16::MAX as u32) as u16
    }
}

/// Whether a slot holds `b`.
#[inline(always)]
fn holds(slot: *mut SourceSlot, b: &Addr) -> bool {
    let a = unsafe { *(&raw const (*slot).addr).cast::<[u64; 2]>() };
    a[0] == b.0[0] && a[1] == b.0[1]
}

/// Which of the two candidate slots a new source may take: an empty or
/// stale one, else the one with fewer destinations if that is a one- or
/// two-destination source. A source with many destinations is never
/// displaced by a newcomer, whatever the flood: that is what keeps a slow
/// scanner visible under spoofed sources.
#[inline(always)]
fn claim(a: *mut SourceSlot, b: *mut SourceSlot, now: u64) -> Option<*mut SourceSlot> {
    let stale = 2 * setting!(half_window_ns);
    let free = |s: *mut SourceSlot| unsafe {
        (*s).first_seen_ns == 0 || now.wrapping_sub((*s).last_seen_ns) > stale
    };
    if free(a) {
        return Some(a);
    }
    if free(b) {
        return Some(b);
    }
    let (ea, eb) = unsafe { ((*a).distinct_estimate(), (*b).distinct_estimate()) };
    let (s, e) = if ea <= eb { (a, ea) } else { (b, eb) };
    (e <= 2).then_some(s)
}

/// Repeat filter: was this source seen within the last one to two
/// generations? Marks it seen in the current one. A bitmap with an 8-bit
/// generation tag per word: a word from an older generation reads as empty,
/// so nothing ever has to clear it.
#[inline(always)]
fn seen_before(hs: u64, now: u64) -> bool {
    let gen = now >> setting!(seen_gen_shift);
    // The two generations' words sit side by side: one cache line, one
    // lookup. Inner array from bits 16..47, line from bits 48..63 and 0..15
    // (rotated), the bit from bits 40..63: as independent as 64 bits allow.
    let outer = reduce(hs >> 16, setting!(seen_outer));
    let inner = reduce(hs.rotate_left(16), SEEN_INNER_LINES);
    let bit = 1u64 << (((hs >> 40) as u32) % SEEN_BITS_PER_WORD);
    let cur_tag = (gen & 0xff) << SEEN_BITS_PER_WORD;
    let prev_tag = (gen.wrapping_sub(1) & 0xff) << SEEN_BITS_PER_WORD;
    let tag_mask = 0xffu64 << SEEN_BITS_PER_WORD;
    let odd = (gen & 1) as usize;
    let Some(line) = SEEN.get_value_ptr_mut(outer, &inner) else {
        return false;
    };
    let line = line.cast::<u64>();
    // SAFETY: a line is two words; odd is 0 or 1.
    let (cur, prev) = unsafe { (line.add(odd), line.add(odd ^ 1)) };
    let w = unsafe { *prev };
    let mut hit = w & tag_mask == prev_tag && w & bit != 0;
    let w = unsafe { *cur };
    if w & tag_mask == cur_tag {
        hit |= w & bit != 0;
        if w & bit == 0 {
            // Lost bits under a race only cost a missed repeat.
            unsafe { *cur = w | bit };
        }
    } else {
        unsafe { *cur = cur_tag | bit };
    }
    hit
}

/// Per-CPU token bucket. Tracked sources below the fan-out cap draw on a
/// priority class first, so one-shot spoofed sources cannot starve them.
#[inline(always)]
fn budget(now: u64, priority: bool) -> bool {
    let cost = setting!(event_cost_ns);
    if cost == 0 {
        return true;
    }
    let Some(b) = BUDGET.get_ptr_mut(0) else {
        return true;
    };
    let burst = setting!(burst_ns);
    unsafe {
        let elapsed = now.wrapping_sub((*b).last_ns);
        (*b).last_ns = now;
        let credit = (*b).credit_ns.saturating_add(elapsed).min(burst);
        let prio = (*b).priority_credit_ns.saturating_add(elapsed).min(burst);
        if priority && prio >= cost {
            (*b).credit_ns = credit;
            (*b).priority_credit_ns = prio - cost;
            true
        } else if credit >= cost {
            (*b).credit_ns = credit - cost;
            (*b).priority_credit_ns = prio;
            true
        } else {
            (*b).credit_ns = credit;
            (*b).priority_credit_ns = prio;
            false
        }
    }
}
