//! Watches the kernel's shed counter and turns it into one notice when
//! shedding starts and one when it has stopped for a while. Pure: the
//! daemon feeds it counter readings with their times.

use chrono::{DateTime, Utc};

use crate::alert::{Alert, AlertKind, Severity};

/// Quiet readings in a row after which shedding counts as over.
const CLEAR_AFTER: u32 = 5;

/// The degradation state machine. See the module documentation.
#[derive(Debug, Default)]
pub struct Degradation {
    last: Option<(DateTime<Utc>, u64)>,
    active: Option<Episode>,
    /// Episodes since start (the `smbwatch_degraded` counter).
    pub episodes: u64,
}

#[derive(Debug)]
struct Episode {
    since: DateTime<Utc>,
    shed_at_start: u64,
    peak_rate: f64,
    quiet: u32,
}

impl Degradation {
    /// One reading of the kernel's cumulative `events_shed` counter. Returns
    /// the notice to raise, if this reading starts or ends an episode.
    pub fn observe(&mut self, now: DateTime<Utc>, shed_total: u64) -> Option<Alert> {
        let prev = self.last.replace((now, shed_total));
        let (then, before) = prev?;
        let delta = shed_total.saturating_sub(before);
        let secs = (now - then).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = delta as f64 / secs;
        match (&mut self.active, delta) {
            (None, 0) => None,
            (None, _) => {
                self.episodes += 1;
                self.active = Some(Episode {
                    since: then,
                    shed_at_start: before,
                    peak_rate: rate,
                    quiet: 0,
                });
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
            (Some(ep), 0) => {
                ep.quiet += 1;
                if ep.quiet < CLEAR_AFTER {
                    return None;
                }
                let ep = self.active.take()?;
                let shed = shed_total.saturating_sub(ep.shed_at_start);
                let lasted = (now - ep.since).num_seconds();
                Some(notice(
                    now,
                    Severity::Low,
                    format!(
                        "smbwatch recovered: no events shed for {CLEAR_AFTER} readings; \
                         {shed} events were shed over {lasted} s (peak {:.0}/s)",
                        ep.peak_rate
                    ),
                ))
            }
            (Some(ep), _) => {
                ep.quiet = 0;
                ep.peak_rate = ep.peak_rate.max(rate);
                None
            }
        }
    }

    /// Whether an episode is going on.
    pub fn is_degraded(&self) -> bool {
        self.active.is_some()
    }
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
}
