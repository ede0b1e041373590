//! Time passing: unanswered pairs become TRW failures at their deadline,
//! destinations leave the window, idle sources are forgotten, and the
//! capacity notices are raised and re-armed.

use std::net::IpAddr;

use chrono::DateTime;

use super::table::{self, Outcome, CLASSES};
use super::trw::Decision;
use super::{Cap, CapNotice, Detector, Mode, MAX_NOTICES};
use crate::alert::{Alert, AlertKind};

impl Detector {
    /// Pairs unanswered for longer than the timeout are failures, decided
    /// at their deadline.
    pub(super) fn expire_pending(&mut self, now: i64, alerts: &mut Vec<Alert>) {
        while let Some(p) = self.table.pending_head() {
            let pair = &self.table.pairs[p as usize];
            let deadline = pair.first_ts.saturating_add(self.timeout);
            if deadline >= now {
                break;
            }
            let slot = pair.src;
            self.table.resolve(p, Outcome::Failed);
            self.trw_step(slot, false, deadline, alerts);
        }
    }

    pub(super) fn trw_step(&mut self, slot: u32, success: bool, at: i64, alerts: &mut Vec<Alert>) {
        if self.mode == Mode::Evasion {
            // Unparsed packets get no answer the kernel can match.
            return;
        }
        let decision = self
            .trw
            .step(&mut self.table.sources[slot as usize].llr, success);
        self.trw_decided(slot, decision, at, alerts);
    }

    /// After a walk moved: a decision restarts it (a later correction of an
    /// outcome counted before the restart goes to the new walk); a scanner
    /// decision alerts.
    pub(super) fn trw_decided(
        &mut self,
        slot: u32,
        decision: Decision,
        at: i64,
        alerts: &mut Vec<Alert>,
    ) {
        if decision == Decision::Continue {
            return;
        }
        let s = &mut self.table.sources[slot as usize];
        s.walk = s.walk.wrapping_add(1);
        if decision == Decision::Scanner {
            self.prune(slot, at);
            if let Some(alert) = self.maybe_alert(slot, AlertKind::SmbScanTrw, at) {
                alerts.push(alert);
            }
        }
    }

    /// Drop the source's destinations last seen a window ago or earlier.
    /// A still-pending pair stops the walk: its outcome is owed to TRW, and
    /// it is decided within `response_timeout` (no longer than the window).
    pub(super) fn prune(&mut self, slot: u32, now: i64) {
        self.table.advance_scales(slot, now);
        let window = self.table.sources[slot as usize].window;
        loop {
            let head = self.table.sources[slot as usize].head;
            if head == table::NIL {
                break;
            }
            let p = &self.table.pairs[head as usize];
            if p.outcome == Outcome::Pending || p.ts.saturating_add(window) > now {
                break;
            }
            self.table.remove_pair(head);
        }
    }

    /// Forget sources idle for longer than both their window and the
    /// hold-down: nothing of them is in a window any more and a new alert
    /// would not be suppressed, so only the TRW walk is lost.
    pub(super) fn expire_idle(&mut self, now: i64) {
        // Each class list is ordered by latest activity.
        for c in 0..CLASSES {
            while let Some(lru) = self.table.class_tail(c) {
                let s = &self.table.sources[lru as usize];
                let keep = s.window.max(self.hold_down);
                if s.pending > 0 || s.last_seen.saturating_add(keep) > now {
                    break;
                }
                self.table.remove_source(lru);
                self.stats.idle_expired += 1;
            }
        }
        // Re-arm the global cap notices once usage has fallen well below.
        if self.table.source_count() < self.max_sources / 2 {
            self.armed[0] = true;
        }
        if self.table.pair_count() < self.max_pairs / 2 {
            self.armed[1] = true;
        }
    }

    pub(super) fn cap_hit(&mut self, cap: Cap, now: i64, src: IpAddr) {
        self.stats.cap_hits += 1;
        let i = usize::from(cap == Cap::Pairs);
        if std::mem::take(&mut self.armed[i]) {
            self.notice(cap, now, src);
        }
    }

    pub(super) fn notice(&mut self, cap: Cap, now: i64, source: IpAddr) {
        if self.notices.len() < MAX_NOTICES {
            let limit = match cap {
                Cap::Sources => self.max_sources,
                Cap::Pairs => self.max_pairs,
                Cap::DestinationsPerSource => self.max_per_source as usize,
            };
            self.notices.push(CapNotice {
                ts: DateTime::from_timestamp_nanos(now),
                cap,
                limit,
                source,
            });
        }
    }
}
