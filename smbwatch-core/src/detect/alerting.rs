//! Suppression (hold-down, doubling, the other kind) and the alert a
//! crossing raises, with its evidence.

use std::time::Duration;

use chrono::DateTime;

use super::{community_id_v1, key_addr, Detector, PROTO_TCP};
use crate::alert::{Alert, AlertKind, ScanEvidence, Severity};

/// Bits of `Source::alerted_kinds`.
const FANOUT_BIT: u8 = 1;
const TRW_BIT: u8 = 2;

impl Detector {
    /// Suppression: one alert per source per hold-down, unless this kind
    /// has not fired in it yet or the fan-out doubled since the last alert.
    pub(super) fn maybe_alert(&mut self, slot: u32, kind: AlertKind, at: i64) -> Option<Alert> {
        let hold_down = self.hold_down;
        let s = &mut self.table.sources[slot as usize];
        let held = s.last_alert != i64::MIN && at < s.last_alert.saturating_add(hold_down);
        if !held {
            s.alerted_kinds = 0;
        }
        let bit = if kind == AlertKind::SmbScanFanout {
            FANOUT_BIT
        } else {
            TRW_BIT
        };
        let doubled = kind == AlertKind::SmbScanFanout
            && held
            && s.alerted_kinds & FANOUT_BIT != 0
            && u64::from(s.fanout()) >= 2 * u64::from(s.alerted_distinct);
        if held && s.alerted_kinds & bit != 0 && !doubled {
            self.stats.suppressed += 1;
            return None;
        }
        let previous = s.alerted_distinct;
        s.last_alert = at;
        s.alerted_kinds |= bit;
        s.alerted_distinct = s.fanout();
        self.stats.alerts += 1;
        Some(self.build_alert(slot, kind, at, doubled.then_some(previous)))
    }

    fn build_alert(&self, slot: u32, kind: AlertKind, at: i64, doubled_from: Option<u32>) -> Alert {
        let s = &self.table.sources[slot as usize];
        let src = key_addr(&s.key);
        let first = self.table.pairs_of(slot).next();
        let port = first.map(|p| p.dport);
        let window = Duration::from_nanos(u64::try_from(s.window).unwrap_or(0));
        let window_text = humantime::format_duration(window);
        let port_text = port.map_or_else(String::new, |p| format!(" on port {p}"));
        let distinct = s.fanout();
        let mut evasion = String::new();
        if s.fragmented > 0 {
            evasion = format!(
                " ({} SYNs as IP fragments: an evasion attempt)",
                s.fragmented
            );
        }
        let (severity, message) = match (kind, doubled_from) {
            (AlertKind::SmbScanFanout, None) => (
                Severity::High,
                format!(
                    "{src} connected to {distinct} distinct hosts{port_text} within {window_text}{evasion}"
                ),
            ),
            (AlertKind::SmbScanFanout, Some(before)) => (
                Severity::Critical,
                format!(
                    "{src} connected to {distinct} distinct hosts{port_text} within {window_text} \
                     (fan-out doubled since the last alert, from {before}){evasion}"
                ),
            ),
            _ => (
                Severity::Medium,
                format!(
                    "{src} looks like a scanner: its connection attempts{port_text} mostly fail \
                     ({} failed, {} accepted, {} unanswered yet, {distinct} hosts within {window_text}){evasion}",
                    s.refused, s.accepted, s.pending
                ),
            ),
        };
        let mut alert = Alert::new(DateTime::from_timestamp_nanos(at), kind, severity, message);
        alert.source_ip = Some(src);
        // The first flow: its ports, its destination, its community ID.
        alert.source_port = first.map(|p| p.sport);
        alert.destination_ip = first.map(|p| key_addr(&p.dst));
        alert.destination_port = port;
        alert.community_id =
            first.map(|p| community_id_v1(src, key_addr(&p.dst), p.sport, p.dport, PROTO_TCP, 0));
        alert.ifindex = Some(s.ifindex);
        alert.vlan = s.vlan;
        alert.scan = Some(ScanEvidence {
            distinct_destinations: s.fanout() as usize,
            fragmented_syns: u64::from(s.fragmented),
            destinations: self
                .table
                .pairs_of(slot)
                .take(self.cfg.max_destinations_listed)
                .map(|p| key_addr(&p.dst))
                .collect(),
            syns: s.syns,
            accepted: u64::from(s.accepted),
            refused: u64::from(s.refused),
            window_secs: window.as_secs(),
            first_seen: DateTime::from_timestamp_nanos(first.map_or(s.last_seen, |p| p.ts)),
            last_seen: DateTime::from_timestamp_nanos(s.last_seen),
        });
        alert
    }
}
