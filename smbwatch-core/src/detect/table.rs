//! Per-source and per-pair state in fixed slabs.
//!
//! Sources live in a slab; each is linked into the LRU list of its fan-out
//! class (see [`class_of`]), so the caller can evict from the lowest class
//! first. Each source's destinations are pairs in a second slab, linked
//! oldest-first per source and, while unanswered, into one global pending
//! list ordered by SYN time. Indices instead of pointers keep every
//! operation O(1) and, once the slabs have grown to their caps,
//! allocation-free: freed slots are reused. The two indexes
//! ([`super::index::Index`]) hold slots, the keys stay in the slabs. The caps themselves are enforced by the caller
//! ([`super::Detector`]), which decides what to evict.
//!
//! Here: the records, the source slab and its class lists; `pairs.rs`
//! holds the pair slab and its lists, `window.rs` the scales' cursors.

use super::index::Index;

/// Keyed hasher for both indexes. Sources are attacker-controlled (spoofed
/// addresses), so the hash must be seeded per process; aHash is, and is
/// several times faster than SipHash on these 16- and 20-byte keys.
type State = ahash::RandomState;

/// An address as 16 bytes (IPv4 as IPv4-mapped IPv6), like the kernel's keys.
pub(super) type Key = [u8; 16];

/// "No index" in the intrusive lists.
pub(super) const NIL: u32 = u32::MAX;

/// Fan-out classes: 1 destination (probation), 2–3, 4–7, 8–15, 16–31, 32+.
pub const CLASSES: usize = 6;

/// Most fan-out time scales per rule (`[detect] window` and up to three
/// `fanout_scales`).
pub const MAX_SCALES: usize = 4;

/// One fan-out time scale: `threshold` distinct destinations within `window` ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Scale {
    pub threshold: u32,
    pub window: i64,
}

/// The fan-out scales of a group of sources (`[detect]`, or one
/// `[[detect.subnet]]`), shortest window first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Rule {
    pub scales: [Scale; MAX_SCALES],
    /// Scales in use (1 to [`MAX_SCALES`]).
    pub n: u8,
}

impl Rule {
    /// The scales in use.
    pub fn scales(&self) -> &[Scale] {
        &self.scales[..usize::from(self.n)]
    }

    /// How long a pair is kept: the longest window.
    pub fn retention(&self) -> i64 {
        self.scales().iter().map(|s| s.window).max().unwrap_or(0)
    }
}

/// The class of a source that touched `rank` destinations: 0 for 0 or 1,
/// then one class per power of two, the last open-ended.
pub(super) fn class_of(rank: u32) -> u8 {
    if rank <= 1 {
        0
    } else {
        (31 - rank.leading_zeros()).min(CLASSES as u32 - 1) as u8
    }
}

/// What became of a pair's first SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Neither SYN-ACK nor RST yet, and not timed out.
    Pending,
    /// SYN-ACK.
    Accepted,
    /// RST, or no answer within the response timeout.
    Failed,
}

/// One tracked source: 128 bytes, the first cache line holding what
/// lookups, eviction and idle expiry read.
#[repr(C, align(64))]
pub(super) struct Source {
    pub key: Key,
    /// Neighbours in its class's LRU list: `prev` is more recently active.
    prev: u32,
    next: u32,
    /// Oldest and newest pair (by latest sighting).
    pub head: u32,
    pub tail: u32,
    /// Pairs in the list (= distinct destinations in the window).
    pub distinct: u32,
    pub pending: u32,
    /// Latest event of the source (ns); each class list is ordered by it.
    pub last_seen: i64,
    /// Hash of `key` in the source index.
    hash: u32,
    /// Whether its pairs are in the pair index: from its second pair on.
    /// A source with one pair (most of a flood) finds it at `head`, so
    /// one-shot sources never touch the index.
    indexed: bool,
    /// Fan-out class, i.e. which LRU list the source is in.
    class: u8,
    /// Destinations it touched before an eviction flushed its record (0 or
    /// 1, from [`super::recent::Recent`]); counted in its class only.
    pub carried: u8,
    /// A destination the kernel saw from this source just before the
    /// detector first heard of it (0 or 1: the event's `kernel_fanout`,
    /// while the kernel sheds events); counted for class and threshold.
    pub unseen: u8,
    /// Suppression (TRW): kinds alerted since the hold-down began.
    pub alerted_kinds: u8,
    /// The per-source destination cap was reported for this source.
    pub dest_cap_noticed: bool,
    // Second cache line (8-byte fields first, so it packs into 64 bytes).
    /// How long its pairs are kept (ns): its rule's longest window.
    pub window: i64,
    /// Sums over the pairs in the list.
    pub syns: u64,
    /// TRW log-likelihood ratio.
    pub llr: f64,
    /// Suppression (TRW): time of the latest alert (`i64::MIN`: none).
    pub last_alert: i64,
    pub accepted: u32,
    pub refused: u32,
    /// Interface and outer VLAN of the source's latest SYN.
    pub ifindex: u32,
    pub vlan: Option<u16>,
    /// How many times the walk restarted (a correction applies to the walk
    /// its outcome was part of).
    pub walk: u16,
    /// SYNs that came as first IP fragments (an evasion attempt).
    pub fragmented: u16,
    // Third cache line: the fan-out scales.
    /// Its rule (`Table::rules`): `[detect]` or a subnet override.
    pub rule: u16,
    /// Scales that may alert (bit per scale): cleared when a scale alerts,
    /// set again once its count fell below half its threshold (the sweep
    /// aged out), so a continuing sweep alerts once per scale and a new
    /// sweep alerts again.
    pub armed: u8,
    /// Time (ns) the scale cursors were advanced to.
    pub scaled_at: i64,
    /// Per scale: its oldest pair within the window (`NIL`: none) and the
    /// pairs from there to the newest (distinct destinations in the window).
    pub cursor: [u32; MAX_SCALES],
    pub count: [u32; MAX_SCALES],
    /// Per scale: its count when it last alerted (escalation: doubling).
    pub alerted: [u32; MAX_SCALES],
}

impl Source {
    /// Distinct destinations counted for fan-out: the pairs in the window
    /// plus the one the kernel saw before the detector did ([`Self::unseen`]).
    pub fn fanout(&self) -> u32 {
        self.distinct + u32::from(self.unseen)
    }

    /// Distinct destinations counted for scale `i`, with [`Self::unseen`].
    pub fn scale_fanout(&self, i: usize) -> u32 {
        self.count[i] + u32::from(self.unseen)
    }
}

/// One (source, destination) pair within the source's window: one cache line.
#[repr(C, align(64))]
pub(super) struct Pair {
    pub dst: Key,
    pub src: u32,
    /// Neighbours in the source's list (`prev` is older).
    prev: u32,
    next: u32,
    /// Neighbours in the pending list, while `outcome` is `Pending`.
    pprev: u32,
    pnext: u32,
    /// NewPair events seen for this pair.
    pub syns: u32,
    /// First SYN (drives the response timeout) and latest SYN (drives the window).
    pub first_ts: i64,
    pub ts: i64,
    pub sport: u16,
    pub dport: u16,
    /// The source's walk (`Source::walk`) when the outcome was counted.
    pub walk: u16,
    pub outcome: Outcome,
}

fn addr_hash(state: &State, key: &Key) -> u32 {
    state.hash_one(u128::from_ne_bytes(*key)) as u32
}

// Two integer writes instead of a length-prefixed byte slice.
fn pair_hash(state: &State, src: u32, dst: &Key) -> u32 {
    state.hash_one((u128::from_ne_bytes(*dst), src)) as u32
}

/// The state table. See the module documentation.
pub(super) struct Table {
    /// Fan-out scales by rule (`Source::rule`); set by the detector.
    pub rules: Vec<Rule>,
    pub sources: Vec<Source>,
    free_sources: Vec<u32>,
    /// Source slots, hashed by the slot's key.
    by_addr: Index,
    /// Most and least recently active source of each class, and how many.
    class_head: [u32; CLASSES],
    class_tail: [u32; CLASSES],
    class_len: [u32; CLASSES],
    pub pairs: Vec<Pair>,
    free_pairs: Vec<u32>,
    /// Pair slots of indexed sources (see `Source::indexed`), hashed by the
    /// slot's (source slot, destination).
    by_pair: Index,
    /// Pairs tracked (indexed or not).
    pair_len: usize,
    pend_head: u32,
    pend_tail: u32,
    pending: usize,
    /// Slab lengths never exceed these (growth stops exactly there).
    max_sources: usize,
    max_pairs: usize,
    state: State,
}

/// Push onto a slab without growing its allocation past `cap` elements.
fn push_capped<T>(v: &mut Vec<T>, item: T, cap: usize) -> u32 {
    if v.len() == v.capacity() {
        let extra = v.len().max(16).min(cap.saturating_sub(v.len())).max(1);
        v.reserve_exact(extra);
    }
    v.push(item);
    (v.len() - 1) as u32
}

impl Table {
    /// An empty table that never holds more than `max_sources` sources and
    /// `max_pairs` pairs; `sources`/`pairs` size the initial allocation.
    pub fn new(max_sources: usize, max_pairs: usize, sources: usize, pairs: usize) -> Self {
        Self {
            rules: Vec::new(),
            sources: Vec::with_capacity(sources.min(max_sources)),
            free_sources: Vec::new(),
            by_addr: Index::new(sources, max_sources),
            class_head: [NIL; CLASSES],
            class_tail: [NIL; CLASSES],
            class_len: [0; CLASSES],
            pairs: Vec::with_capacity(pairs.min(max_pairs)),
            free_pairs: Vec::new(),
            by_pair: Index::new(pairs, max_pairs),
            pair_len: 0,
            pend_head: NIL,
            pend_tail: NIL,
            pending: 0,
            max_sources,
            max_pairs,
            state: State::new(),
        }
    }

    /// Bytes allocated for sources and pairs (slabs, free lists, indexes).
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.sources.capacity() * size_of::<Source>()
            + self.pairs.capacity() * size_of::<Pair>()
            + (self.free_sources.capacity() + self.free_pairs.capacity()) * size_of::<u32>()
            + self.by_addr.bytes()
            + self.by_pair.bytes()
    }

    /// Most bytes a table with these caps holds: slabs and free lists grow
    /// to the caps and stop, and so do the indexes.
    pub fn bytes_at(max_sources: usize, max_pairs: usize) -> usize {
        use std::mem::size_of;
        max_sources * (size_of::<Source>() + size_of::<u32>())
            + max_pairs * (size_of::<Pair>() + size_of::<u32>())
            + Index::bytes_for(max_sources)
            + Index::bytes_for(max_pairs)
    }

    /// Tracked sources.
    pub fn source_count(&self) -> usize {
        self.by_addr.len()
    }

    /// Tracked pairs.
    pub fn pair_count(&self) -> usize {
        self.pair_len
    }

    /// Pairs waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// The slot of a tracked source.
    pub fn source(&self, key: &Key) -> Option<u32> {
        self.source_hashed(key, self.addr_hash(key))
    }

    /// [`Self::source`] with the hash from [`Self::addr_hash`].
    pub fn source_hashed(&self, key: &Key, hash: u32) -> Option<u32> {
        let sources = &self.sources;
        self.by_addr.find(hash, |s| sources[s as usize].key == *key)
    }

    /// The source index's hash of `key`.
    pub fn addr_hash(&self, key: &Key) -> u32 {
        addr_hash(&self.state, key)
    }

    /// Prefetch where [`Self::source_hashed`] looks.
    pub fn prefetch_source(&self, hash: u32) {
        self.by_addr.prefetch(hash);
    }

    /// The class a source is in.
    pub fn class(&self, slot: u32) -> u8 {
        self.sources[slot as usize].class
    }

    /// Every tracked source's slot, class by class (for a reload that
    /// changes per-source limits).
    pub fn live_slots(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.source_count());
        for c in 0..CLASSES {
            let mut cur = self.class_head[c];
            while cur != NIL {
                out.push(cur);
                cur = self.sources[cur as usize].next;
            }
        }
        out
    }

    /// The least recently active source of class `c`.
    pub fn class_tail(&self, c: usize) -> Option<u32> {
        (self.class_tail[c] != NIL).then_some(self.class_tail[c])
    }

    /// Whom to evict: the least recently active source of probation while
    /// it holds more than `reserve` sources, else of the lowest non-empty
    /// class (probation last). Never `keep` (the source being served).
    pub fn victim(&self, reserve: usize, keep: u32) -> Option<u32> {
        let pick = |c: usize| {
            let t = self.class_tail[c];
            let t = if t == keep && t != NIL {
                self.sources[t as usize].prev
            } else {
                t
            };
            (t != NIL).then_some(t)
        };
        if self.class_len[0] as usize > reserve {
            if let Some(v) = pick(0) {
                return Some(v);
            }
        }
        (1..CLASSES).chain([0]).find_map(pick)
    }

    /// Prefetch the record the next eviction will read (see
    /// [`super::prefetch`]); call [`Self::prefetch_victim_index`] later.
    pub fn prefetch_victim(&self, reserve: usize) {
        if let Some(v) = self.victim(reserve, NIL) {
            super::prefetch(&self.sources[v as usize]);
        }
    }

    /// Prefetch the index bucket the next eviction will update (reads the
    /// victim's record, so some time after [`Self::prefetch_victim`]).
    pub fn prefetch_victim_index(&self, reserve: usize) {
        if let Some(v) = self.victim(reserve, NIL) {
            self.by_addr.prefetch(self.sources[v as usize].hash);
        }
    }

    /// The oldest pending pair.
    pub fn pending_head(&self) -> Option<u32> {
        (self.pend_head != NIL).then_some(self.pend_head)
    }

    /// Start tracking `key` (hashed by [`Self::addr_hash`]) as the most
    /// recently active source of probation.
    pub fn insert_source(&mut self, key: Key, hash: u32, rule: u16, now: i64) -> u32 {
        let r = &self.rules[usize::from(rule)];
        let window = r.retention();
        let armed = (1u8 << r.n) - 1;
        let src = Source {
            key,
            prev: NIL,
            next: NIL,
            head: NIL,
            tail: NIL,
            distinct: 0,
            pending: 0,
            last_seen: now,
            hash,
            window,
            indexed: false,
            class: 0,
            carried: 0,
            unseen: 0,
            alerted_kinds: 0,
            dest_cap_noticed: false,
            syns: 0,
            llr: 0.0,
            walk: 0,
            fragmented: 0,
            vlan: None,
            accepted: 0,
            refused: 0,
            ifindex: 0,
            last_alert: i64::MIN,
            rule,
            armed,
            scaled_at: now,
            cursor: [NIL; MAX_SCALES],
            count: [0; MAX_SCALES],
            alerted: [0; MAX_SCALES],
        };
        let slot = match self.free_sources.pop() {
            Some(s) => {
                self.sources[s as usize] = src;
                s
            }
            None => push_capped(&mut self.sources, src, self.max_sources),
        };
        let sources = &self.sources;
        self.by_addr
            .insert(hash, slot, |s| sources[s as usize].hash);
        self.class_push_front(slot);
        slot
    }

    /// Mark `slot` most recently active, in class `class`.
    pub fn touch(&mut self, slot: u32, class: u8) {
        if self.sources[slot as usize].class == class && self.class_head[class as usize] == slot {
            return;
        }
        self.class_unlink(slot);
        self.sources[slot as usize].class = class;
        self.class_push_front(slot);
    }

    /// Forget a source and all its pairs.
    pub fn remove_source(&mut self, slot: u32) {
        while self.sources[slot as usize].head != NIL {
            let head = self.sources[slot as usize].head;
            self.remove_pair(head);
        }
        self.class_unlink(slot);
        self.by_addr.remove(self.sources[slot as usize].hash, slot);
        push_capped(&mut self.free_sources, slot, self.max_sources);
    }

    fn class_push_front(&mut self, slot: u32) {
        let c = self.sources[slot as usize].class as usize;
        let old = self.class_head[c];
        {
            let s = &mut self.sources[slot as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old == NIL {
            self.class_tail[c] = slot;
        } else {
            self.sources[old as usize].prev = slot;
        }
        self.class_head[c] = slot;
        self.class_len[c] += 1;
    }

    fn class_unlink(&mut self, slot: u32) {
        let (prev, next, c) = {
            let s = &self.sources[slot as usize];
            (s.prev, s.next, s.class as usize)
        };
        if prev == NIL {
            self.class_head[c] = next;
        } else {
            self.sources[prev as usize].next = next;
        }
        if next == NIL {
            self.class_tail[c] = prev;
        } else {
            self.sources[next as usize].prev = prev;
        }
        self.class_len[c] -= 1;
    }
}

mod pairs;
#[cfg(test)]
mod tests;
mod window;
