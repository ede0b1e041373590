//! The `run` command: attach, read events, report, shut down cleanly.
//!
//! Two threads. The drain thread ([`drain`]) reads the ring buffer and runs
//! the detection pipeline, and nothing else. The tokio runtime's thread
//! parses host logs, serves the listener, writes alerts to the sinks, and
//! watches the kernel's counters (the degradation notice). SIGINT/SIGTERM
//! stop the drain thread after a final drain, then dropping the data plane
//! detaches every link and the pin directory removes its pins. SIGHUP
//! reloads the configuration file ([`reload`]); systemd hears of each
//! state through [`notify`].
//!
//! This file is the daemon's life (start, serve, shut down); `tasks`
//! holds what it starts beside the drain thread (the sink task, the
//! baseline, the publisher), `stdout` the `--events` lines.

mod degraded;
mod drain;
pub mod inputs;
pub mod notify;
pub mod reload;
mod stdout;
mod tasks;

pub use drain::DrainReport;
pub use inputs::listener::{ListenerCounters, ListenerStats};
pub use stdout::StdoutEvents;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use smbwatch_common::stat;
use tokio::{sync::mpsc, task::JoinHandle};

use degraded::Degradation;

use self::drain::DrainLoop;
use self::notify::Notifier;
use self::reload::{Reloader, SinkUpdate};
use self::tasks::{open_baseline, sink_task, start_publisher, ALERT_QUEUE};
use crate::{
    alert::{sensor::Sensor, sink::AlertSinks, Alert},
    config::Config,
    dataplane::{privilege, Dataplane, DataplaneError, KernelClock, PinDir, Stats},
    metrics::Metrics,
    pipeline::Pipeline,
    runtime::{self, ConfigSource, Signal, Signals},
};

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to (`--iface`, else `[dataplane] interfaces`).
    pub ifaces: Vec<String>,
    /// The configuration file and the flags over it, re-read on SIGHUP.
    pub source: ConfigSource,
    /// Replace a foreign XDP program.
    pub force: bool,
    /// The configuration, command-line overrides applied.
    pub config: Config,
    /// Host-log files to read (once, or followed with `config.hostlog.follow`).
    pub host_logs: Vec<PathBuf>,
}

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Data-plane setup or reading failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// No interface given.
    #[error(
        "no interface given: pass --iface IF (repeat it for every interface between the segments) or set [dataplane] interfaces in the configuration file"
    )]
    NoInterface,
    /// The metrics endpoint could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::MetricsError),
    /// An alert sink could not be set up.
    #[error(transparent)]
    Sink(#[from] crate::alert::sink::SinkError),
    /// The fleet publisher could not be set up.
    #[error("publish: {0}")]
    Publish(String),
    /// A host-log input could not be set up.
    #[error("host-log input: {0}")]
    HostLog(String),
    /// The baseline database cannot be used.
    #[error(transparent)]
    Baseline(#[from] crate::baseline::store::StoreError),
    /// Waiting on the ring buffer or signals failed.
    #[error("{op} failed")]
    Io {
        /// What was done.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Loads, attaches to every interface, pins, then reads events until SIGINT
/// or SIGTERM: events go to stdout when asked for (or when there is no alert
/// sink), through the detection pipeline, and alerts to the sinks. Returns
/// the final kernel counters.
pub async fn run(opts: &RunOptions) -> Result<Stats, DaemonError> {
    let mut running = start(opts).await?;
    serve(&mut running, opts).await?;
    shutdown(running).await
}

/// What [`start`] set up: the attached program, the tasks and the drain
/// thread around it, and what stopping them takes.
// On an error in the loop the fields drop in this order, as the locals of
// one function did: the drain thread's handles first, the pins before the
// program detaches, the signal handlers last.
struct Running {
    done_rx: tokio::sync::oneshot::Receiver<DrainReport>,
    heartbeat: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    publish_task: Option<JoinHandle<crate::fleet::outbox::OutboxStats>>,
    publish_stop: Option<tokio::sync::watch::Sender<bool>>,
    reloader: Reloader,
    metrics_task: Option<JoinHandle<()>>,
    sink_task: JoinHandle<AlertSinks>,
    alert_tx: mpsc::Sender<Alert>,
    pins: PinDir,
    dp: Dataplane,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    notifier: Notifier,
    signals: Signals,
}

/// Build: signal handlers, sinks, pipeline, inputs and metrics, then load,
/// attach and pin, and start the sink task, the publisher and the drain
/// thread.
async fn start(opts: &RunOptions) -> Result<Running, DaemonError> {
    if opts.ifaces.is_empty() {
        return Err(DaemonError::NoInterface);
    }
    let cfg = &opts.config;
    privilege::require()?;
    // Register the handlers first: a SIGTERM during setup must still end in
    // a clean detach, not the default action.
    let signals = Signals::install().map_err(|source| DaemonError::Io {
        op: "installing signal handlers",
        source,
    })?;
    let notifier = Notifier::from_env().map_err(|source| DaemonError::Io {
        op: "opening $NOTIFY_SOCKET",
        source,
    })?;

    // Interface names for `observer.ingress.interface.name`, resolved once.
    let sensor = Sensor::local(&opts.ifaces);
    let sinks = cfg.alert_sinks(&sensor)?;
    // Without a sink, event lines go to stdout (a terminal, a pipe), but
    // not into the journal: one entry per new connection would drown it.
    let events = (cfg.alert.events || (sinks.is_empty() && !crate::logging::to_journal()))
        .then(StdoutEvents::new);
    let mut pipeline = Pipeline::new(cfg.pipeline());
    if opts.host_logs.is_empty() && cfg.hostlog.listen.is_none() {
        pipeline = pipeline.without_host_inputs();
    }
    let (persist, baseline_notice) = if cfg.baseline.enabled {
        let (b, persist, notice) = open_baseline(cfg)?;
        pipeline = pipeline.with_baseline(b);
        (Some(persist), notice)
    } else {
        (None, None)
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (host_tx, host_rx) = inputs::channel();
    inputs::spawn_files(&cfg.hostlog, &opts.host_logs, &host_tx, shutdown_rx)
        .map_err(DaemonError::HostLog)?;
    let listener = inputs::start_listener(&cfg.hostlog, &host_tx)
        .await
        .map_err(DaemonError::HostLog)?;
    let metrics = Arc::new(Metrics::new(cfg.dataplane.pin_dir.clone()));
    metrics.set_reload(opts.source.stats.clone());
    metrics.set_listener(listener.as_ref().map(|l| l.counters.clone()));
    // Bound before loading: a port in use fails start-up before attaching.
    let metrics_server = runtime::bind_metrics(&cfg.metrics, &metrics).await?;

    let load = cfg
        .dataplane
        .load_options(opts.ifaces.len(), cfg.detect.window);
    // Spelled as `--answers` takes it.
    let answers = match load.answers {
        crate::dataplane::AnswerCheck::OtherIngress => "other-ingress",
        crate::dataplane::AnswerCheck::Any => "any",
    };
    tracing::info!(
        answers,
        events_per_cpu = load.events_per_cpu,
        "kernel settings"
    );
    let mut dp = Dataplane::load(&load)?;
    let clock = KernelClock::for_program(load.clock).map_err(DataplaneError::from)?;
    if let Some(c) = clock.calibration() {
        tracing::info!(
            tick_ns = clock.tick_ns(),
            error_ns = c.error_ns,
            "kernel clock calibrated (jiffies against CLOCK_MONOTONIC)"
        );
    }
    for iface in &opts.ifaces {
        let mode = dp.attach(iface, cfg.dataplane.xdp_mode, opts.force)?;
        tracing::info!(iface, %mode, "attached");
    }
    let pins = dp.pin(&cfg.dataplane.pin_dir)?;
    tracing::info!(dir = %pins.path().display(), ports = ?cfg.dataplane.ports, "pinned maps; `smbwatch status` reads them");

    // Alerts leave the drain thread through a bounded queue to this task;
    // a reload hands it new sinks, and it flushes the old ones aside.
    let (alert_tx, alert_rx) = mpsc::channel::<Alert>(ALERT_QUEUE);
    let (sinks_tx, sinks_rx) = mpsc::channel::<SinkUpdate>(2);
    let sink_task = tokio::spawn(sink_task(sinks, alert_rx, sinks_rx, metrics.clone()));
    if let Some(notice) = baseline_notice {
        // The queue is empty at start: this cannot be refused.
        let _ = alert_tx.try_send(notice);
    }
    let metrics_task = runtime::serve_metrics(metrics_server, "/metrics and /top");
    let (settings_tx, settings_rx) = mpsc::channel(4);
    let reloader = Reloader {
        source: opts.source.clone(),
        running: cfg.clone(),
        has_files: !opts.host_logs.is_empty(),
        sinks: sinks_tx,
        settings: settings_tx,
        host_tx,
        listener,
        sensor,
        metrics: metrics.clone(),
    };

    let (publish_stop, publish_task, tap) = match &cfg.publish.url {
        Some(url) => {
            let (tx, task, tap) = start_publisher(url.as_str(), &cfg.publish, &metrics).await?;
            (Some(tx), Some(task), Some(tap))
        }
        None => (None, None, None),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat = Arc::new(AtomicU64::new(0));
    let drain_loop = DrainLoop {
        ring: dp.take_events()?,
        samples: dp.take_samples()?,
        pipeline,
        events,
        host_rx,
        settings: settings_rx,
        alerts: alert_tx.clone(),
        stop: stop.clone(),
        heartbeat: heartbeat.clone(),
        metrics: metrics.clone(),
        clock,
        persist,
        publish: tap,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("smbwatch-drain".into())
        .spawn(move || {
            let report = drain_loop.run();
            let _ = done_tx.send(report);
        })
        .map_err(|source| DaemonError::Io {
            op: "starting the drain thread",
            source,
        })?;

    Ok(Running {
        signals,
        notifier,
        dp,
        pins,
        shutdown_tx,
        reloader,
        alert_tx,
        sink_task,
        metrics_task,
        publish_stop,
        publish_task,
        stop,
        heartbeat,
        done_rx,
    })
}

/// The loop: health and counters, the watchdog, reloads, until SIGINT or
/// SIGTERM.
async fn serve(running: &mut Running, opts: &RunOptions) -> Result<(), DaemonError> {
    let cfg = &opts.config;
    let Running {
        signals,
        notifier,
        dp,
        reloader,
        alert_tx,
        heartbeat,
        ..
    } = running;
    let mut stats_tick = tokio::time::interval(cfg.dataplane.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats_tick.tick().await;
    let mut health_tick = tokio::time::interval(Duration::from_secs(1));
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = 0u64;
    let mut degradation = Degradation::default();
    // Keep-alives only while the drain thread makes progress: a wedged
    // drain gets the service restarted by the watchdog.
    let watchdog = notifier.watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut last_beat = u64::MAX;
    notifier.ready(&format!("attached to {}", opts.ifaces.join(", ")));

    loop {
        tokio::select! {
            _ = health_tick.tick() => {
                let stats = dp.stats()?;
                let now = chrono::Utc::now();
                let shed = degradation.observe(now, stats.get(stat::EVENTS_SHED));
                let limits = degradation.observe_limits(
                    now,
                    stats.get(stat::IPV6_EXT_LIMIT),
                    stats.get(stat::VLAN_LIMIT),
                );
                let active = [degradation.is_degraded(), degradation.is_past_limits()];
                for (notice, active) in [shed, limits].into_iter().zip(active) {
                    let Some(notice) = notice else { continue };
                    if active {
                        tracing::warn!(episodes = degradation.episodes, "{}", notice.message);
                    } else {
                        tracing::info!("{}", notice.message);
                    }
                    if alert_tx.try_send(notice).is_err() {
                        tracing::warn!("alert queue full: degradation notice not delivered to the sinks");
                    }
                }
                let full = stats.get(stat::RINGBUF_FULL);
                if full > last_full {
                    tracing::warn!(lost = full - last_full, "ring buffer full: events lost (the kernel's counters and sketches stay exact)");
                    last_full = full;
                }
            }
            _ = stats_tick.tick() => {
                // DEBUG: at INFO this was 8,640 journal lines a day; the
                // same counters are on /metrics and in `smbwatch status`.
                let stats = dp.stats()?;
                tracing::debug!(%stats, "kernel counters");
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let beat = heartbeat.load(Ordering::Relaxed);
                if beat != last_beat {
                    notifier.watchdog();
                    last_beat = beat;
                }
            }
            signal = signals.next() => match signal {
                Signal::Reload => {
                    tracing::info!("SIGHUP: reopening alert files, reloading the configuration");
                    notifier.reloading();
                    reloader.reopen_files().await;
                    let status = match reloader.reload().await {
                        Ok(()) => "configuration reloaded".to_owned(),
                        Err(e) => format!("reload failed, running configuration kept: {e}"),
                    };
                    notifier.ready(&status);
                }
                Signal::Stop(name) => { tracing::info!("{name}: detaching"); break; }
            },
        }
    }
    Ok(())
}

/// Shutdown: inputs stop, the drain thread drains a last time, the
/// publisher delivers, the program detaches and the sinks flush.
async fn shutdown(running: Running) -> Result<Stats, DaemonError> {
    let Running {
        notifier,
        dp,
        pins,
        shutdown_tx,
        reloader,
        alert_tx,
        sink_task,
        metrics_task,
        publish_stop,
        publish_task,
        stop,
        done_rx,
        ..
    } = running;
    notifier.stopping();
    // Inputs stop taking data and hand over what they accepted; the drain
    // thread drains the ring buffer and the host channel a last time.
    let _ = shutdown_tx.send(true);
    reloader.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    let report = done_rx.await.unwrap_or_default();
    // The final drain has handed its events to the outbox: deliver them.
    if let (Some(tx), Some(task)) = (publish_stop, publish_task) {
        let _ = tx.send(true);
        if let Ok(s) = task.await {
            tracing::info!(
                published = s.delivered,
                dropped = s.dropped,
                undelivered = s.queued,
                "publisher stopped"
            );
        }
    }
    let stats = dp.stats()?;
    runtime::stop_metrics(metrics_task);
    drop(pins);
    drop(dp);
    tracing::info!(%stats, "detached and unpinned");
    tracing::info!(
        records = report.records,
        host_events = report.host_events,
        host_events_at_stop = report.host_events_at_stop,
        alerts_dropped = report.alerts_dropped,
        samples = report.samples,
        "drain finished"
    );
    drop(alert_tx);
    if let Ok(sinks) = sink_task.await {
        runtime::flush_sinks(sinks).await;
    }
    Ok(stats)
}
