//! Suppression (TRW's hold-down; fan-out's is per scale, in `scales.rs`)
//! and the alert a crossing raises, with its evidence.

use std::time::Duration;

use chrono::DateTime;

use super::table::NIL;
use super::{community_id_v1, key_addr, scales, Detector, Mode, PROTO_TCP};
use crate::alert::{Alert, AlertKind, PrefixEvidence, ScanEvidence, Severity};

/// Bit of `Source::alerted_kinds`.
const TRW_BIT: u8 = 2;

impl Detector {
    /// TRW suppression: one alert per source per hold-down.
    pub(super) fn maybe_alert(&mut self, slot: u32, kind: AlertKind, at: i64) -> Option<Alert> {
        if !self.members_ok(slot) {
            return None;
        }
        let hold_down = self.hold_down;
        let s = &mut self.table.sources[slot as usize];
        let held = s.last_alert != i64::MIN && at < s.last_alert.saturating_add(hold_down);
        if !held {
            s.alerted_kinds = 0;
        }
        if held && s.alerted_kinds & TRW_BIT != 0 {
            self.stats.suppressed += 1;
            return None;
        }
        s.last_alert = at;
        s.alerted_kinds |= TRW_BIT;
        self.stats.alerts += 1;
        Some(self.build_alert(slot, kind, at, None, None))
    }

    /// The alert for `slot`: fan-out of scale `scale` (its count doubled
    /// since `doubled_from`, if given), or TRW (`scale` None).
    pub(super) fn build_alert(
        &self,
        slot: u32,
        kind: AlertKind,
        at: i64,
        scale: Option<usize>,
        doubled_from: Option<u32>,
    ) -> Alert {
        let s = &self.table.sources[slot as usize];
        let src = key_addr(&s.key);
        let rule = self.table.rule_of(slot);
        // The scale's pairs (fan-out), or all kept (TRW).
        let (from, window, distinct) = match scale {
            Some(i) => (s.cursor[i], rule.scales[i].window, s.scale_fanout(i)),
            None => (s.head, s.window, s.fanout()),
        };
        let pairs = || {
            self.table
                .pairs_from(if from == NIL { s.head } else { from })
        };
        let first = pairs().next();
        let port = first.map(|p| p.dport);
        let window = Duration::from_nanos(u64::try_from(window).unwrap_or(0));
        let window_text = humantime::format_duration(window);
        let port_text = port.map_or_else(String::new, |p| format!(" on port {p}"));
        let (mut syns, mut accepted, mut refused, mut pending) = (0u64, 0u64, 0u64, 0u64);
        for p in pairs() {
            syns += u64::from(p.syns);
            match p.outcome {
                super::Outcome::Accepted => accepted += 1,
                super::Outcome::Failed => refused += 1,
                super::Outcome::Pending => pending += 1,
            }
        }
        let prefix = self.prefix_evidence(slot, src);
        let who = match &prefix {
            Some(p) => format!(
                "{} ({} sources; most active {})",
                p.prefix,
                p.members,
                p.top_members
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => src.to_string(),
        };
        let mut evasion = String::new();
        if s.fragmented > 0 {
            evasion = format!(
                " ({} SYNs as IP fragments: an evasion attempt)",
                s.fragmented
            );
        }
        let scale_text = |i: usize| {
            format!(
                "fan-out scale {}: {} hosts",
                scales::scale_name(rule.scales[i]),
                rule.scales[i].threshold
            )
        };
        let (kind, severity, message) = match (self.mode, scale, doubled_from) {
            (Mode::Evasion, _, _) => (
                AlertKind::SmbEvasionAttempt,
                Severity::High,
                format!(
                    "{who} sent packets smbwatch could not parse (IPv6 extension headers or VLAN \
                     tags past the parser's bound) to {distinct} distinct hosts within {window_text}: \
                     an attempt to hide from the sensor"
                ),
            ),
            (_, Some(i), None) => (
                kind,
                Severity::High,
                format!(
                    "{who} connected to {distinct} distinct hosts{port_text} within {window_text} \
                     ({}){evasion}",
                    scale_text(i)
                ),
            ),
            (_, Some(i), Some(before)) => (
                kind,
                Severity::Critical,
                format!(
                    "{who} connected to {distinct} distinct hosts{port_text} within {window_text} \
                     ({}; fan-out doubled since the last alert, from {before}){evasion}",
                    scale_text(i)
                ),
            ),
            (_, None, _) => (
                kind,
                Severity::Medium,
                format!(
                    "{who} looks like a scanner: its connection attempts{port_text} mostly fail \
                     ({refused} failed, {accepted} accepted, {pending} unanswered yet, {distinct} hosts within {window_text}){evasion}"
                ),
            ),
        };
        let mut alert = Alert::new(DateTime::from_timestamp_nanos(at), kind, severity, message);
        alert.ifindex = Some(s.ifindex);
        alert.vlan = s.vlan;
        alert.destination_ip = first.map(|p| key_addr(&p.dst));
        alert.destination_port = port;
        match &prefix {
            // The prefix's network address is no host: the most active
            // member stands for it; its flows are not known, so no ports.
            Some(p) => alert.source_ip = p.top_members.first().copied(),
            None => {
                // The first flow: its ports, its destination, its community ID.
                alert.source_ip = Some(src);
                alert.source_port = first.map(|p| p.sport);
                alert.community_id = first.map(|p| {
                    community_id_v1(src, key_addr(&p.dst), p.sport, p.dport, PROTO_TCP, 0)
                });
            }
        }
        alert.scan = Some(ScanEvidence {
            distinct_destinations: distinct as usize,
            fragmented_syns: u64::from(s.fragmented),
            destinations: pairs()
                .take(self.cfg.max_destinations_listed)
                .map(|p| key_addr(&p.dst))
                .collect(),
            syns,
            accepted,
            refused,
            window_secs: window.as_secs(),
            first_seen: DateTime::from_timestamp_nanos(first.map_or(s.last_seen, |p| p.ts)),
            last_seen: DateTime::from_timestamp_nanos(s.last_seen),
            scale: scale.map(|i| scales::scale_name(rule.scales[i])),
            prefix,
        });
        alert
    }

    /// Prefix, member count and most active members (prefix detectors).
    fn prefix_evidence(&self, slot: u32, network: std::net::IpAddr) -> Option<PrefixEvidence> {
        if self.mode != Mode::Prefix {
            return None;
        }
        let m = self.members.get(slot as usize).copied().unwrap_or_default();
        let len = match network {
            std::net::IpAddr::V4(_) => self.cfg.prefix.ipv4,
            std::net::IpAddr::V6(_) => self.cfg.prefix.ipv6,
        };
        Some(PrefixEvidence {
            prefix: ipnet::IpNet::new(network, len).ok()?.trunc(),
            members: m.count(),
            top_members: m.top(),
        })
    }
}
