//! The evaluation of issue 18: learn week 1 of a simulated network
//! ([`super::sim`]) with the defaults (plus the scanner allowlisted), score
//! week 2, count false alerts per weekday and kind, and check that every
//! injected anomaly was raised at its first connection.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

use super::sim::{Anomaly, Sim, SimEvent, DAY, MONDAY};
use super::{Baseline, BaselineConfig};
use crate::alert::{Alert, AlertKind};

/// Weekday names, Monday first.
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// What the evaluation found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// False alerts of week 2 per weekday (Monday first), per kind.
    pub false_alerts: [BTreeMap<&'static str, u32>; 7],
    /// Per anomaly: its name, whether an alert came at its first
    /// connection, and the alerts it raised.
    pub anomalies: Vec<(&'static str, bool, u32)>,
    /// Every alert, in order.
    pub alerts: Vec<Alert>,
    /// Events fed.
    pub events: usize,
}

impl Outcome {
    /// False alerts on weekday `d` (0 = Monday).
    pub fn false_on(&self, d: usize) -> u32 {
        self.false_alerts[d].values().sum()
    }

    /// The most false alerts on any weekday.
    pub fn worst_day(&self) -> u32 {
        (0..7).map(|d| self.false_on(d)).max().unwrap_or(0)
    }

    /// Every anomaly raised at its first connection.
    pub fn all_raised(&self) -> bool {
        self.anomalies.iter().all(|a| a.1)
    }

    /// One line: false alerts per weekday and the anomalies missed.
    pub fn summary(&self) -> String {
        let days: Vec<String> = (0..7)
            .map(|d| format!("{} {}", WEEKDAYS[d], self.false_on(d)))
            .collect();
        let missed: Vec<&str> = self
            .anomalies
            .iter()
            .filter(|a| !a.1)
            .map(|a| a.0)
            .collect();
        format!(
            "false alerts {}; anomalies raised at first connection {}/{}{}",
            days.join(", "),
            self.anomalies.len() - missed.len(),
            self.anomalies.len(),
            if missed.is_empty() {
                String::new()
            } else {
                format!(" (missed: {})", missed.join("; "))
            }
        )
    }
}

/// A baseline with the default `[baseline]` settings, the scanner
/// allowlisted, and `[detect] hold_down`'s default (10 minutes).
pub fn default_baseline(sim: &Sim) -> Baseline {
    baseline_with(sim, BaselineConfig::default())
}

/// A baseline with `cfg`, the scanner allowlisted.
pub fn baseline_with(sim: &Sim, cfg: BaselineConfig) -> Baseline {
    Baseline::new(
        cfg,
        vec![IpNet::from(sim.scanner)],
        Duration::from_secs(600),
    )
}

/// Feeds one event; returns its alerts.
pub fn feed(b: &mut Baseline, ev: &SimEvent) -> Vec<Alert> {
    match ev {
        SimEvent::Gateway(g) => b.observe(g),
        SimEvent::Logon { ts, ip, name } => {
            b.observe_logon(ts.timestamp(), *ip, name);
            Vec::new()
        }
    }
}

/// Runs the whole simulation through `b` in one go (the long-running
/// router), or (`daily`) one UTC day at a time with the baseline saved and
/// loaded between days (daily captures).
pub fn run(sim: &Sim, mut b: Baseline, daily: bool) -> Outcome {
    let mut alerts = Vec::new();
    let mut day = None;
    for ev in &sim.events {
        let d = ev.ts().timestamp().div_euclid(DAY);
        if daily && day.is_some_and(|p| p != d) {
            let cfg = b.config().clone();
            let (allow, hold) = (b.allow().to_vec(), b.hold_down());
            b = Baseline::new(cfg, allow, hold).from_snapshot(b.snapshot());
        }
        day = Some(d);
        alerts.extend(feed(&mut b, ev));
    }
    score(sim, alerts)
}

/// Sorts `alerts` into the anomalies' and false ones (week 2 only).
pub fn score(sim: &Sim, alerts: Vec<Alert>) -> Outcome {
    let mut out = Outcome {
        events: sim.events.len(),
        ..Outcome::default()
    };
    let belongs = |a: &Alert, an: &Anomaly| {
        let t = a.ts.timestamp();
        a.source_ip == Some(an.src) && t >= an.first.0 && t < an.first.0 + an.span
    };
    for an in &sim.anomalies {
        let mine: Vec<&Alert> = alerts.iter().filter(|a| belongs(a, an)).collect();
        let at_first = mine
            .iter()
            .any(|a| a.ts.timestamp() == an.first.0 && a.destination_ip == Some(an.first.1));
        out.anomalies.push((an.name, at_first, mine.len() as u32));
    }
    for a in &alerts {
        let t = a.ts.timestamp();
        if t < MONDAY + 7 * DAY || sim.anomalies.iter().any(|an| belongs(a, an)) {
            continue;
        }
        let wd = ((t - MONDAY).div_euclid(DAY) % 7) as usize;
        *out.false_alerts[wd].entry(kind_name(a.kind)).or_default() += 1;
    }
    out.alerts = alerts;
    out
}

fn kind_name(k: AlertKind) -> &'static str {
    k.spec().rule_id
}
