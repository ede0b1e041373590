//! A contact and its answer: a new or active pair of a source (admitted,
//! evicting another when the table is full), and the answer that decides
//! a pending pair for TRW.

use std::net::IpAddr;

use super::table::{self, class_of, Key, Outcome};
use super::{addr_key, Cap, Detector, Members, Mode};
use crate::alert::Alert;
use crate::event::GatewayEvent;

impl Detector {
    pub(super) fn new_pair(
        &mut self,
        src: IpAddr,
        ev: &GatewayEvent,
        now: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let key = addr_key(src);
        let dst = addr_key(ev.dst.to_canonical());
        let hash = self.table.addr_hash(&key);
        // Under churn (a spoofed flood) this event reads three lines at
        // random: the source's index bucket, its `recent` bucket, and the
        // index bucket of the source it evicts. Ask for all three at once.
        self.table.prefetch_source(hash);
        self.recent.prefetch(&key);
        if self.table.source_count() >= self.max_sources {
            self.table.prefetch_victim_index(self.probation_reserve);
        }
        let slot = match self.table.source_hashed(&key, hash) {
            Some(slot) => {
                self.seen(slot, ev, now);
                self.advance_scales(slot, now);
                self.prune(slot, now);
                if let Some(p) = self.table.pair(slot, &dst) {
                    // Seen again while kept (a retransmission the kernel
                    // reported twice, a reconnect, or the pair active in a
                    // later epoch): still one destination, but back within
                    // the shorter scales it had left.
                    self.table.refresh_pair(p, now, ev.sport);
                    self.note_member(slot);
                    self.touch(slot);
                    self.check_scales(slot, now, alerts);
                    return;
                }
                slot
            }
            None => {
                let slot = self.admit(key, hash, &dst, src, now);
                self.admitted = true;
                self.seen(slot, ev, now);
                // The kernel tracks the source (it opened another pair a few
                // seconds ago) but the detector never heard of it: that
                // pair's event was shed, or its record flushed. Count it.
                if ev.kernel_fanout.is_some() {
                    self.table.sources[slot as usize].unseen = 1;
                    self.stats.unseen_destinations += 1;
                }
                slot
            }
        };
        self.note_member(slot);
        if ev.fragmented {
            let s = &mut self.table.sources[slot as usize];
            s.fragmented = s.fragmented.saturating_add(1);
        }
        if self.table.sources[slot as usize].distinct >= self.max_per_source {
            // Keep the newest destinations: the count saturates at the cap.
            if !self.table.sources[slot as usize].dest_cap_noticed {
                self.table.sources[slot as usize].dest_cap_noticed = true;
                self.notice(Cap::DestinationsPerSource, now, src);
            }
            self.stats.cap_hits += 1;
            let oldest = self.table.sources[slot as usize].head;
            self.table.remove_pair(oldest);
            self.stats.destination_evictions += 1;
        }
        while self.table.pair_count() >= self.max_pairs {
            self.cap_hit(Cap::Pairs, now, src);
            match self.table.victim(self.probation_reserve, slot) {
                Some(victim) => self.evict(victim),
                // The only source left: drop its own oldest destination.
                None => {
                    let oldest = self.table.sources[slot as usize].head;
                    self.table.remove_pair(oldest);
                    self.stats.destination_evictions += 1;
                }
            }
        }
        self.table.insert_pair(slot, dst, now, ev.sport, ev.dport);
        self.touch(slot);
        self.check_scales(slot, now, alerts);
    }

    /// Start tracking a new source, evicting one if the table is full. A
    /// source admitted recently (and evicted since) with another destination
    /// comes back with that destination counted in its class.
    pub(super) fn admit(&mut self, key: Key, hash: u32, dst: &Key, src: IpAddr, now: i64) -> u32 {
        let recalled = self.recent.admit(&key, dst);
        while self.table.source_count() >= self.max_sources {
            self.cap_hit(Cap::Sources, now, src);
            let victim = self
                .table
                .victim(self.probation_reserve, table::NIL)
                .expect("sources at cap, so one exists");
            self.evict(victim);
        }
        let rule = self.rule_for(src);
        let slot = self.table.insert_source(key, hash, rule, now);
        if self.mode == Mode::Prefix {
            let i = slot as usize;
            if self.members.len() <= i {
                self.members.resize(i + 1, Members::default());
            }
            self.members[i] = Members::default();
        }
        if recalled {
            self.table.sources[slot as usize].carried = 1;
            self.stats.recalled_sources += 1;
        }
        if self.table.source_count() >= self.max_sources {
            // Under churn the next event evicts again.
            self.table.prefetch_victim(self.probation_reserve);
        }
        slot
    }

    /// Evict a source to make room.
    pub(super) fn evict(&mut self, slot: u32) {
        self.stats.source_evictions += 1;
        self.stats.source_evictions_by_class[usize::from(self.table.class(slot))] += 1;
        self.table.remove_source(slot);
    }

    /// The source's event at `now`: latest activity, interface and VLAN.
    pub(super) fn seen(&mut self, slot: u32, ev: &GatewayEvent, now: i64) {
        let s = &mut self.table.sources[slot as usize];
        s.last_seen = now;
        s.ifindex = ev.ifindex;
        s.vlan = ev.vlan;
    }

    /// Make the source the most recently active of its (possibly new) class.
    pub(super) fn touch(&mut self, slot: u32) {
        let class = self.class(slot);
        self.table.touch(slot, class);
    }

    /// A source's fan-out class: destinations in its window (plus one
    /// remembered from before an eviction), or the net failures of its
    /// random walk if more (a slow scanner's probes outside the window).
    pub(super) fn class(&self, slot: u32) -> u8 {
        let s = &self.table.sources[slot as usize];
        let walk = if s.llr > 0.0 {
            // Tolerance: a sum of n equal steps divided by the step.
            (s.llr / self.trw.failure + 1e-9) as u32
        } else {
            0
        };
        class_of((s.fanout() + u32::from(s.carried)).max(walk))
    }

    pub(super) fn response(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        accepted: bool,
        now: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let pair = self
            .table
            .source(&addr_key(src))
            .and_then(|slot| Some((slot, self.table.pair(slot, &addr_key(dst.to_canonical()))?)));
        let Some((slot, p)) = pair else {
            self.stats.unmatched_responses += 1;
            return;
        };
        match (self.table.pairs[p as usize].outcome, accepted) {
            (Outcome::Pending, _) => {
                self.table.sources[slot as usize].last_seen = now;
                self.table.resolve(
                    p,
                    if accepted {
                        Outcome::Accepted
                    } else {
                        Outcome::Failed
                    },
                );
                self.trw_step(slot, accepted, now, alerts);
            }
            (Outcome::Accepted, false) => {
                // RST after the SYN-ACK with no ACK between (the kernel
                // reports it as Refused for a pair it reported Accepted):
                // the contact failed after all.
                self.table.sources[slot as usize].last_seen = now;
                let same_walk =
                    self.table.pairs[p as usize].walk == self.table.sources[slot as usize].walk;
                self.table.accepted_to_failed(p);
                self.stats.accepted_then_refused += 1;
                let decision = self
                    .trw
                    .correct(&mut self.table.sources[slot as usize].llr, same_walk);
                self.trw_decided(slot, decision, now, alerts);
            }
            // A late answer (after the timeout counted it as failed), a
            // second answer, or a SYN-ACK after a RST: the first decision stands.
            _ => return,
        }
        self.touch(slot);
    }
}
