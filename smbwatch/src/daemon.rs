//! The `run` command: attach, read events, report, shut down cleanly.
//!
//! One tokio task reads the ring buffer through `AsyncFd` (the kernel wakes
//! it; no polling), stamps events with wall-clock time and hands them to the
//! consumers. A timer logs the kernel counters; SIGINT/SIGTERM end the loop,
//! after which dropping the data plane detaches every link and the pin
//! directory removes its pins.

use std::{io::Write as _, path::PathBuf, time::Duration};

use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    dataplane::{
        decode_event, privilege, to_gateway_event, AttachMode, Dataplane, DataplaneError,
        LoadOptions, MonotonicClock, Stats,
    },
    event::GatewayEvent,
};

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
    /// Attach mode.
    pub mode: AttachMode,
    /// Replace a foreign XDP program.
    pub force: bool,
    /// Ports and table sizes.
    pub load: LoadOptions,
    /// How often to log kernel counters.
    pub stats_interval: Duration,
    /// Where to pin maps and the program.
    pub pin_dir: PathBuf,
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

/// What the daemon hands each decoded event to.
pub trait EventSink {
    /// Called for every event, in ring-buffer order.
    fn event(&mut self, ev: &GatewayEvent);
    /// Called once per timer tick with the current counters.
    fn tick(&mut self, _stats: &Stats) {}
    /// Called after each batch of events read from the ring buffer.
    fn tick_batch(&mut self) {}
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

    fn flush(&mut self) {
        if !self.broken && self.out.flush().is_err() {
            self.broken = true;
            tracing::warn!("stdout closed; no longer printing events (detection goes on)");
        }
    }
}

impl Default for StdoutEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for StdoutEvents {
    fn event(&mut self, ev: &GatewayEvent) {
        if self.broken {
            return;
        }
        if writeln!(self.out, "{}", ev.to_json()).is_err() {
            self.broken = true;
        }
    }

    fn tick_batch(&mut self) {
        self.flush();
    }
}

/// Loads, attaches to every interface, pins, then reads events into `sink`
/// until SIGINT or SIGTERM. Returns the final counters.
pub async fn run(opts: &RunOptions, sink: &mut dyn EventSink) -> Result<Stats, DaemonError> {
    if opts.ifaces.is_empty() {
        return Err(DaemonError::NoInterface);
    }
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

    let mut dp = Dataplane::load(&opts.load)?;
    for iface in &opts.ifaces {
        let mode = dp.attach(iface, opts.mode, opts.force)?;
        tracing::info!(iface, %mode, "attached");
    }
    let pins = dp.pin(&opts.pin_dir)?;
    tracing::info!(dir = %pins.path().display(), ports = ?opts.load.ports, "pinned maps; `smbwatch status` reads them");

    let ring = dp.take_events()?;
    // SAFETY: RingBuf owns its map fd for its whole life and as_raw_fd
    // always returns that fd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::Io {
            op: "registering the ring buffer with tokio",
            source: e.into(),
        })?;
    let mut clock = MonotonicClock::new();
    let mut ticker = tokio::time::interval(opts.stats_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_full = 0u64;

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| DaemonError::Io { op: "waiting on the ring buffer", source })?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    match decode_event(&item) {
                        Some(ev) => sink.event(&to_gateway_event(&ev, clock.to_utc(ev.ts_ns))),
                        None => tracing::warn!(len = item.len(), "skipping a malformed ring-buffer record"),
                    }
                }
                guard.clear_ready();
                // Let sinks that buffer flush once per batch.
                sink.tick_batch();
            }
            _ = ticker.tick() => {
                clock.resync();
                let stats = dp.stats()?;
                let full = stats.get(smbwatch_common::stat::RINGBUF_FULL);
                if full > last_full {
                    tracing::warn!(lost = full - last_full, "ring buffer full: events lost since the last report (counts in the maps stay exact)");
                    last_full = full;
                }
                tracing::info!(%stats, "kernel counters");
                sink.tick(&stats);
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
    Ok(stats)
}
