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

    /// The pair (source, destination), if tracked.
    pub fn pair(&self, src: u32, dst: &Key) -> Option<u32> {
        let s = &self.sources[src as usize];
        if !s.indexed {
            return (s.head != NIL && self.pairs[s.head as usize].dst == *dst).then_some(s.head);
        }
        let pairs = &self.pairs;
        self.by_pair.find(pair_hash(&self.state, src, dst), |p| {
            let p = &pairs[p as usize];
            p.src == src && p.dst == *dst
        })
    }

    /// Add a pending pair as the newest of its source.
    pub fn insert_pair(&mut self, src: u32, dst: Key, now: i64, sport: u16, dport: u16) -> u32 {
        let tail = self.sources[src as usize].tail;
        let pair = Pair {
            dst,
            src,
            prev: tail,
            next: NIL,
            pprev: self.pend_tail,
            pnext: NIL,
            syns: 1,
            first_ts: now,
            ts: now,
            sport,
            dport,
            walk: 0,
            outcome: Outcome::Pending,
        };
        let p = match self.free_pairs.pop() {
            Some(p) => {
                self.pairs[p as usize] = pair;
                p
            }
            None => push_capped(&mut self.pairs, pair, self.max_pairs),
        };
        self.pair_len += 1;
        if !self.sources[src as usize].indexed && tail != NIL {
            // The second pair: index the first one too.
            self.sources[src as usize].indexed = true;
            self.index_pair(tail);
        }
        if self.sources[src as usize].indexed {
            self.index_pair(p);
        }
        // Source list: append.
        if tail == NIL {
            self.sources[src as usize].head = p;
        } else {
            self.pairs[tail as usize].next = p;
        }
        // Pending list: append (SYN times only grow, so it stays ordered).
        if self.pend_tail == NIL {
            self.pend_head = p;
        } else {
            self.pairs[self.pend_tail as usize].pnext = p;
        }
        self.pend_tail = p;
        self.pending += 1;
        let n = self.rule_of(src).n;
        let s = &mut self.sources[src as usize];
        s.tail = p;
        s.distinct += 1;
        s.syns += 1;
        s.pending += 1;
        // The newest pair is within every window (the caller advanced the
        // scales to `now`).
        for i in 0..usize::from(n) {
            s.count[i] += 1;
            if s.cursor[i] == NIL {
                s.cursor[i] = p;
            }
        }
        p
    }

    /// The scales of a source.
    pub fn rule_of(&self, src: u32) -> Rule {
        self.rules[usize::from(self.sources[src as usize].rule)]
    }

    /// Move each scale's cursor past the pairs that left its window by
    /// `t` (a no-op for a `t` already reached). The source's list is
    /// ordered by latest sighting, so each cursor only moves forward.
    pub fn advance_scales(&mut self, src: u32, t: i64) {
        let rule = self.rule_of(src);
        let s = &mut self.sources[src as usize];
        if t <= s.scaled_at {
            return;
        }
        s.scaled_at = t;
        for (i, sc) in rule.scales().iter().enumerate() {
            let mut cur = s.cursor[i];
            while cur != NIL && self.pairs[cur as usize].ts.saturating_add(sc.window) <= t {
                cur = self.pairs[cur as usize].next;
                s.count[i] -= 1;
            }
            s.cursor[i] = cur;
        }
    }

    /// Rebuild a source's cursors from its list (after its rule changed).
    pub fn rescale(&mut self, src: u32) {
        let rule = self.rule_of(src);
        let s = &mut self.sources[src as usize];
        s.window = rule.retention();
        s.armed &= (1u8 << rule.n) - 1;
        let at = s.scaled_at;
        for (i, sc) in rule.scales().iter().enumerate() {
            let (mut cur, mut skipped) = (s.head, 0);
            while cur != NIL && self.pairs[cur as usize].ts.saturating_add(sc.window) <= at {
                cur = self.pairs[cur as usize].next;
                skipped += 1;
            }
            s.cursor[i] = cur;
            s.count[i] = s.distinct - skipped;
        }
        for i in usize::from(rule.n)..MAX_SCALES {
            (s.cursor[i], s.count[i]) = (NIL, 0);
        }
    }

    /// Before pair `p` leaves its place in its source's list: which scales
    /// count it now (bit per scale); cursors on it move to its successor.
    fn scales_leave(&mut self, p: u32) -> u8 {
        let pair = &self.pairs[p as usize];
        let (src, ts, next) = (pair.src, pair.ts, pair.next);
        let rule = self.rule_of(src);
        let s = &mut self.sources[src as usize];
        let mut within = 0u8;
        for (i, sc) in rule.scales().iter().enumerate() {
            // Cursors were advanced to `scaled_at`: a pair is at or after
            // the cursor exactly when it is still within the window then.
            if s.cursor[i] != NIL && ts.saturating_add(sc.window) > s.scaled_at {
                within |= 1 << i;
                if s.cursor[i] == p {
                    s.cursor[i] = next;
                }
            }
        }
        within
    }

    /// Another SYN for a tracked pair: it is seen again now, so it moves to
    /// the newest end of its source's list (the window counts it once).
    pub fn refresh_pair(&mut self, p: u32, now: i64, sport: u16) {
        let src = self.pairs[p as usize].src;
        let within = self.scales_leave(p);
        self.src_unlink(p);
        self.src_append(src, p);
        let n = self.rule_of(src).n;
        let s = &mut self.sources[src as usize];
        for i in 0..usize::from(n) {
            if within & (1 << i) == 0 {
                // Back within this window (the caller advanced to `now`).
                s.count[i] += 1;
            }
            if s.cursor[i] == NIL {
                s.cursor[i] = p;
            }
        }
        let pair = &mut self.pairs[p as usize];
        pair.ts = now;
        pair.sport = sport;
        pair.syns = pair.syns.saturating_add(1);
        self.sources[src as usize].syns += 1;
    }

    /// Record the answer (or timeout) of a pending pair, counted in the
    /// source's current walk.
    pub fn resolve(&mut self, p: u32, outcome: Outcome) {
        debug_assert_eq!(self.pairs[p as usize].outcome, Outcome::Pending);
        self.pend_unlink(p);
        let src = self.pairs[p as usize].src;
        let s = &mut self.sources[src as usize];
        s.pending -= 1;
        match outcome {
            Outcome::Accepted => s.accepted += 1,
            Outcome::Failed => s.refused += 1,
            Outcome::Pending => {}
        }
        let walk = s.walk;
        let pair = &mut self.pairs[p as usize];
        pair.outcome = outcome;
        pair.walk = walk;
    }

    /// An accepted pair turned out failed (RST after the SYN-ACK).
    pub fn accepted_to_failed(&mut self, p: u32) {
        debug_assert_eq!(self.pairs[p as usize].outcome, Outcome::Accepted);
        self.pairs[p as usize].outcome = Outcome::Failed;
        let s = &mut self.sources[self.pairs[p as usize].src as usize];
        s.accepted -= 1;
        s.refused += 1;
    }

    /// Forget a pair, keeping its source's sums right.
    pub fn remove_pair(&mut self, p: u32) {
        let (src, dst, syns, outcome) = {
            let pair = &self.pairs[p as usize];
            (pair.src, pair.dst, pair.syns, pair.outcome)
        };
        let within = self.scales_leave(p);
        for i in 0..MAX_SCALES {
            if within & (1 << i) != 0 {
                self.sources[src as usize].count[i] -= 1;
            }
        }
        self.src_unlink(p);
        if outcome == Outcome::Pending {
            self.pend_unlink(p);
        }
        let s = &mut self.sources[src as usize];
        s.distinct -= 1;
        s.syns -= u64::from(syns);
        match outcome {
            Outcome::Pending => s.pending -= 1,
            Outcome::Accepted => s.accepted -= 1,
            Outcome::Failed => s.refused -= 1,
        }
        if s.indexed {
            if s.distinct == 0 {
                s.indexed = false;
            }
            self.by_pair.remove(pair_hash(&self.state, src, &dst), p);
        }
        self.pair_len -= 1;
        push_capped(&mut self.free_pairs, p, self.max_pairs);
    }

    fn index_pair(&mut self, p: u32) {
        let pair = &self.pairs[p as usize];
        let (pairs, state) = (&self.pairs, &self.state);
        self.by_pair
            .insert(pair_hash(state, pair.src, &pair.dst), p, |q| {
                let q = &pairs[q as usize];
                pair_hash(state, q.src, &q.dst)
            });
    }

    /// Pairs of a source, oldest first.
    #[cfg(test)]
    pub fn pairs_of(&self, src: u32) -> impl Iterator<Item = &Pair> + '_ {
        self.pairs_from(self.sources[src as usize].head)
    }

    /// Pair `p` and the newer pairs of its source (none for `NIL`).
    pub fn pairs_from(&self, p: u32) -> impl Iterator<Item = &Pair> + '_ {
        let mut cur = p;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let p = &self.pairs[cur as usize];
            cur = p.next;
            Some(p)
        })
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

    fn src_append(&mut self, src: u32, p: u32) {
        let tail = self.sources[src as usize].tail;
        {
            let pair = &mut self.pairs[p as usize];
            pair.prev = tail;
            pair.next = NIL;
        }
        if tail == NIL {
            self.sources[src as usize].head = p;
        } else {
            self.pairs[tail as usize].next = p;
        }
        self.sources[src as usize].tail = p;
    }

    fn src_unlink(&mut self, p: u32) {
        let (src, prev, next) = {
            let pair = &self.pairs[p as usize];
            (pair.src, pair.prev, pair.next)
        };
        if prev == NIL {
            self.sources[src as usize].head = next;
        } else {
            self.pairs[prev as usize].next = next;
        }
        if next == NIL {
            self.sources[src as usize].tail = prev;
        } else {
            self.pairs[next as usize].prev = prev;
        }
    }

    fn pend_unlink(&mut self, p: u32) {
        let (prev, next) = {
            let pair = &self.pairs[p as usize];
            (pair.pprev, pair.pnext)
        };
        if prev == NIL {
            self.pend_head = next;
        } else {
            self.pairs[prev as usize].pnext = next;
        }
        if next == NIL {
            self.pend_tail = prev;
        } else {
            self.pairs[next as usize].pprev = prev;
        }
        self.pending -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        let mut k = [0u8; 16];
        k[15] = n;
        k
    }

    /// Three scales: 2 in 5 ns, 4 in 40 ns, 8 in 300 ns (times are steps).
    fn rules() -> Vec<Rule> {
        let mut r = Rule {
            n: 3,
            ..Rule::default()
        };
        for (i, (threshold, window)) in [(2, 5), (4, 40), (8, 300)].into_iter().enumerate() {
            r.scales[i] = Scale { threshold, window };
        }
        vec![r]
    }

    fn table(sources: usize, pairs: usize, a: usize, b: usize) -> Table {
        let mut t = Table::new(sources, pairs, a, b);
        t.rules = rules();
        t
    }

    /// Walks every list and checks it against the indexes and sums.
    fn check(t: &Table) {
        let mut seen = 0;
        for c in 0..CLASSES {
            let mut cur = t.class_head[c];
            let mut prev = NIL;
            let mut len = 0;
            while cur != NIL {
                let s = &t.sources[cur as usize];
                assert_eq!(s.prev, prev);
                assert_eq!(s.class as usize, c);
                assert_eq!(t.source(&s.key), Some(cur));
                let ps: Vec<&Pair> = t.pairs_of(cur).collect();
                assert_eq!(ps.len(), s.distinct as usize);
                assert_eq!(ps.iter().map(|p| u64::from(p.syns)).sum::<u64>(), s.syns);
                let count = |o| ps.iter().filter(|p| p.outcome == o).count() as u32;
                assert_eq!(count(Outcome::Accepted), s.accepted);
                assert_eq!(count(Outcome::Failed), s.refused);
                assert_eq!(count(Outcome::Pending), s.pending);
                for p in &ps {
                    assert!(t.pair(cur, &p.dst).is_some());
                }
                // Each scale counts exactly the pairs within its window.
                for (i, sc) in t.rule_of(cur).scales().iter().enumerate() {
                    let within: Vec<&&Pair> = ps
                        .iter()
                        .filter(|p| p.ts + sc.window > s.scaled_at)
                        .collect();
                    assert_eq!(s.count[i] as usize, within.len(), "scale {i}");
                    let first = within.first().map(|p| (p.dst, p.ts));
                    let cursor = (s.cursor[i] != NIL).then(|| {
                        let p = &t.pairs[s.cursor[i] as usize];
                        (p.dst, p.ts)
                    });
                    assert_eq!(cursor, first, "scale {i} cursor");
                }
                len += 1;
                prev = cur;
                cur = s.next;
            }
            assert_eq!(t.class_tail[c], prev);
            assert_eq!(t.class_len[c] as usize, len);
            seen += len;
        }
        assert_eq!(seen, t.source_count());
        let mut pend = 0;
        let mut cur = t.pend_head;
        while cur != NIL {
            assert_eq!(t.pairs[cur as usize].outcome, Outcome::Pending);
            pend += 1;
            cur = t.pairs[cur as usize].pnext;
        }
        assert_eq!(pend, t.pending_count());
    }

    #[test]
    fn layout_is_three_and_one_cache_lines() {
        assert_eq!(std::mem::size_of::<Source>(), 192);
        assert_eq!(std::mem::size_of::<Pair>(), 64);
    }

    #[test]
    fn classes_by_powers_of_two() {
        let classes: Vec<u8> = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 5000]
            .into_iter()
            .map(class_of)
            .collect();
        assert_eq!(classes, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn lists_stay_consistent() {
        let mut t = table(4, 4, 4, 4);
        let a = t.insert_source(key(1), t.addr_hash(&key(1)), 0, 0);
        let b = t.insert_source(key(2), t.addr_hash(&key(2)), 0, 0);
        assert_eq!(t.class_tail(0), Some(a));
        let p1 = t.insert_pair(a, key(10), 1, 5000, 445);
        let p2 = t.insert_pair(a, key(11), 2, 5001, 445);
        let p3 = t.insert_pair(b, key(10), 3, 5002, 445);
        check(&t);
        t.touch(a, class_of(2));
        assert_eq!((t.class_tail(0), t.class_tail(1)), (Some(b), Some(a)));
        // Probation over its reserve gives the victim; else the lowest class.
        assert_eq!(t.victim(0, NIL), Some(b));
        assert_eq!(t.victim(1, NIL), Some(a));
        assert_eq!(t.victim(1, a), Some(b), "never the source being served");
        t.resolve(p2, Outcome::Accepted);
        t.advance_scales(a, 4);
        t.refresh_pair(p1, 4, 5003);
        assert_eq!(t.sources[a as usize].head, p2);
        assert_eq!(t.pending_head(), Some(p1));
        check(&t);
        t.accepted_to_failed(p2);
        check(&t);
        t.remove_pair(p2);
        check(&t);
        t.remove_source(a);
        check(&t);
        assert_eq!(t.source_count(), 1);
        assert_eq!(t.pair_count(), 1);
        assert_eq!(t.pending_head(), Some(p3));
        // Freed slots are reused.
        let c = t.insert_source(key(3), t.addr_hash(&key(3)), 0, 5);
        assert_eq!(c, a);
        t.insert_pair(c, key(12), 5, 5004, 445);
        assert!(t.pairs.len() <= 3);
        check(&t);
    }

    #[test]
    fn random_operations_keep_every_list_and_index_consistent() {
        // A fixed pseudo-random sequence of every operation, checked often.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        };
        let addr = |i: u32| {
            let mut k = [0u8; 16];
            k[12..].copy_from_slice(&i.to_be_bytes());
            k
        };
        let mut t = table(64, 256, 4, 4);
        let mut peak = (0, 0);
        for step in 0..20_000u32 {
            let live: Vec<u32> = (0..CLASSES)
                .flat_map(|c| {
                    let mut v = Vec::new();
                    let mut cur = t.class_head[c];
                    while cur != NIL {
                        v.push(cur);
                        cur = t.sources[cur as usize].next;
                    }
                    v
                })
                .collect();
            let pick = |r: u32| live.get(r as usize % live.len().max(1)).copied();
            match rnd(8) {
                0 | 1 if t.source_count() < 64 => {
                    let k = addr(rnd(200));
                    if t.source(&k).is_none() {
                        t.insert_source(k, t.addr_hash(&k), 0, i64::from(step));
                    }
                }
                2 | 3 => {
                    if let (Some(s), true) = (pick(rnd(1000)), t.pair_count() < 256) {
                        let d = addr(rnd(12));
                        t.advance_scales(s, i64::from(step));
                        match t.pair(s, &d) {
                            None => {
                                t.insert_pair(s, d, i64::from(step), 1, 445);
                            }
                            Some(p) => t.refresh_pair(p, i64::from(step), 2),
                        }
                    }
                }
                4 => {
                    if let Some(s) = pick(rnd(1000)) {
                        t.touch(s, class_of(rnd(40)));
                        t.advance_scales(s, i64::from(step));
                    }
                }
                5 => {
                    if let Some(p) = t.pending_head() {
                        t.resolve(
                            p,
                            if rnd(2) == 0 {
                                Outcome::Accepted
                            } else {
                                Outcome::Failed
                            },
                        );
                    }
                }
                6 => {
                    if let Some(s) = pick(rnd(1000)) {
                        let head = t.sources[s as usize].head;
                        if head != NIL {
                            match t.pairs[head as usize].outcome {
                                Outcome::Accepted if rnd(2) == 0 => t.accepted_to_failed(head),
                                _ => t.remove_pair(head),
                            }
                        }
                    }
                }
                _ => {
                    if let Some(s) = pick(rnd(1000)) {
                        if rnd(4) == 0 {
                            t.remove_source(s);
                        }
                    }
                }
            }
            if step % 97 == 0 {
                check(&t);
            }
            peak = (peak.0.max(t.source_count()), peak.1.max(t.pair_count()));
        }
        check(&t);
        // The walk reached both caps' neighbourhood (full tables, indexed sources).
        assert!(peak.0 >= 60 && peak.1 >= 100, "{peak:?}");
        assert!(t.sources.capacity() <= 64 && t.pairs.capacity() <= 256);
    }

    #[test]
    fn slabs_stop_growing_at_the_caps() {
        let mut t = table(1000, 1500, 16, 16);
        for i in 0..1000u32 {
            let mut k = [0u8; 16];
            k[12..].copy_from_slice(&i.to_be_bytes());
            let s = t.insert_source(k, t.addr_hash(&k), 0, 0);
            t.insert_pair(s, key(1), 0, 1, 445);
        }
        assert_eq!(t.sources.capacity(), 1000);
        assert!(t.pairs.capacity() <= 1500);
    }
}
