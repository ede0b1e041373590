//! What one fleet message does, without the broker: the checks on what a
//! broker delivers (subject, message id, records, times), the pipeline,
//! which gateways saw each source, and the event clock that lets time pass.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use chrono::{DateTime, Utc};

use crate::fleet::{
    observers::Observers,
    stats::{AggregateCounters, Refusal},
    wire::{self, FleetEvent},
};
use crate::{alert::Alert, pipeline::Pipeline};

/// The pipeline with the aggregator's extras: which gateways saw each
/// source, and the checks on what a broker delivers.
pub(super) struct Aggregator {
    pub(super) pipeline: Pipeline,
    pub(super) observers: Observers,
    pub(super) max_ahead: chrono::TimeDelta,
    pub(super) counters: Arc<AggregateCounters>,
    pub(super) clock: EventClock,
}

impl Aggregator {
    /// One message (a batch of events) with its subject and message id;
    /// returns its alerts (with `observer.name` filled). A bad record is
    /// rejected alone; a message whose id names another gateway than its
    /// subject is rejected whole (broker permissions tie a gateway's
    /// credentials to its subjects; the id must agree, so one member
    /// cannot pass for another, nor take its ids).
    pub(super) fn message(
        &mut self,
        subject: &str,
        id: Option<&str>,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Vec<Alert> {
        let Some(gateway) = crate::fleet::gateway_of(subject) else {
            return self.reject(
                Refusal::Subject,
                subject,
                "subject is not smbwatch.events.<gateway>.<partition>",
            );
        };
        match id.and_then(|i| i.split_once('.')) {
            Some((g, _)) if g == gateway => {}
            _ => {
                return self.reject(
                    Refusal::GatewayMismatch,
                    subject,
                    &format!(
                        "message id {id:?} does not name the subject's gateway {gateway:?} \
                         (another member publishing as it?)"
                    ),
                )
            }
        }
        let records = match wire::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.reject(Refusal::Malformed, subject, &e.to_string()),
        };
        let mut alerts = Vec::new();
        for record in records {
            let found = match record {
                Err(e) => self.reject(Refusal::Malformed, subject, &e.to_string()),
                Ok(FleetEvent::Gateway(ev)) => {
                    if ev.ts - now > self.max_ahead {
                        self.reject(
                            Refusal::TooFarAhead,
                            subject,
                            "event time too far ahead of this clock",
                        )
                    } else {
                        self.counters.gateway_events.fetch_add(1, Relaxed);
                        self.clock.saw(ev.ts);
                        self.observers.saw(ev.src, gateway, ev.ts);
                        let mut found = self.pipeline.gateway_event(&ev);
                        // Dated by the event that raised them. The
                        // detector's clock only goes forward, and time let
                        // pass while a failover held events back (the
                        // stream without a leader, a gateway buffering) has
                        // moved it past the events that arrive late.
                        for a in &mut found {
                            a.ts = a.ts.min(ev.ts);
                        }
                        found
                    }
                }
                Ok(FleetEvent::Host(ev)) => {
                    self.counters.host_events.fetch_add(1, Relaxed);
                    self.pipeline.host_event(&ev)
                }
            };
            alerts.extend(found);
        }
        for a in &mut alerts {
            if let Some(src) = a.source_ip {
                a.observers = self.observers.of(src);
            }
        }
        alerts
    }

    fn reject(&mut self, reason: Refusal, subject: &str, why: &str) -> Vec<Alert> {
        self.counters.refuse(reason);
        let total = self.counters.refused_total();
        // The first few in full, then every thousandth: a rogue publisher
        // must not flood the log.
        if total <= 10 || total.is_multiple_of(1000) {
            tracing::warn!(
                subject,
                reason = reason.label(),
                total,
                "rejected a fleet message: {why}"
            );
        }
        Vec::new()
    }
}

/// The aggregator's clock for letting time pass without events: the
/// newest event time plus the wall time since it arrived (never ahead of
/// the wall clock). A backlog read late still dates its alerts in event
/// time, not at the moment it was read.
#[derive(Debug, Default)]
pub(super) struct EventClock {
    last: Option<(DateTime<Utc>, std::time::Instant)>,
}

impl EventClock {
    pub(super) fn saw(&mut self, ts: DateTime<Utc>) {
        if self.last.is_none_or(|(t, _)| ts > t) {
            self.last = Some((ts, std::time::Instant::now()));
        }
    }

    pub(super) fn now(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        match self.last {
            None => wall,
            Some((t, at)) => {
                let since = chrono::TimeDelta::from_std(at.elapsed()).unwrap_or_default();
                (t + since).min(wall)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::Config;
    use crate::event::{GatewayEvent, GatewayEventKind};

    fn aggregator(threshold: u32) -> Aggregator {
        let mut cfg = Config::default();
        cfg.detect.fanout_threshold = threshold;
        Aggregator {
            pipeline: Pipeline::new(cfg.pipeline()).without_host_inputs(),
            observers: Observers::new(1 << 20, cfg.detect.window),
            max_ahead: chrono::TimeDelta::seconds(60),
            counters: Arc::default(),
            clock: EventClock::default(),
        }
    }

    fn scan(t0: DateTime<Utc>, n: u8) -> Vec<u8> {
        let mut b = wire::Batch::default();
        for i in 0..n {
            b.push_gateway(&GatewayEvent::new(
                t0 + chrono::TimeDelta::milliseconds(i.into()),
                GatewayEventKind::NewPair,
                IpAddr::from([203, 0, 113, 10]),
                IpAddr::from([198, 51, 100, i]),
                50000,
                445,
            ));
        }
        b.into_bytes()
    }

    #[test]
    fn a_message_id_naming_another_gateway_is_refused_and_counted() {
        let t0 = Utc::now();
        let mut agg = aggregator(10);
        let subject = crate::fleet::subject("gw2", 11);
        for id in [Some("gw1.00.1.ab"), None, Some("gw2")] {
            assert!(agg.message(&subject, id, &scan(t0, 20), t0).is_empty());
        }
        assert_eq!(agg.counters.refuse(Refusal::GatewayMismatch), 4);
        assert_eq!(agg.counters.gateway_events.load(Relaxed), 0);
        // The same events under the right id alert, naming gw2.
        let alerts = agg.message(&subject, Some("gw2.00.1.ab"), &scan(t0, 20), t0);
        let fanout: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == crate::alert::AlertKind::SmbScanFanout)
            .collect();
        assert!(!fanout.is_empty(), "{alerts:#?}");
        assert!(fanout.iter().all(|a| a.observers == ["gw2"]), "{fanout:#?}");
    }

    #[test]
    fn alerts_read_late_are_dated_by_their_events() {
        let t0 = Utc::now() - chrono::TimeDelta::seconds(30);
        let mut agg = aggregator(10);
        // Time let pass (no events) while a failover held them back.
        agg.pipeline.advance(t0 + chrono::TimeDelta::seconds(20));
        let subject = crate::fleet::subject("gw1", 11);
        let alerts = agg.message(&subject, Some("gw1.00.1.ab"), &scan(t0, 20), Utc::now());
        let fanout = alerts
            .iter()
            .find(|a| a.kind == crate::alert::AlertKind::SmbScanFanout)
            .expect("a fan-out alert");
        assert!(
            fanout.ts >= t0 && fanout.ts < t0 + chrono::TimeDelta::seconds(1),
            "dated {}, the scan ran at {t0}",
            fanout.ts
        );
    }

    #[test]
    fn time_without_events_runs_from_the_newest_event() {
        let mut c = EventClock::default();
        let wall = Utc::now();
        assert_eq!(c.now(wall), wall);
        let old = wall - chrono::TimeDelta::minutes(10);
        c.saw(old);
        c.saw(old - chrono::TimeDelta::minutes(1));
        let now = c.now(wall);
        // A backlog read late: its time, not the moment it was read.
        assert!(
            now >= old && now < old + chrono::TimeDelta::seconds(5),
            "{now}"
        );
        // Never ahead of the wall clock.
        c.saw(wall + chrono::TimeDelta::minutes(5));
        assert_eq!(c.now(wall), wall);
    }
}
