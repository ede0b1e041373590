//! Fan-out over several time scales: the rules (thresholds and windows per
//! source group) and when a crossing alerts.
//!
//! Each scale of a source counts the distinct destinations it contacted
//! within that scale's window, exactly (a cursor into the source's pairs,
//! which are kept for the longest window; see `table.rs`). A scale alerts
//! when it reaches its threshold while armed; it is disarmed then and armed
//! again once its count fell below half the threshold (the sweep aged out
//! of the window). So a continuing sweep alerts once per scale (a longer
//! scale crossing later is an escalation), its fan-out doubling within the
//! longest alerted scale alerts again (critical), and a new sweep after
//! the old one aged out of a scale alerts again on that scale.

use ipnet::IpNet;

use super::table::{Rule, Scale, MAX_SCALES};
use super::{nanos, DetectConfig, Detector, FanoutScale};
use crate::alert::{Alert, AlertKind};

/// The rules: index 0 is `[detect]`'s, then one per subnet override, and
/// the overrides as `(prefix, rule)`, most specific prefix first (a stable
/// sort keeps file order among equals).
pub(super) fn rules(cfg: &DetectConfig) -> (Vec<(IpNet, u16)>, Vec<Rule>) {
    let mut rules = vec![rule(cfg.fanout_threshold, cfg.window, &cfg.fanout_scales)];
    let mut overrides = Vec::with_capacity(cfg.subnet.len());
    for o in &cfg.subnet {
        let scales = o.fanout_scales.as_ref().unwrap_or(&cfg.fanout_scales);
        let window = o.window.unwrap_or(cfg.window);
        overrides.push((o.cidr.trunc(), rules.len() as u16));
        rules.push(rule(o.fanout_threshold, window, scales));
    }
    overrides.sort_by_key(|o| std::cmp::Reverse(o.0.prefix_len()));
    (overrides, rules)
}

/// One rule: the base scale, then the longer ones (validated: at most
/// three, windows increasing; extra ones are ignored, not trusted).
fn rule(threshold: u32, window: std::time::Duration, more: &[FanoutScale]) -> Rule {
    let mut r = Rule {
        n: 1,
        ..Rule::default()
    };
    r.scales[0] = Scale {
        threshold: threshold.max(1),
        window: nanos(window),
    };
    for s in more.iter().take(MAX_SCALES - 1) {
        r.scales[usize::from(r.n)] = Scale {
            threshold: s.threshold.max(1),
            window: nanos(s.window),
        };
        r.n += 1;
    }
    r
}

impl Detector {
    /// The source's scales at `now`: windows moved on, and each scale whose
    /// count fell below half its threshold armed again.
    pub(super) fn advance_scales(&mut self, slot: u32, now: i64) {
        self.table.advance_scales(slot, now);
        let rule = self.table.rule_of(slot);
        let s = &mut self.table.sources[slot as usize];
        for (i, sc) in rule.scales().iter().enumerate() {
            if u64::from(s.scale_fanout(i)) * 2 < u64::from(sc.threshold) {
                s.armed |= 1 << i;
            }
        }
    }

    /// After a contact: the longest armed scale that reached its threshold
    /// alerts (shorter ones crossing at the same event are disarmed with
    /// it); else the longest scale that alerted and still holds alerts
    /// again if its count doubled since (not for the evasion rule).
    pub(super) fn check_scales(&mut self, slot: u32, now: i64, alerts: &mut Vec<Alert>) {
        let rule = self.table.rule_of(slot);
        let n = usize::from(rule.n);
        let mut fired = None;
        for i in (0..n).rev() {
            let s = &self.table.sources[slot as usize];
            if s.armed & (1 << i) == 0 || s.scale_fanout(i) < rule.scales[i].threshold {
                continue;
            }
            if !self.members_ok(slot) {
                // A prefix with one member: that source's own alert covers it.
                return;
            }
            let s = &mut self.table.sources[slot as usize];
            s.armed &= !(1 << i);
            s.alerted[i] = s.scale_fanout(i);
            if fired.is_some() {
                self.stats.suppressed += 1;
            } else {
                fired = Some(i);
            }
        }
        if let Some(i) = fired {
            self.stats.alerts += 1;
            alerts.push(self.build_alert(slot, AlertKind::SmbScanFanout, now, Some(i), None));
            return;
        }
        if self.mode == super::Mode::Evasion {
            return;
        }
        let s = &mut self.table.sources[slot as usize];
        // The longest scale whose alert still holds.
        if let Some(i) = (0..n).rev().find(|&i| s.armed & (1 << i) == 0) {
            let (count, before) = (s.scale_fanout(i), s.alerted[i]);
            if before > 0 && u64::from(count) >= 2 * u64::from(before) {
                s.alerted[i] = count;
                self.stats.alerts += 1;
                alerts.push(self.build_alert(
                    slot,
                    AlertKind::SmbScanFanout,
                    now,
                    Some(i),
                    Some(before),
                ));
            }
        }
    }

    /// The rule for a new source.
    pub(super) fn rule_for(&self, src: std::net::IpAddr) -> u16 {
        self.overrides
            .iter()
            .find(|(net, _)| net.contains(&src))
            .map_or(0, |&(_, r)| r)
    }
}

/// The scale's name in alerts: its window (`1m`, `10m`, `1h`).
pub(super) fn scale_name(sc: Scale) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(
        u64::try_from(sc.window).unwrap_or(0),
    ))
    .to_string()
}
