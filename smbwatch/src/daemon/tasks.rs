//! What `start` sets up beside the drain thread: the alert sink task, the
//! baseline with its writer thread, and the fleet's publish task.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{degraded, reload::SinkUpdate, DaemonError};
use crate::{alert::sink::AlertSinks, alert::Alert, config::Config, metrics::Metrics};

/// Hands each alert to the sinks and counts it; publishes the syslog
/// counters as they change; takes new sinks from a reload (flushing the old
/// ones aside). Returns the sinks when the drain is done.
pub(super) async fn sink_task(
    mut sinks: AlertSinks,
    mut alert_rx: mpsc::Receiver<Alert>,
    mut sinks_rx: mpsc::Receiver<SinkUpdate>,
    metrics: Arc<Metrics>,
) -> AlertSinks {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            a = alert_rx.recv() => {
                let Some(a) = a else { break };
                if let Err(e) = sinks.send(&a) {
                    tracing::warn!(error = %e, "alert sink failed");
                }
                metrics.on_alert(&a);
            }
            Some(update) = sinks_rx.recv() => match update {
                SinkUpdate::Replace(new) => {
                    let old = std::mem::replace(&mut sinks, *new);
                    tokio::spawn(old.shutdown());
                }
                SinkUpdate::Reopen => match sinks.reopen() {
                    Ok(()) => tracing::debug!("alert files reopened"),
                    Err(e) => tracing::error!("reopening alert files failed, still writing to the old ones: {e}"),
                },
            },
            _ = tick.tick() => metrics.set_syslog(sinks.syslog_stats()),
        }
    }
    sinks
}

/// The configured baseline, loaded, and its writer thread. A damaged file
/// is moved aside and the daemon starts with an empty baseline: the
/// returned notice says so (for the alert sinks, once they run).
pub(super) fn open_baseline(
    cfg: &Config,
) -> Result<
    (
        crate::baseline::Baseline,
        crate::baseline::writer::Persist,
        Option<Alert>,
    ),
    DaemonError,
> {
    use crate::baseline::store::Store;
    use crate::baseline::writer::{Persist, Writer};
    let now = chrono::Utc::now();
    let (store, snap, set_aside) = Store::open_or_set_aside(&cfg.baseline.path, now)?;
    let notice = set_aside.map(|s| {
        let notice = degraded::baseline_set_aside(now, store.path(), &s.moved_to, &s.reason);
        tracing::error!("{}", notice.message);
        notice
    });
    let b = crate::baseline::cli::learner(cfg, snap);
    let s = b.stats();
    tracing::info!(path = %store.path().display(), clients = s.clients, edges = s.edges, "baseline loaded");
    let writer = Writer::spawn(store, |c| {
        tracing::debug!(batch = c.batch, records = c.records, took = ?c.took, "baseline batch written");
    })
    .map_err(|source| DaemonError::Io {
        op: "starting the baseline writer",
        source,
    })?;
    Ok((b, Persist::new(writer, cfg.baseline.flush_interval), notice))
}

/// Connects to the fleet's broker (in the background: a broker that is
/// down at start is retried) and starts the publish task.
pub(super) async fn start_publisher(
    url: &str,
    cfg: &crate::fleet::PublishConfig,
    metrics: &Metrics,
) -> Result<
    (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<crate::fleet::outbox::OutboxStats>,
        crate::fleet::outbox::Tap,
    ),
    DaemonError,
> {
    use crate::fleet::{self, outbox::Outbox, transport::JetStream};
    let gateway =
        (cfg.gateway_id.as_ref()).map_or_else(fleet::default_gateway_id, |g| g.to_string());
    let js = JetStream::connect(
        url,
        cfg,
        &gateway,
        &format!("smbwatch gateway {gateway}"),
        true,
    )
    .await
    .map_err(|e| DaemonError::Publish(e.to_string()))?;
    let outbox = Arc::new(Outbox::new(cfg.buffer_bytes));
    let publish = Arc::new(fleet::stats::PublishCounters::default());
    metrics.set_fleet(fleet::stats::FleetMetrics::Gateway {
        broker: js.broker.clone(),
        publish: publish.clone(),
        outbox: outbox.clone(),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(fleet::publisher::run(outbox.clone(), js, publish, rx));
    tracing::info!(url, gateway, stream = %cfg.stream, "publishing events");
    Ok((tx, task, fleet::outbox::Tap::new(outbox, cfg.partitions)))
}

/// Alerts queued between the drain thread and the sinks. An alert is a few
/// KiB at most (host fields are capped at parse time), so this is a few MiB.
pub(super) const ALERT_QUEUE: usize = 4096;
