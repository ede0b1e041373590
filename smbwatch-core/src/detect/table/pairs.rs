//! Pairs: a source's destinations in its list (oldest first), the pair
//! index of sources with two or more, and the global pending list.

use super::{pair_hash, push_capped, Key, Outcome, Pair, Table, MAX_SCALES, NIL};

impl Table {
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
