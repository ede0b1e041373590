//! Watches the kernel's counters of what it could not do and turns each
//! into one notice when it starts and one when it has stopped for a while:
//! events shed under load (`events_shed`), and packets whose headers lay
//! past the parser's bound (`ipv6_ext_limit`, `vlan_limit`: their TCP
//! header was not seen, their sources are reported as unparsed). Pure: the
//! daemon feeds it counter readings with their times.

use chrono::{DateTime, Utc};

use crate::alert::{Alert, AlertKind, Severity};

/// Quiet readings in a row after which an episode counts as over.
const CLEAR_AFTER: u32 = 5;

/// The degradation state machines. See the module documentation.
#[derive(Debug, Default)]
pub struct Degradation {
    shed: Watch,
    limits: Watch,
    /// The two limit counters at the latest reading and when the current
    /// episode began: `(ipv6_ext_limit, vlan_limit)`.
    limits_now: (u64, u64),
    limits_at_start: (u64, u64),
    /// Shedding episodes since start (the `smbwatch_degraded` counter).
    pub episodes: u64,
    /// Parse-limit episodes since start.
    pub limit_episodes: u64,
}

/// One cumulative counter's episodes.
#[derive(Debug, Default)]
struct Watch {
    last: Option<(DateTime<Utc>, u64)>,
    active: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    since: DateTime<Utc>,
    at_start: u64,
    peak_rate: f64,
    quiet: u32,
}

/// What a reading did to an episode.
enum Change {
    /// It began: the counter rose at this rate (per second).
    Started { rate: f64 },
    /// It ended after `CLEAR_AFTER` quiet readings: the counter rose by
    /// `total` over `lasted` seconds, at most `peak` per second.
    Cleared { total: u64, lasted: i64, peak: f64 },
}

impl Watch {
    fn observe(&mut self, now: DateTime<Utc>, total: u64) -> Option<Change> {
        let (then, before) = self.last.replace((now, total))?;
        let delta = total.saturating_sub(before);
        let secs = (now - then).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = delta as f64 / secs;
        match (&mut self.active, delta) {
            (None, 0) => None,
            (None, _) => {
                self.active = Some(Episode {
                    since: then,
                    at_start: before,
                    peak_rate: rate,
                    quiet: 0,
                });
                Some(Change::Started { rate })
            }
            (Some(ep), 0) => {
                ep.quiet += 1;
                if ep.quiet < CLEAR_AFTER {
                    return None;
                }
                let ep = self.active.take()?;
                Some(Change::Cleared {
                    total: total.saturating_sub(ep.at_start),
                    lasted: (now - ep.since).num_seconds(),
                    peak: ep.peak_rate,
                })
            }
            (Some(ep), _) => {
                ep.quiet = 0;
                ep.peak_rate = ep.peak_rate.max(rate);
                None
            }
        }
    }
}

impl Degradation {
    /// One reading of the kernel's cumulative `events_shed` counter. Returns
    /// the notice to raise, if this reading starts or ends an episode.
    pub fn observe(&mut self, now: DateTime<Utc>, shed_total: u64) -> Option<Alert> {
        match self.shed.observe(now, shed_total)? {
            Change::Started { rate } => {
                self.episodes += 1;
                Some(notice(
                    now,
                    Severity::High,
                    format!(
                        "smbwatch degraded: the kernel is shedding new-pair events at {rate:.0}/s \
                         (event budget spent, likely a flood of new sources); fan-out is still \
                         counted in kernel sketches and reported for sources with two or more \
                         destinations; answers to shed pairs are not reported"
                    ),
                ))
            }
            Change::Cleared {
                total,
                lasted,
                peak,
            } => Some(notice(
                now,
                Severity::Low,
                format!(
                    "smbwatch recovered: no events shed for {CLEAR_AFTER} readings; \
                     {total} events were shed over {lasted} s (peak {peak:.0}/s)"
                ),
            )),
        }
    }

    /// One reading of the kernel's cumulative `ipv6_ext_limit` and
    /// `vlan_limit` counters (packets with an IPv6 extension chain or a
    /// VLAN stack past the parser's bound). Returns the notice to raise, if
    /// this reading starts or ends an episode.
    pub fn observe_limits(
        &mut self,
        now: DateTime<Utc>,
        ipv6_ext_limit: u64,
        vlan_limit: u64,
    ) -> Option<Alert> {
        let before = self.limits_now;
        self.limits_now = (ipv6_ext_limit, vlan_limit);
        let sum = ipv6_ext_limit.saturating_add(vlan_limit);
        match self.limits.observe(now, sum)? {
            Change::Started { rate } => {
                self.limit_episodes += 1;
                self.limits_at_start = before;
                let (ext, vlan) = (
                    ipv6_ext_limit.saturating_sub(before.0),
                    vlan_limit.saturating_sub(before.1),
                );
                Some(notice(
                    now,
                    Severity::High,
                    format!(
                        "smbwatch degraded: packets past the parser's bound at {rate:.0}/s \
                         ({ext} with an IPv6 extension chain, {vlan} with a VLAN stack since \
                         the last reading; ipv6_ext_limit {ipv6_ext_limit}, vlan_limit \
                         {vlan_limit} in all): their TCP headers are not seen; their sources \
                         are reported as unparsed, and one reaching several hosts raises \
                         smb_evasion_attempt"
                    ),
                ))
            }
            Change::Cleared { lasted, peak, .. } => {
                let (ext, vlan) = (
                    ipv6_ext_limit.saturating_sub(self.limits_at_start.0),
                    vlan_limit.saturating_sub(self.limits_at_start.1),
                );
                Some(notice(
                    now,
                    Severity::Low,
                    format!(
                        "smbwatch recovered: no packets past the parser's bound for \
                         {CLEAR_AFTER} readings; {ext} with an IPv6 extension chain and {vlan} \
                         with a VLAN stack over {lasted} s (peak {peak:.0}/s)"
                    ),
                ))
            }
        }
    }

    /// Whether a shedding episode is going on.
    pub fn is_degraded(&self) -> bool {
        self.shed.active.is_some()
    }

    /// Whether packets past the parser's bound are arriving.
    pub fn is_past_limits(&self) -> bool {
        self.limits.active.is_some()
    }
}

/// The notice of a damaged baseline file moved aside at start: the daemon
/// runs with an empty baseline, so every pair is new to it again.
pub fn baseline_set_aside(
    now: DateTime<Utc>,
    path: &std::path::Path,
    moved_to: &std::path::Path,
    reason: &str,
) -> Alert {
    notice(
        now,
        Severity::High,
        format!(
            "smbwatch degraded: the baseline {} was damaged ({reason}); it was moved aside to {} \
             and smbwatch started with an empty baseline: it learns again from now, and raises \
             new-edge alerts for pairs it knew (restore a good copy with `smbwatch baseline \
             import` after stopping the service)",
            path.display(),
            moved_to.display()
        ),
    )
}

fn notice(ts: DateTime<Utc>, severity: Severity, message: String) -> Alert {
    Alert::new(ts, AlertKind::SmbwatchDegraded, severity, message)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn one_notice_per_episode_and_one_when_it_clears() {
        let mut d = Degradation::default();
        assert!(d.observe(t(0), 0).is_none(), "first reading is a baseline");
        assert!(d.observe(t(1), 0).is_none());
        let raised = d.observe(t(2), 50_000).expect("shedding starts");
        assert_eq!(raised.kind, AlertKind::SmbwatchDegraded);
        assert!(raised.message.contains("50000/s"), "{}", raised.message);
        assert!(d.is_degraded());
        // Still shedding: no repeat.
        for s in 3..10 {
            assert!(d.observe(t(s), 50_000 * (s as u64 - 1)).is_none());
        }
        // Quiet for four readings: still degraded.
        let total = 50_000 * 8;
        for s in 10..14 {
            assert!(d.observe(t(s), total).is_none());
        }
        let cleared = d
            .observe(t(14), total)
            .expect("cleared after five quiet readings");
        assert_eq!(cleared.severity, Severity::Low);
        assert!(
            cleared.message.contains("400000 events were shed"),
            "{}",
            cleared.message
        );
        assert!(!d.is_degraded());
        assert_eq!(d.episodes, 1);
        // A second episode is a second notice.
        assert!(d.observe(t(15), total + 1).is_some());
        assert_eq!(d.episodes, 2);
    }

    #[test]
    fn a_quiet_reading_inside_an_episode_resets_the_countdown() {
        let mut d = Degradation::default();
        d.observe(t(0), 0);
        d.observe(t(1), 10).unwrap();
        for s in 2..6 {
            assert!(d.observe(t(s), 10).is_none());
        }
        assert!(d.observe(t(6), 20).is_none(), "shedding again");
        for s in 7..11 {
            assert!(d.observe(t(s), 20).is_none());
        }
        assert!(d.observe(t(11), 20).is_some());
    }

    /// The parse-limit counters: one notice naming both when they rise,
    /// one when they stopped; the shedding state is separate.
    #[test]
    fn parse_limits_are_reported_once_per_episode() {
        for (ext, vlan) in [(30u64, 0u64), (0, 4), (7, 12)] {
            let mut d = Degradation::default();
            assert!(
                d.observe_limits(t(0), 5, 1).is_none(),
                "first reading is a baseline"
            );
            assert!(d.observe_limits(t(1), 5, 1).is_none());
            let raised = d
                .observe_limits(t(2), 5 + ext, 1 + vlan)
                .expect("packets past the bound");
            assert_eq!(raised.kind, AlertKind::SmbwatchDegraded);
            assert!(
                raised.message.contains(&format!(
                    "{ext} with an IPv6 extension chain, {vlan} with a VLAN stack"
                )) && raised
                    .message
                    .contains(&format!("ipv6_ext_limit {}", 5 + ext))
                    && raised.message.contains(&format!("vlan_limit {}", 1 + vlan)),
                "{}",
                raised.message
            );
            assert!(d.is_past_limits() && !d.is_degraded());
            assert!(
                d.observe_limits(t(3), 5 + 2 * ext, 1 + 2 * vlan).is_none(),
                "no repeat"
            );
            for s in 4..8 {
                assert!(d.observe_limits(t(s), 5 + 2 * ext, 1 + 2 * vlan).is_none());
            }
            let cleared = d
                .observe_limits(t(8), 5 + 2 * ext, 1 + 2 * vlan)
                .expect("cleared");
            assert_eq!(cleared.severity, Severity::Low);
            assert!(
                cleared.message.contains(&format!(
                    "{} with an IPv6 extension chain and {} with a VLAN stack",
                    2 * ext,
                    2 * vlan
                )),
                "{}",
                cleared.message
            );
            assert_eq!((d.limit_episodes, d.episodes), (1, 0));
        }
    }
}
