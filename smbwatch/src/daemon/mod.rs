//! The `run` command: attach, read events, report, shut down cleanly.
//!
//! One tokio task reads the ring buffer, stamps events with wall-clock time
//! and hands them to the consumers. The XDP program does not wake it per
//! event (that cost a context switch per event under a scan): it drains
//! every 20 ms, and `AsyncFd` wakes it early when 256 KiB are unread. A timer logs the kernel counters; SIGINT/SIGTERM end the loop,
//! after which dropping the data plane detaches every link and the pin
//! directory removes its pins.

mod inputs;

use std::{io::Write as _, path::PathBuf, time::Duration};

use aya::maps::{MapData, RingBuf};
use smbwatch_common::RING_DRAIN_INTERVAL_MS;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    alert::{json::JsonTarget, sink::AlertSinks, Alert},
    config::Config,
    dataplane::{
        decode_event, privilege, to_gateway_event, Dataplane, DataplaneError, MonotonicClock, Stats,
    },
    event::GatewayEvent,
    pipeline::Pipeline,
};

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
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
        "no interface given: pass --iface IF (repeat it for every interface between the segments)"
    )]
    NoInterface,
    /// An alert sink could not be set up.
    #[error(transparent)]
    Sink(#[from] crate::alert::sink::SinkError),
    /// A host-log input could not be set up.
    #[error("host-log input: {0}")]
    HostLog(String),
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

/// Prints each event as one JSON line on stdout.
pub struct StdoutEvents {
    out: std::io::BufWriter<std::io::Stdout>,
    broken: bool,
}

impl StdoutEvents {
    /// A sink on the process's stdout.
    pub fn new() -> Self {
        Self {
            out: std::io::BufWriter::new(std::io::stdout()),
            broken: false,
        }
    }

    /// Flushes; after a failed write or flush, printing stops for good.
    pub fn flush(&mut self) {
        if !self.broken && self.out.flush().is_err() {
            self.broken = true;
            tracing::warn!("stdout closed; no longer printing events (detection goes on)");
        }
    }
}

impl StdoutEvents {
    /// Writes one event line (buffered).
    pub fn event(&mut self, ev: &GatewayEvent) {
        if !self.broken && writeln!(self.out, "{}", ev.to_json()).is_err() {
            self.broken = true;
        }
    }
}

impl Default for StdoutEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads every record in the ring buffer: event lines, then the pipeline.
fn drain(
    rb: &mut RingBuf<MapData>,
    clock: &MonotonicClock,
    events: &mut Option<StdoutEvents>,
    pipeline: &mut Pipeline,
    emit: &impl Fn(Vec<Alert>),
) {
    let mut any = false;
    while let Some(item) = rb.next() {
        let Some(raw) = decode_event(&item) else {
            tracing::warn!(len = item.len(), "skipping a malformed ring-buffer record");
            continue;
        };
        any = true;
        let ev = to_gateway_event(&raw, clock.to_utc(raw.ts_ns));
        if let Some(out) = events.as_mut() {
            out.event(&ev);
        }
        emit(pipeline.gateway_event(&ev));
    }
    if let (true, Some(out)) = (any, events.as_mut()) {
        out.flush();
    }
}

/// Loads, attaches to every interface, pins, then reads events until SIGINT
/// or SIGTERM: events go to stdout when asked for (or when there is no alert
/// sink), through the detection pipeline, and alerts to the sinks. Returns
/// the final kernel counters.
pub async fn run(opts: &RunOptions) -> Result<Stats, DaemonError> {
    if opts.ifaces.is_empty() {
        return Err(DaemonError::NoInterface);
    }
    let cfg = &opts.config;
    privilege::require()?;
    // Register the handlers first: a SIGTERM during setup must still end in
    // a clean detach, not the default action.
    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).map_err(|source| DaemonError::Io {
            op: "installing SIGTERM handler",
            source,
        })?;
    let mut sigint =
        tokio::signal::unix::signal(SignalKind::interrupt()).map_err(|source| DaemonError::Io {
            op: "installing SIGINT handler",
            source,
        })?;

    let json: Vec<JsonTarget> = cfg
        .alert
        .json
        .iter()
        .map(|p| JsonTarget::parse(&p.to_string_lossy()))
        .collect();
    let sinks = AlertSinks::from_config(&json, cfg.alert.syslog.then_some(&cfg.syslog))?;
    let mut events = (cfg.alert.events || sinks.is_empty()).then(StdoutEvents::new);
    let mut pipeline = Pipeline::new(cfg);
    let mut host_rx = inputs::spawn(&cfg.hostlog, &opts.host_logs)
        .await
        .map_err(|e| DaemonError::HostLog(e.to_string()))?;

    let mut dp = Dataplane::load(&cfg.dataplane.load_options())?;
    for iface in &opts.ifaces {
        let mode = dp.attach(iface, cfg.dataplane.xdp_mode, opts.force)?;
        tracing::info!(iface, %mode, "attached");
    }
    let pins = dp.pin(&cfg.dataplane.pin_dir)?;
    tracing::info!(dir = %pins.path().display(), ports = ?cfg.dataplane.ports, "pinned maps; `smbwatch status` reads them");

    let ring = dp.take_events()?;
    // SAFETY: RingBuf owns its map fd for its whole life and as_raw_fd
    // always returns that fd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::Io {
            op: "registering the ring buffer with tokio",
            source: e.into(),
        })?;
    let mut clock = MonotonicClock::new();
    let mut stats_tick = tokio::time::interval(cfg.dataplane.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats_tick.tick().await;
    // Unanswered pairs turn into TRW failures only as time passes.
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_tick = tokio::time::interval(Duration::from_millis(RING_DRAIN_INTERVAL_MS));
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = 0u64;
    let emit = |alerts: Vec<Alert>| {
        for a in &alerts {
            if let Err(e) = sinks.send(a) {
                tracing::warn!(error = %e, "alert sink failed");
            }
        }
    };

    loop {
        tokio::select! {
            // Woken early: the buffer is filling up.
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| DaemonError::Io { op: "waiting on the ring buffer", source })?;
                drain(guard.get_inner_mut(), &clock, &mut events, &mut pipeline, &emit);
                guard.clear_ready();
            }
            // The program does not wake us per event (see smbwatch-ebpf's emit).
            _ = drain_tick.tick() => drain(ring.get_mut(), &clock, &mut events, &mut pipeline, &emit),
            Some(ev) = host_rx.recv() => emit(pipeline.host_event(&ev)),
            _ = housekeeping.tick() => {
                emit(pipeline.advance(chrono::Utc::now()));
                if let Some(notice) = pipeline.detector_mut().take_cap_notice() {
                    tracing::warn!(
                        cap = notice.cap.key(),
                        limit = notice.limit,
                        source = %notice.source,
                        "detector state cap reached: least recently active entries are evicted"
                    );
                }
            }
            _ = stats_tick.tick() => {
                clock.resync();
                let stats = dp.stats()?;
                let full = stats.get(smbwatch_common::stat::RINGBUF_FULL);
                if full > last_full {
                    tracing::warn!(lost = full - last_full, "ring buffer full: events lost since the last report (the kernel's counters stay exact)");
                    last_full = full;
                }
                tracing::info!(%stats, "kernel counters");
                if let Some(s) = sinks.syslog_stats() {
                    tracing::info!(?s, "syslog");
                }
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break; }
        }
    }
    let stats = dp.stats()?;
    drop(ring);
    drop(pins);
    drop(dp);
    tracing::info!(%stats, "detached and unpinned");
    if let Some(s) = sinks.shutdown().await {
        tracing::info!(?s, "syslog sink flushed");
    }
    Ok(stats)
}
