//! `smbwatch aggregate`: the detection pipeline over every gateway's
//! events, read from JetStream.
//!
//! One durable pull consumer per partition (`<name>-p<N>`, filtered on
//! `smbwatch.events.*.<N>`), so several aggregators share the load by
//! owning disjoint partitions, each source's events in one of them.
//! Consumers acknowledge cumulatively (`AckAll`) up to the last message
//! processed whole, never further: every [`ACK_EVERY`] messages, every
//! [`ACK_INTERVAL`], and at once, confirmed by the server, after a message
//! whose alerts were written.
//!
//! Nothing is skipped. Each partition's consumer is created afresh right
//! after the last processed message (at start, and whenever a delivery
//! went missing on its way: the consumer's delivery sequence jumped), so
//! a position never moves without processing. Pulls are bounded in
//! messages and bytes, so a stopped aggregator does not make the broker
//! buffer more for it than it allows a client. What is delivered again is
//! recognised by its stream sequence and skipped.
//!
//! A restart resumes at the acknowledged position. The detector's state
//! (fan-out counts, hold-downs) is rebuilt first by reading the partition's
//! recent past up to that position with alerts muted: what was alerted
//! before the restart is not alerted again, and a scan that straddles the
//! restart is still counted whole.
//!
//! This file is the broker side (consumers, acknowledgements, warm-up,
//! signals); `aggregator` is what one message does to the pipeline.

mod aggregator;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{pull, DeliverPolicy},
    stream::Stream as JsStream,
};
use chrono::Utc;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::{
    consume::{self, filter, Delivery, Progress, Shared, QUEUE},
    observers::Observers,
    stats::{AggregateCounters, FleetMetrics},
    transport::{JetStream, TransportError},
};
use crate::{
    alert::{sink::AlertSinks, Alert},
    config::Config,
    metrics::Metrics,
    pipeline::Pipeline,
    runtime::{self, ConfigSource, Signal, Signals},
};
use aggregator::{Aggregator, EventClock};

/// How long a stop waits for its last acknowledgements.
const STOP_ACK_TIME: Duration = Duration::from_secs(3);
/// Messages processed between cumulative acknowledgements.
const ACK_EVERY: u64 = 1000;
/// Longest time a processed message stays unacknowledged.
const ACK_INTERVAL: Duration = Duration::from_millis(200);
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
    /// The configuration (detection, correlation, sinks, `[publish]`).
    pub config: Config,
    /// The file and flags `config` came from, re-read on SIGHUP.
    pub source: ConfigSource,
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
    /// far ahead, a subject and message id naming different gateways).
    pub rejected: u64,
    /// Messages delivered again after processing, skipped.
    pub duplicates: u64,
    /// Deliveries lost on their way and read again.
    pub gaps: u64,
    /// Alerts written.
    pub alerts: u64,
}

impl From<&AggregateCounters> for AggregateReport {
    fn from(c: &AggregateCounters) -> Self {
        Self {
            messages: c.messages.load(Relaxed),
            warmup_messages: c.warmup_messages.load(Relaxed),
            gateway_events: c.gateway_events.load(Relaxed),
            host_events: c.host_events.load(Relaxed),
            rejected: c.refused_total(),
            duplicates: c.duplicates.load(Relaxed),
            gaps: c.gaps.load(Relaxed),
            alerts: c.alerts.load(Relaxed),
        }
    }
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
    /// The metrics server could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::MetricsError),
}

/// Runs until SIGINT/SIGTERM; SIGHUP reopens the alert files and reloads
/// the sinks and the detection settings (as `run` does).
pub async fn run(opts: &AggregateOptions) -> Result<AggregateReport, AggregateError> {
    let cfg = &opts.config;
    let mut signals = Signals::install().map_err(AggregateError::Signal)?;
    let sensor = crate::alert::sensor::Sensor::local(&[]);
    let mut sinks = cfg.alert_sinks(&sensor)?;
    let mut running = cfg.clone();
    let js = JetStream::connect(&opts.url, &cfg.publish, "aggregate", &opts.name, false).await?;
    let counters = Arc::new(AggregateCounters::default());
    // No kernel here: an empty pin directory leaves the kernel's families
    // out of /metrics.
    let metrics = Arc::new(Metrics::new(std::path::PathBuf::new()));
    metrics.set_fleet(FleetMetrics::Aggregator {
        broker: js.broker.clone(),
        aggregate: counters.clone(),
    });
    metrics.set_reload(opts.source.stats.clone());
    let server = runtime::bind_metrics(&cfg.metrics, &metrics).await?;
    let metrics_task = runtime::serve_metrics(server, "/metrics");
    // Retried: an aggregator (re)started during a broker's election waits
    // for it instead of exiting.
    let (stream, weak) = consume::retry("reading the stream", || js.stream_checked()).await;
    match weak {
        Some(problem) => tracing::warn!(
            stream = %cfg.publish.stream,
            "the stream is weaker than configured: {problem}"
        ),
        None => tracing::info!(
            stream = %cfg.publish.stream,
            replicas = js.replicas(),
            "reading the stream"
        ),
    }
    let mut agg = Aggregator {
        // Correlation bookkeeping starts with the first host event a
        // gateway forwards (most fleets forward none).
        pipeline: Pipeline::new(cfg.pipeline()).without_host_inputs(),
        observers: Observers::new(OBSERVER_BYTES, cfg.detect.window),
        max_ahead: chrono::TimeDelta::from_std(cfg.hostlog.max_ahead)
            .unwrap_or(chrono::TimeDelta::MAX),
        counters: counters.clone(),
        clock: EventClock::default(),
    };

    // Every aggregator also reads the address-less host events.
    let parts: Vec<u16> = opts
        .partitions
        .iter()
        .copied()
        .chain([super::ALL])
        .collect();
    let shared = Arc::new(Shared {
        stream: stream.clone(),
        js: js.js.clone(),
        name: opts.name.clone(),
        counters: counters.clone(),
        first_seq: AtomicU64::new(0),
    });
    let mut starts = Vec::new();
    for &p in &parts {
        // Where this aggregator stopped: everything up to its consumer's
        // acknowledgement floor was processed (it never acknowledges
        // further), nothing after it.
        let found = consume::find(&shared, p).await;
        if found.floor > 0 {
            warm_up(&stream, p, found.floor, warmup_span(cfg), &mut agg).await;
        }
        starts.push((p, found));
    }
    tracing::info!(
        partitions = ?opts.partitions,
        warmup_messages = counters.warmup_messages.load(Relaxed),
        "aggregating"
    );

    let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
    let mut progress: HashMap<u16, Arc<Progress>> = HashMap::new();
    let mut pullers = Vec::new();
    for (p, found) in starts {
        let prog = Arc::new(Progress::default());
        prog.processed.store(found.floor, Relaxed);
        progress.insert(p, prog.clone());
        pullers.push(tokio::spawn(consume::pull(
            shared.clone(),
            p,
            found,
            prog,
            tx.clone(),
        )));
    }
    drop(tx);
    pullers.push(tokio::spawn(consume::watch_first_seq(shared.clone())));

    let mut unacked: HashMap<u16, (u64, jetstream::Message)> = HashMap::new();
    let mut tick = tokio::time::interval(ACK_INTERVAL);
    let mut last_advance = std::time::Instant::now();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(Delivery { p, msg, stream_seq }) = next else { break };
                let prog = &progress[&p];
                if stream_seq <= prog.processed.load(Relaxed) {
                    // Delivered again (after the broker's ack wait, or a
                    // rewind): already processed, never twice.
                    counters.duplicates.fetch_add(1, Relaxed);
                    prog.handled.fetch_add(1, Relaxed);
                    continue;
                }
                counters.messages.fetch_add(1, Relaxed);
                let alerts = agg.message(msg.subject.as_str(), msg_id(&msg), &msg.payload, Utc::now());
                prog.processed.store(stream_seq, Relaxed);
                prog.handled.fetch_add(1, Relaxed);
                // Acknowledged cumulatively (AckAll) only up to this
                // message, processed whole: never past one in flight.
                if alerts.is_empty() {
                    let count = unacked.get(&p).map_or(0, |(n, _)| *n) + 1;
                    unacked.insert(p, (count, msg));
                    if count >= ACK_EVERY {
                        ack(&mut unacked, p, false).await;
                    }
                } else {
                    write(&sinks, &alerts, &counters, &metrics);
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
                    let alerts = agg.pipeline.advance(agg.clock.now(Utc::now()));
                    write(&sinks, &alerts, &counters, &metrics);
                    let backlog = progress.values().map(|p| p.pending.load(Relaxed)).sum();
                    counters.backlog.store(backlog, Relaxed);
                }
            }
            signal = signals.next() => match signal {
                Signal::Stop(name) => { tracing::info!("{name}: stopping"); break; }
                Signal::Reload => {
                    tracing::info!("SIGHUP: reopening alert files, reloading the configuration");
                    if let Err(e) = sinks.reopen() {
                        tracing::error!("reopening alert files failed, still writing to the old ones: {e}");
                    }
                    let result = reload(&opts.source, &running, &sensor, &mut sinks, &mut agg.pipeline);
                    opts.source.record(&result);
                    if let Ok(p) = result {
                        running = p.config;
                    }
                }
            },
        }
    }
    for t in &pullers {
        t.abort();
    }
    // The last acknowledgements, bounded: with the broker down each would
    // wait for its timeout, and a stop must not take a minute. What is not
    // acknowledged is delivered again after a restart; a message that raised
    // an alert was acknowledged (confirmed) when it did.
    let parts: Vec<u16> = unacked.keys().copied().collect();
    let last_acks = async {
        for p in parts {
            ack(&mut unacked, p, true).await;
        }
    };
    if tokio::time::timeout(STOP_ACK_TIME, last_acks)
        .await
        .is_err()
    {
        tracing::warn!(
            "stopping without the last acknowledgements (the broker did not answer within {STOP_ACK_TIME:?}): those messages are read again after a restart"
        );
    }
    runtime::stop_metrics(metrics_task);
    runtime::flush_sinks(sinks).await;
    Ok(AggregateReport::from(&*counters))
}

/// One reload of the aggregator: new sinks when they changed (the old
/// ones flush aside), the detection settings always; nothing is swapped
/// unless everything succeeded.
fn reload(
    source: &ConfigSource,
    running: &Config,
    sensor: &crate::alert::sensor::Sensor,
    sinks: &mut AlertSinks,
    pipeline: &mut Pipeline,
) -> Result<crate::config::reload::ReloadPlan, runtime::ReloadError> {
    let p = source.reread(running)?;
    if p.sinks_change() {
        let old = std::mem::replace(sinks, p.config.alert_sinks(sensor)?);
        tokio::spawn(old.shutdown());
    }
    let host_inputs = pipeline.has_host_inputs();
    pipeline.reconfigure(&p.config.pipeline(), host_inputs);
    Ok(p)
}

/// The message id a gateway gave (`Nats-Msg-Id`).
fn msg_id(msg: &jetstream::Message) -> Option<&str> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str())
}

/// How far back the warm-up reads: the longest fan-out window or
/// hold-down, plus the answer timeout (what the detector's state spans).
fn warmup_span(cfg: &Config) -> Duration {
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
async fn warm_up(stream: &JsStream, p: u16, floor: u64, span: Duration, agg: &mut Aggregator) {
    let start = time::OffsetDateTime::now_utc() - span;
    let mut messages = consume::retry(&format!("warm-up read of partition {p}"), || async {
        stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter(p),
                deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .messages()
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let mut muted = 0u64;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WARMUP_IDLE, messages.next()).await {
        let Ok(info) = msg.info() else { continue };
        if info.stream_sequence > floor {
            break;
        }
        agg.counters.warmup_messages.fetch_add(1, Relaxed);
        muted += agg
            .message(msg.subject.as_str(), msg_id(&msg), &msg.payload, Utc::now())
            .len() as u64;
    }
    tracing::info!(
        partition = p,
        floor,
        muted_alerts = muted,
        "state rebuilt from the partition's recent past"
    );
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

fn write(sinks: &AlertSinks, alerts: &[Alert], counters: &AggregateCounters, metrics: &Metrics) {
    for a in alerts {
        counters.alerts.fetch_add(1, Relaxed);
        metrics.on_alert(a);
        if let Err(e) = sinks.send(a) {
            tracing::warn!(error = %e, "alert sink failed");
        }
    }
}
