//! The fan-out scales' cursors: per scale, the oldest pair of a source
//! still within that scale's window, and how many pairs from there on.

use super::{Rule, Table, MAX_SCALES, NIL};

impl Table {
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
    pub(super) fn scales_leave(&mut self, p: u32) -> u8 {
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
}
