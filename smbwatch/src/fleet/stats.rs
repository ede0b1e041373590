//! The fleet's counters (gateway publishing, aggregating, the broker
//! connection) and their Prometheus families, served by the daemon's and
//! the aggregator's `/metrics` (`crate::metrics`).
//!
//! Plain atomics written where things happen (the publish task, the
//! aggregator's loop, the NATS client's event callback), read by a scrape.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use prometheus_client::encoding::DescriptorEncoder;

use super::outbox::Outbox;
use crate::metrics::expose::{counters, gauges, Families};

/// Why the aggregator refused a message or a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The subject is not `smbwatch.events.<gateway>.<partition>`.
    Subject,
    /// The message id names another gateway than the subject, or is
    /// missing or malformed: a member publishing as someone else.
    GatewayMismatch,
    /// The payload or a record does not decode (version, length, kind,
    /// caps).
    Malformed,
    /// An event time too far ahead of the aggregator's clock.
    TooFarAhead,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 4] = [
        Refusal::Subject,
        Refusal::GatewayMismatch,
        Refusal::Malformed,
        Refusal::TooFarAhead,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Subject => "subject",
            Refusal::GatewayMismatch => "gateway_mismatch",
            Refusal::Malformed => "malformed",
            Refusal::TooFarAhead => "too_far_ahead",
        }
    }
}

/// The broker connection's counters (gateways and aggregators).
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// Connections lost (each followed by reconnect attempts).
    pub disconnects: AtomicU64,
    /// Connections (re-)established, the first included.
    pub connects: AtomicU64,
    /// Messages the NATS client itself dropped because a subscription's
    /// buffer was full (client-side slow consumer).
    pub client_slow_consumer: AtomicU64,
}

/// A gateway's publishing counters (the outbox keeps its own: accepted,
/// dropped for lack of room, delivered, bytes held).
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Messages sent to the broker, resends included.
    pub sent: AtomicU64,
    /// Messages sent again after a failure.
    pub resent: AtomicU64,
    /// Messages the broker acknowledged.
    pub acknowledged: AtomicU64,
    /// Publishes that failed (no acknowledgement, an error): sent again.
    pub failed: AtomicU64,
    /// Acknowledgements saying "duplicate" for a resend (expected: the
    /// first attempt had been stored).
    pub duplicates: AtomicU64,
    /// Acknowledgements saying "duplicate" for a message id sent for the
    /// first time: someone else published that id first (suspicious).
    pub suspicious_duplicates: AtomicU64,
}

/// An aggregator's counters.
#[derive(Debug, Default)]
pub struct AggregateCounters {
    /// Messages processed (after the warm-up).
    pub messages: AtomicU64,
    /// Messages read during the warm-up (alerts muted).
    pub warmup_messages: AtomicU64,
    /// Gateway events processed.
    pub gateway_events: AtomicU64,
    /// Host events processed.
    pub host_events: AtomicU64,
    /// Refused messages or records, by [`Refusal::ALL`] order.
    pub refused: [AtomicU64; 4],
    /// Messages delivered again that were already processed: skipped.
    pub duplicates: AtomicU64,
    /// Deliveries the broker made that never reached the aggregator
    /// (found by the consumer's delivery sequence): read again.
    pub gaps: AtomicU64,
    /// Consumers moved back to the last processed message after a gap.
    pub rewinds: AtomicU64,
    /// Stream messages discarded by the stream's limits before this
    /// aggregator read them (at most: some may be other partitions').
    pub discarded_unread: AtomicU64,
    /// Messages stored and not yet processed (the consumers' pending
    /// count, refreshed every second).
    pub backlog: AtomicU64,
    /// Alerts written.
    pub alerts: AtomicU64,
}

impl AggregateCounters {
    /// Counts one refusal.
    pub fn refuse(&self, why: Refusal) -> u64 {
        let i = Refusal::ALL.iter().position(|&r| r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Relaxed) + 1
    }

    /// All refusals.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// What a process exposes about the fleet.
#[derive(Clone, Debug)]
pub enum FleetMetrics {
    /// A gateway (`run --publish`).
    Gateway {
        /// The broker connection.
        broker: Arc<BrokerCounters>,
        /// Publishing.
        publish: Arc<PublishCounters>,
        /// The outbox (bytes held, drops).
        outbox: Arc<Outbox>,
    },
    /// An aggregator.
    Aggregator {
        /// The broker connection.
        broker: Arc<BrokerCounters>,
        /// Aggregating.
        aggregate: Arc<AggregateCounters>,
    },
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

fn broker_metrics(e: &mut DescriptorEncoder, b: &BrokerCounters) -> fmt::Result {
    counters(
        e,
        "fleet_broker_connects",
        "Connections to the NATS broker established (the first included).",
        "",
        &[("", get(&b.connects))],
    )?;
    counters(
        e,
        "fleet_broker_disconnects",
        "Connections to the NATS broker lost (reconnected in the background).",
        "",
        &[("", get(&b.disconnects))],
    )?;
    counters(
        e,
        "fleet_client_slow_consumer",
        "Times the NATS client dropped messages of a full subscription buffer.",
        "",
        &[("", get(&b.client_slow_consumer))],
    )
}

impl Families for FleetMetrics {
    /// Writes the fleet's families.
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        match self {
            FleetMetrics::Gateway {
                broker,
                publish,
                outbox,
            } => {
                broker_metrics(e, broker)?;
                let s = outbox.stats();
                counters(
                    e,
                    "fleet_publish_events",
                    "Events handed to the outbox, by outcome: accepted, dropped (outbox full), acknowledged by the broker.",
                    "outcome",
                    &[
                        ("accepted", s.accepted),
                        ("dropped_outbox_full", s.dropped),
                        ("acknowledged", s.delivered),
                    ],
                )?;
                counters(
                    e,
                    "fleet_publish_messages",
                    "Messages (batches of events) by outcome: sent (resends included), resent, acknowledged, failed (sent again).",
                    "outcome",
                    &[
                        ("sent", get(&publish.sent)),
                        ("resent", get(&publish.resent)),
                        ("acknowledged", get(&publish.acknowledged)),
                        ("failed", get(&publish.failed)),
                    ],
                )?;
                counters(
                    e,
                    "fleet_publish_duplicates",
                    "Acknowledgements the broker marked duplicate: for a resend (expected), or for an id sent for the first time (suspicious: someone published it first).",
                    "kind",
                    &[
                        ("resend", get(&publish.duplicates)),
                        ("suspicious", get(&publish.suspicious_duplicates)),
                    ],
                )?;
                gauges(
                    e,
                    "fleet_outbox_bytes",
                    "Bytes held in the outbox (queued and in flight).",
                    "",
                    &[("", s.bytes as u64)],
                )?;
                gauges(
                    e,
                    "fleet_outbox_messages",
                    "Messages queued in the outbox (not in flight).",
                    "",
                    &[("", s.queued as u64)],
                )
            }
            FleetMetrics::Aggregator { broker, aggregate } => {
                let a = aggregate;
                broker_metrics(e, broker)?;
                counters(
                    e,
                    "fleet_aggregate_messages",
                    "Messages processed: live, or read again to rebuild state at start (warmup).",
                    "phase",
                    &[
                        ("live", get(&a.messages)),
                        ("warmup", get(&a.warmup_messages)),
                    ],
                )?;
                counters(
                    e,
                    "fleet_aggregate_events",
                    "Events processed, by kind.",
                    "kind",
                    &[
                        ("gateway", get(&a.gateway_events)),
                        ("host", get(&a.host_events)),
                    ],
                )?;
                let refused: Vec<(&str, u64)> = Refusal::ALL
                    .iter()
                    .zip(&a.refused)
                    .map(|(r, c)| (r.label(), get(c)))
                    .collect();
                counters(
                    e,
                    "fleet_aggregate_refused",
                    "Messages or records refused, by reason.",
                    "reason",
                    &refused,
                )?;
                counters(
                    e,
                    "fleet_aggregate_duplicates",
                    "Messages delivered again that were already processed (skipped).",
                    "",
                    &[("", get(&a.duplicates))],
                )?;
                counters(
                    e,
                    "fleet_aggregate_gaps",
                    "Deliveries lost between the broker and the aggregator (read again from the last processed message).",
                    "",
                    &[("", get(&a.gaps))],
                )?;
                counters(
                    e,
                    "fleet_aggregate_rewinds",
                    "Consumers moved back to the last processed message after a gap.",
                    "",
                    &[("", get(&a.rewinds))],
                )?;
                counters(
                    e,
                    "fleet_aggregate_discarded_unread",
                    "Stream messages discarded by the stream's limits before they were read (an upper bound for this aggregator's partitions).",
                    "",
                    &[("", get(&a.discarded_unread))],
                )?;
                gauges(
                    e,
                    "fleet_aggregate_backlog",
                    "Messages stored and not yet processed by this aggregator.",
                    "",
                    &[("", get(&a.backlog))],
                )?;
                counters(
                    e,
                    "fleet_aggregate_alerts",
                    "Alerts the aggregator wrote.",
                    "",
                    &[("", get(&a.alerts))],
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::metrics::{expose::Scrape, Metrics};

    fn samples(f: FleetMetrics) -> Vec<prometheus_parse::Sample> {
        let m = Metrics::new(std::path::PathBuf::new());
        m.set_fleet(f);
        let text = Scrape::take(&m).encode();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .expect("Prometheus text format")
            .samples
    }

    fn value(s: &[prometheus_parse::Sample], metric: &str, label: Option<(&str, &str)>) -> f64 {
        let s = s
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{metric} {label:?} missing"));
        match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{metric}: {other:?}"),
        }
    }

    #[test]
    fn a_gateway_exposes_publishing_and_its_outbox() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        outbox.push([(3, Bytes::from_static(b"0123456789"), 7)]);
        let publish = Arc::new(PublishCounters::default());
        publish.suspicious_duplicates.store(2, Relaxed);
        publish.sent.store(5, Relaxed);
        let broker = Arc::new(BrokerCounters::default());
        broker.disconnects.store(1, Relaxed);
        let s = samples(FleetMetrics::Gateway {
            broker,
            publish,
            outbox: outbox.clone(),
        });
        let accepted = Some(("outcome", "accepted"));
        assert_eq!(
            value(&s, "smbwatch_fleet_publish_events_total", accepted),
            7.0
        );
        assert_eq!(
            value(
                &s,
                "smbwatch_fleet_publish_duplicates_total",
                Some(("kind", "suspicious"))
            ),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "smbwatch_fleet_publish_messages_total",
                Some(("outcome", "sent"))
            ),
            5.0
        );
        assert_eq!(
            value(&s, "smbwatch_fleet_outbox_bytes", None),
            outbox.stats().bytes as f64
        );
        assert_eq!(
            value(&s, "smbwatch_fleet_broker_disconnects_total", None),
            1.0
        );
        assert!(!s
            .iter()
            .any(|x| x.metric.starts_with("smbwatch_fleet_aggregate")));
    }

    #[test]
    fn an_aggregator_exposes_refusals_gaps_and_backlog() {
        let a = Arc::new(AggregateCounters::default());
        a.refuse(Refusal::GatewayMismatch);
        a.refuse(Refusal::GatewayMismatch);
        a.refuse(Refusal::Malformed);
        a.gaps.store(4, Relaxed);
        a.backlog.store(9, Relaxed);
        let s = samples(FleetMetrics::Aggregator {
            broker: Arc::default(),
            aggregate: a.clone(),
        });
        let mismatch = Some(("reason", "gateway_mismatch"));
        assert_eq!(
            value(&s, "smbwatch_fleet_aggregate_refused_total", mismatch),
            2.0
        );
        assert_eq!(a.refused_total(), 3);
        assert_eq!(value(&s, "smbwatch_fleet_aggregate_gaps_total", None), 4.0);
        assert_eq!(value(&s, "smbwatch_fleet_aggregate_backlog", None), 9.0);
        assert!(!s
            .iter()
            .any(|x| x.metric.starts_with("smbwatch_fleet_publish")));
    }
}
