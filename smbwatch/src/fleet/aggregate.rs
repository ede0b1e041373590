//! `smbwatch aggregate`: the detection pipeline over every gateway's
//! events, read from JetStream.
//!
//! One durable pull consumer per partition (`<name>-p<N>`, filtered on
//! `smbwatch.events.*.<N>`), so several aggregators share the load by
//! owning disjoint partitions, each source's events in one of them.
//! Consumers acknowledge cumulatively (`AckAll`): every [`ACK_EVERY`]
//! messages, every [`ACK_INTERVAL`], and at once, confirmed by the
//! server, after a message whose alerts were written.
//!
//! A restart resumes at the acknowledged position. The detector's state
//! (fan-out counts, hold-downs) is rebuilt first by reading the partition's
//! recent past up to that position with alerts muted: what was alerted
//! before the restart is not alerted again, and a scan that straddles the
//! restart is still counted whole.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    stream::Stream as JsStream,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use tokio::signal::unix::SignalKind;

use super::{
    observers::Observers,
    transport::{JetStream, TransportError},
    wire::{self, FleetEvent},
    SUBJECT_PREFIX,
};
use crate::{
    alert::{
        sink::{AlertSinks, SinkSettings},
        Alert,
    },
    fleet::PublishConfig,
    pipeline::{Pipeline, PipelineConfig},
};

/// Messages processed between cumulative acknowledgements.
const ACK_EVERY: u64 = 1000;
/// Longest time a processed message stays unacknowledged.
const ACK_INTERVAL: Duration = Duration::from_millis(200);
/// How long the server waits for an acknowledgement before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Messages delivered and not yet acknowledged, per consumer.
const MAX_ACK_PENDING: i64 = 50_000;
/// Messages fetched per pull request.
const PULL_BATCH: usize = 1000;
/// Memory for the gateways-per-source table.
const OBSERVER_BYTES: usize = 16 << 20;
/// The warm-up read ends when nothing arrives for this long.
const WARMUP_IDLE: Duration = Duration::from_secs(1);

/// What `aggregate` needs.
#[derive(Clone, Debug)]
pub struct AggregateOptions {
    /// Broker URL(s).
    pub url: String,
    /// The partitions this aggregator owns.
    pub partitions: Vec<u16>,
    /// Consumer name prefix; aggregators sharing partitions must differ.
    pub name: String,
    /// Detection and correlation.
    pub pipeline: PipelineConfig,
    /// Where alerts go.
    pub sinks: SinkSettings,
    /// The broker (`[publish]`).
    pub publish: PublishConfig,
}

/// What an aggregator did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregateReport {
    /// Messages read after the warm-up.
    pub messages: u64,
    /// Messages read during the warm-up (alerts muted).
    pub warmup_messages: u64,
    /// Gateway events among `messages`.
    pub gateway_events: u64,
    /// Host events among `messages`.
    pub host_events: u64,
    /// Messages or records rejected (malformed, another version, times too
    /// far ahead).
    pub rejected: u64,
    /// Alerts written.
    pub alerts: u64,
}

/// Errors of the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// The broker.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A sink could not be set up.
    #[error(transparent)]
    Sink(#[from] crate::alert::sink::SinkError),
    /// Signals could not be installed.
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

fn js_err(op: String, e: impl std::fmt::Display) -> TransportError {
    TransportError::JetStream {
        op,
        message: e.to_string(),
    }
}

/// The pipeline with the aggregator's extras: which gateways saw each
/// source, and the checks on what a broker delivers.
struct Aggregator {
    pipeline: Pipeline,
    observers: Observers,
    max_ahead: chrono::TimeDelta,
    report: AggregateReport,
}

impl Aggregator {
    /// One message (a batch of events); returns its alerts (with
    /// `observer.name` filled). A bad record is rejected alone.
    fn message(&mut self, subject: &str, payload: &[u8], now: DateTime<Utc>) -> Vec<Alert> {
        let Some(gateway) = super::gateway_of(subject) else {
            return self.reject(
                subject,
                "subject is not smbwatch.events.<gateway>.<partition>",
            );
        };
        let records = match wire::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.reject(subject, &e.to_string()),
        };
        let mut alerts = Vec::new();
        for record in records {
            let found = match record {
                Err(e) => self.reject(subject, &e.to_string()),
                Ok(FleetEvent::Gateway(ev)) => {
                    if ev.ts - now > self.max_ahead {
                        self.reject(subject, "event time too far ahead of this clock")
                    } else {
                        self.report.gateway_events += 1;
                        self.observers.saw(ev.src, gateway, ev.ts);
                        self.pipeline.gateway_event(&ev)
                    }
                }
                Ok(FleetEvent::Host(ev)) => {
                    self.report.host_events += 1;
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

    fn reject(&mut self, subject: &str, why: &str) -> Vec<Alert> {
        self.report.rejected += 1;
        // The first few in full, then every thousandth: a rogue publisher
        // must not flood the log.
        if self.report.rejected <= 10 || self.report.rejected.is_multiple_of(1000) {
            tracing::warn!(
                subject,
                total = self.report.rejected,
                "rejected a fleet message: {why}"
            );
        }
        Vec::new()
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(opts: &AggregateOptions) -> Result<AggregateReport, AggregateError> {
    let cfg = &opts.pipeline;
    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).map_err(AggregateError::Signal)?;
    let mut sigint =
        tokio::signal::unix::signal(SignalKind::interrupt()).map_err(AggregateError::Signal)?;
    let sinks = opts.sinks.open(&crate::alert::sensor::Sensor::local(&[]))?;
    let js = JetStream::connect(&opts.url, &opts.publish, "aggregate", &opts.name, false).await?;
    let stream = js.stream().await?;
    let mut agg = Aggregator {
        // Correlation bookkeeping starts with the first host event a
        // gateway forwards (most fleets forward none).
        pipeline: Pipeline::new(cfg.clone()).without_host_inputs(),
        observers: Observers::new(OBSERVER_BYTES, cfg.detect.window),
        max_ahead: chrono::TimeDelta::from_std(cfg.max_ahead).unwrap_or(chrono::TimeDelta::MAX),
        report: AggregateReport::default(),
    };

    let mut consumers = Vec::new();
    // Every aggregator also reads the address-less host events.
    for &p in opts.partitions.iter().chain([&super::ALL]) {
        let name = format!("{}-p{}", opts.name, super::partition_token(p));
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{SUBJECT_PREFIX}.*.{}", super::partition_token(p)),
                    ack_policy: AckPolicy::All,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| js_err(format!("creating consumer {name}"), e))?;
        let mut consumer = consumer;
        let floor = consumer
            .info()
            .await
            .map_err(|e| js_err(format!("reading consumer {name}"), e))?
            .ack_floor
            .stream_sequence;
        if floor > 0 {
            warm_up(&stream, p, floor, warmup_span(cfg), &mut agg).await?;
        }
        consumers.push((p, consumer));
    }
    tracing::info!(
        partitions = ?opts.partitions,
        warmup_messages = agg.report.warmup_messages,
        "aggregating"
    );

    let mut streams = Vec::new();
    for (p, consumer) in &consumers {
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .map_err(|e| js_err(format!("pulling partition {p}"), e))?;
        streams.push(messages.map(move |m| (*p, m)));
    }
    let mut merged = futures_util::stream::select_all(streams);
    let mut unacked: HashMap<u16, (u64, jetstream::Message)> = HashMap::new();
    let mut tick = tokio::time::interval(ACK_INTERVAL);
    let mut last_advance = std::time::Instant::now();
    loop {
        tokio::select! {
            next = merged.next() => {
                let Some((p, msg)) = next else { break };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "pulling messages");
                        continue;
                    }
                };
                agg.report.messages += 1;
                let alerts = agg.message(msg.subject.as_str(), &msg.payload, Utc::now());
                if alerts.is_empty() {
                    let count = unacked.get(&p).map_or(0, |(n, _)| *n) + 1;
                    unacked.insert(p, (count, msg));
                    if count >= ACK_EVERY {
                        ack(&mut unacked, p, false).await;
                    }
                } else {
                    write(&sinks, &alerts, &mut agg.report);
                    unacked.insert(p, (1, msg));
                    ack(&mut unacked, p, true).await;
                }
            }
            _ = tick.tick() => {
                let parts: Vec<u16> = unacked.keys().copied().collect();
                for p in parts {
                    ack(&mut unacked, p, false).await;
                }
                if last_advance.elapsed() >= Duration::from_secs(1) {
                    last_advance = std::time::Instant::now();
                    let alerts = agg.pipeline.advance(Utc::now());
                    write(&sinks, &alerts, &mut agg.report);
                }
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    let parts: Vec<u16> = unacked.keys().copied().collect();
    for p in parts {
        ack(&mut unacked, p, true).await;
    }
    if let Some(s) = sinks.shutdown().await {
        tracing::info!(?s, "syslog sink flushed");
    }
    Ok(agg.report)
}

/// How far back the warm-up reads: the longest fan-out window or
/// hold-down, plus the answer timeout (what the detector's state spans).
fn warmup_span(cfg: &PipelineConfig) -> Duration {
    let window = cfg
        .detect
        .subnet
        .iter()
        .filter_map(|s| s.window)
        .chain([cfg.detect.window])
        .max()
        .unwrap_or(cfg.detect.window);
    window.max(cfg.detect.hold_down) + cfg.detect.response_timeout
}

/// Reads partition `p` from `span` ago up to stream sequence `floor` (what
/// this aggregator's consumer acknowledged before it stopped) through the
/// pipeline with alerts muted.
async fn warm_up(
    stream: &JsStream,
    p: u16,
    floor: u64,
    span: Duration,
    agg: &mut Aggregator,
) -> Result<(), TransportError> {
    let start = time::OffsetDateTime::now_utc() - span;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{SUBJECT_PREFIX}.*.{}", super::partition_token(p)),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .map_err(|e| js_err(format!("warm-up consumer for partition {p}"), e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| js_err(format!("warm-up read of partition {p}"), e))?;
    let mut muted = 0u64;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WARMUP_IDLE, messages.next()).await {
        let Ok(info) = msg.info() else { continue };
        if info.stream_sequence > floor {
            break;
        }
        agg.report.warmup_messages += 1;
        muted += agg
            .message(msg.subject.as_str(), &msg.payload, Utc::now())
            .len() as u64;
    }
    tracing::info!(
        partition = p,
        floor,
        muted_alerts = muted,
        "state rebuilt from the partition's recent past"
    );
    Ok(())
}

/// Acknowledges (cumulatively) the last processed message of partition
/// `p`; `confirm` waits for the server's confirmation.
async fn ack(unacked: &mut HashMap<u16, (u64, jetstream::Message)>, p: u16, confirm: bool) {
    let Some((_, msg)) = unacked.remove(&p) else {
        return;
    };
    let r = if confirm {
        msg.double_ack().await
    } else {
        msg.ack().await
    };
    if let Err(e) = r {
        tracing::warn!(partition = p, error = %e, "acknowledging messages (they may be delivered again)");
    }
}

fn write(sinks: &AlertSinks, alerts: &[Alert], report: &mut AggregateReport) {
    for a in alerts {
        report.alerts += 1;
        if let Err(e) = sinks.send(a) {
            tracing::warn!(error = %e, "alert sink failed");
        }
    }
}
