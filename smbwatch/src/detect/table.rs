//! Per-source and per-pair state in fixed slabs.
//!
//! Sources live in a slab linked into an LRU list; each source's
//! destinations are pairs in a second slab, linked oldest-first per source
//! and, while unanswered, into one global pending list ordered by SYN time.
//! Indices instead of pointers keep every operation O(1) and, once the slabs
//! have grown to their caps, allocation-free: freed slots are reused. The
//! caps themselves are enforced by the caller ([`super::Detector`]), which
//! decides what to evict.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Keyed hasher for both maps. Sources are attacker-controlled (spoofed
/// addresses), so the hash must be seeded per process; aHash is, and is
/// several times faster than SipHash on these 16- and 20-byte keys.
type State = ahash::RandomState;

/// An address as 16 bytes (IPv4 as IPv4-mapped IPv6), like the kernel's keys.
pub(super) type Key = [u8; 16];

/// "No index" in the intrusive lists.
pub(super) const NIL: u32 = u32::MAX;

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

/// One tracked source.
pub(super) struct Source {
    pub key: Key,
    /// LRU neighbours: `prev` is more recently active, `next` less.
    prev: u32,
    next: u32,
    /// Oldest and newest pair (by latest sighting).
    pub head: u32,
    pub tail: u32,
    /// Pairs in the list (= distinct destinations in the window).
    pub distinct: u32,
    /// Sums over the pairs in the list.
    pub syns: u64,
    pub accepted: u32,
    pub refused: u32,
    pub pending: u32,
    /// TRW log-likelihood ratio.
    pub llr: f64,
    /// Fan-out threshold and window (ns) for this source (subnet overrides).
    pub threshold: u32,
    pub window: i64,
    /// Latest event of the source (ns); the LRU is ordered by it.
    pub last_seen: i64,
    /// Interface and VLAN of the source's latest SYN.
    pub ifindex: u32,
    pub vlan: Option<u16>,
    /// Suppression: time of the latest alert (`i64::MIN`: none), kinds
    /// alerted since the hold-down began, fan-out at the latest alert.
    pub last_alert: i64,
    pub alerted_kinds: u8,
    pub alerted_distinct: u32,
    /// The per-source destination cap was reported for this source.
    pub dest_cap_noticed: bool,
}

/// One (source, destination) pair within the source's window.
pub(super) struct Pair {
    pub dst: Key,
    pub src: u32,
    /// Neighbours in the source's list (`prev` is older).
    prev: u32,
    next: u32,
    /// Neighbours in the pending list, while `outcome` is `Pending`.
    pprev: u32,
    pnext: u32,
    /// First SYN (drives the response timeout) and latest SYN (drives the window).
    pub first_ts: i64,
    pub ts: i64,
    pub sport: u16,
    pub dport: u16,
    /// NewPair events seen for this pair.
    pub syns: u32,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct PairKey {
    src: u32,
    dst: Key,
}

impl Hash for PairKey {
    // Two integer writes instead of a length-prefixed byte slice.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.dst));
        state.write_u32(self.src);
    }
}

/// A source address as a map key, hashed as one integer.
#[derive(Clone, Copy, PartialEq, Eq)]
struct AddrKey(Key);

impl Hash for AddrKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

/// The state table. See the module documentation.
pub(super) struct Table {
    pub sources: Vec<Source>,
    free_sources: Vec<u32>,
    by_addr: HashMap<AddrKey, u32, State>,
    /// Most and least recently active source.
    lru_head: u32,
    lru_tail: u32,
    pub pairs: Vec<Pair>,
    free_pairs: Vec<u32>,
    by_pair: HashMap<PairKey, u32, State>,
    pend_head: u32,
    pend_tail: u32,
    pending: usize,
}

impl Table {
    /// An empty table; `sources`/`pairs` size the initial allocation only.
    pub fn with_capacity(sources: usize, pairs: usize) -> Self {
        Self {
            sources: Vec::with_capacity(sources),
            free_sources: Vec::new(),
            by_addr: HashMap::with_capacity_and_hasher(sources, State::new()),
            lru_head: NIL,
            lru_tail: NIL,
            pairs: Vec::with_capacity(pairs),
            free_pairs: Vec::new(),
            by_pair: HashMap::with_capacity_and_hasher(pairs, State::new()),
            pend_head: NIL,
            pend_tail: NIL,
            pending: 0,
        }
    }

    /// Tracked sources.
    pub fn source_count(&self) -> usize {
        self.by_addr.len()
    }

    /// Tracked pairs.
    pub fn pair_count(&self) -> usize {
        self.by_pair.len()
    }

    /// Pairs waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// The slot of a tracked source.
    pub fn source(&self, key: &Key) -> Option<u32> {
        self.by_addr.get(&AddrKey(*key)).copied()
    }

    /// The least recently active source.
    pub fn lru_tail(&self) -> Option<u32> {
        (self.lru_tail != NIL).then_some(self.lru_tail)
    }

    /// The oldest pending pair.
    pub fn pending_head(&self) -> Option<u32> {
        (self.pend_head != NIL).then_some(self.pend_head)
    }

    /// Start tracking `key` as the most recently active source.
    pub fn insert_source(&mut self, key: Key, threshold: u32, window: i64, now: i64) -> u32 {
        let src = Source {
            key,
            prev: NIL,
            next: NIL,
            head: NIL,
            tail: NIL,
            distinct: 0,
            syns: 0,
            accepted: 0,
            refused: 0,
            pending: 0,
            llr: 0.0,
            threshold,
            window,
            last_seen: now,
            ifindex: 0,
            vlan: None,
            last_alert: i64::MIN,
            alerted_kinds: 0,
            alerted_distinct: 0,
            dest_cap_noticed: false,
        };
        let slot = match self.free_sources.pop() {
            Some(s) => {
                self.sources[s as usize] = src;
                s
            }
            None => {
                self.sources.push(src);
                (self.sources.len() - 1) as u32
            }
        };
        self.by_addr.insert(AddrKey(key), slot);
        self.lru_push_front(slot);
        slot
    }

    /// Mark `slot` most recently active.
    pub fn touch(&mut self, slot: u32) {
        if self.lru_head != slot {
            self.lru_unlink(slot);
            self.lru_push_front(slot);
        }
    }

    /// Forget a source and all its pairs.
    pub fn remove_source(&mut self, slot: u32) {
        while self.sources[slot as usize].head != NIL {
            let head = self.sources[slot as usize].head;
            self.remove_pair(head);
        }
        self.lru_unlink(slot);
        let key = self.sources[slot as usize].key;
        self.by_addr.remove(&AddrKey(key));
        self.free_sources.push(slot);
    }

    /// The pair (source, destination), if tracked.
    pub fn pair(&self, src: u32, dst: &Key) -> Option<u32> {
        self.by_pair.get(&PairKey { src, dst: *dst }).copied()
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
            first_ts: now,
            ts: now,
            sport,
            dport,
            syns: 1,
            outcome: Outcome::Pending,
        };
        let p = match self.free_pairs.pop() {
            Some(p) => {
                self.pairs[p as usize] = pair;
                p
            }
            None => {
                self.pairs.push(pair);
                (self.pairs.len() - 1) as u32
            }
        };
        self.by_pair.insert(PairKey { src, dst }, p);
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
        let s = &mut self.sources[src as usize];
        s.tail = p;
        s.distinct += 1;
        s.syns += 1;
        s.pending += 1;
        p
    }

    /// Another SYN for a tracked pair: it is seen again now, so it moves to
    /// the newest end of its source's list (the window counts it once).
    pub fn refresh_pair(&mut self, p: u32, now: i64, sport: u16) {
        let src = self.pairs[p as usize].src;
        self.src_unlink(p);
        self.src_append(src, p);
        let pair = &mut self.pairs[p as usize];
        pair.ts = now;
        pair.sport = sport;
        pair.syns = pair.syns.saturating_add(1);
        self.sources[src as usize].syns += 1;
    }

    /// Record the answer (or timeout) of a pending pair.
    pub fn resolve(&mut self, p: u32, outcome: Outcome) {
        debug_assert_eq!(self.pairs[p as usize].outcome, Outcome::Pending);
        self.pend_unlink(p);
        self.pairs[p as usize].outcome = outcome;
        let s = &mut self.sources[self.pairs[p as usize].src as usize];
        s.pending -= 1;
        match outcome {
            Outcome::Accepted => s.accepted += 1,
            Outcome::Failed => s.refused += 1,
            Outcome::Pending => {}
        }
    }

    /// Forget a pair, keeping its source's sums right.
    pub fn remove_pair(&mut self, p: u32) {
        let (src, dst, syns, outcome) = {
            let pair = &self.pairs[p as usize];
            (pair.src, pair.dst, pair.syns, pair.outcome)
        };
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
        self.by_pair.remove(&PairKey { src, dst });
        self.free_pairs.push(p);
    }

    /// Pairs of a source, oldest first.
    pub fn pairs_of(&self, src: u32) -> impl Iterator<Item = &Pair> + '_ {
        let mut cur = self.sources[src as usize].head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let p = &self.pairs[cur as usize];
            cur = p.next;
            Some(p)
        })
    }

    fn lru_push_front(&mut self, slot: u32) {
        let old = self.lru_head;
        {
            let s = &mut self.sources[slot as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old == NIL {
            self.lru_tail = slot;
        } else {
            self.sources[old as usize].prev = slot;
        }
        self.lru_head = slot;
    }

    fn lru_unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let s = &self.sources[slot as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.lru_head = next;
        } else {
            self.sources[prev as usize].next = next;
        }
        if next == NIL {
            self.lru_tail = prev;
        } else {
            self.sources[next as usize].prev = prev;
        }
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

    /// Walks every list and checks it against the maps and sums.
    fn check(t: &Table) {
        let mut seen = 0;
        let mut cur = t.lru_head;
        let mut prev = NIL;
        while cur != NIL {
            let s = &t.sources[cur as usize];
            assert_eq!(s.prev, prev);
            assert_eq!(t.by_addr[&AddrKey(s.key)], cur);
            let ps: Vec<&Pair> = t.pairs_of(cur).collect();
            assert_eq!(ps.len(), s.distinct as usize);
            assert_eq!(ps.iter().map(|p| u64::from(p.syns)).sum::<u64>(), s.syns);
            let count = |o| ps.iter().filter(|p| p.outcome == o).count() as u32;
            assert_eq!(count(Outcome::Accepted), s.accepted);
            assert_eq!(count(Outcome::Failed), s.refused);
            assert_eq!(count(Outcome::Pending), s.pending);
            seen += 1;
            prev = cur;
            cur = s.next;
        }
        assert_eq!(t.lru_tail, prev);
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
    fn lists_stay_consistent() {
        let mut t = Table::with_capacity(4, 4);
        let a = t.insert_source(key(1), 20, 60, 0);
        let b = t.insert_source(key(2), 20, 60, 0);
        assert_eq!(t.lru_tail(), Some(a));
        let p1 = t.insert_pair(a, key(10), 1, 5000, 445);
        let p2 = t.insert_pair(a, key(11), 2, 5001, 445);
        let p3 = t.insert_pair(b, key(10), 3, 5002, 445);
        check(&t);
        t.touch(a);
        assert_eq!(t.lru_tail(), Some(b));
        t.resolve(p2, Outcome::Accepted);
        t.refresh_pair(p1, 4, 5003);
        assert_eq!(t.sources[a as usize].head, p2);
        assert_eq!(t.pending_head(), Some(p1));
        check(&t);
        t.remove_pair(p2);
        check(&t);
        t.remove_source(a);
        check(&t);
        assert_eq!(t.source_count(), 1);
        assert_eq!(t.pair_count(), 1);
        assert_eq!(t.pending_head(), Some(p3));
        // Freed slots are reused.
        let c = t.insert_source(key(3), 20, 60, 5);
        assert_eq!(c, a);
        t.insert_pair(c, key(12), 5, 5004, 445);
        assert!(t.pairs.len() <= 3);
        check(&t);
    }
}
