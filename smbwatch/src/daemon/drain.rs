//! The drain thread: the one thread that reads the ring buffer, and owns
//! the detection pipeline.
//!
//! It does nothing else that can block or take long: host events arrive
//! already parsed, at most [`HOST_BATCH`] per turn so a burst of them cannot
//! hold up the ring buffer; alerts leave through a bounded channel to the
//! sink task. Host-log parsing, listeners and sinks run on the tokio
//! runtime's thread, so neither a hostile forwarder nor a slow collector can
//! make the kernel drop events.

use std::{
    collections::VecDeque,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use smbwatch_common::RING_DRAIN_INTERVAL_MS;
use smbwatch_core::smb::SmbOutputs;
use tokio::sync::mpsc;

use super::StdoutEvents;
pub use crate::metrics::counters::DrainReport;
use crate::{
    alert::Alert,
    dataplane::{drain, drain_samples, to_gateway_event, to_smb_sample, KernelClock},
    event::GatewayEvent,
    fleet::outbox::Tap,
    hostlog::HostEvent,
    metrics::{DrainSnapshot, Metrics},
    pipeline::Pipeline,
};

/// How far ahead of the event being handled the detector is asked to
/// prefetch (measured: 4 hides most of a churn event's cache misses).
const PREFETCH_AHEAD: usize = 4;

/// Host events taken before the ring buffer is looked at again.
const HOST_BATCH: usize = 256;

/// How long the final pass waits for the inputs to hand over what they had
/// accepted before the stop (they close their ends when done).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Sample records handled per turn: a burst of SMB payload never holds
/// up the event ring for longer than this many parser calls.
const SAMPLE_BATCH: u64 = 4096;

/// How often unanswered pairs are aged (TRW failures after the response
/// timeout) and the wall clock's offset re-read.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How often the program's clock (jiffies) is calibrated again against
/// CLOCK_MONOTONIC: a few ms of probe runs (`dataplane::KernelClock`).
const CLOCK_CALIBRATION: Duration = Duration::from_secs(60);

/// What the drain thread owns.
pub(crate) struct DrainLoop {
    pub ring: RingBuf<MapData>,
    /// The SMB payload samples' ring.
    pub samples: RingBuf<MapData>,
    pub pipeline: Pipeline,
    pub events: Option<StdoutEvents>,
    pub host_rx: mpsc::Receiver<HostEvent>,
    /// New settings from a reload, polled (never waited for).
    pub settings: mpsc::Receiver<super::reload::Settings>,
    pub alerts: mpsc::Sender<Alert>,
    pub stop: Arc<AtomicBool>,
    /// Counts housekeeping turns: the watchdog's proof of progress.
    pub heartbeat: Arc<AtomicU64>,
    /// Where the counters are published once per housekeeping tick.
    pub metrics: Arc<Metrics>,
    /// Turns the program's timestamps into UTC (calibrated at load).
    pub clock: KernelClock,
    /// Baseline batches to its writer thread (`--baseline`).
    pub persist: Option<crate::baseline::writer::Persist>,
    /// Events copied to the fleet's broker (`--publish`).
    pub publish: Option<Tap>,
}

impl DrainLoop {
    /// Runs until `stop` is set, then drains the ring buffer and the host
    /// events already queued one last time, so nothing accepted is lost.
    pub fn run(mut self) -> DrainReport {
        let mut report = DrainReport::default();
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut next_calibration = Instant::now() + CLOCK_CALIBRATION;
        let fds = [self.ring.as_raw_fd(), self.samples.as_raw_fd()];
        let mut backlog = false;
        while !self.stop.load(Ordering::Relaxed) {
            // With host events waiting, only look at the ring and go on.
            let wait = if backlog {
                0
            } else {
                RING_DRAIN_INTERVAL_MS as i32
            };
            wait_readable(&fds, wait);
            self.drain_ring(&mut report);
            self.drain_samples(&mut report, SAMPLE_BATCH);
            backlog = self.host_batch(&mut report, false).0 == HOST_BATCH;
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + HOUSEKEEPING;
                self.heartbeat.fetch_add(1, Ordering::Relaxed);
                if let Ok(s) = self.settings.try_recv() {
                    self.pipeline
                        .reconfigure(&s.config.pipeline(), s.host_inputs);
                    tracing::info!("detection settings swapped");
                }
                self.clock.resync();
                if Instant::now() >= next_calibration {
                    next_calibration = Instant::now() + CLOCK_CALIBRATION;
                    if let Err(e) = self.clock.recalibrate() {
                        tracing::warn!(error = %e, "kernel clock not re-calibrated; keeping the previous offset");
                    }
                }
                let alerts = self.pipeline.advance(chrono::Utc::now());
                self.send(alerts, &mut report);
                let smb = self.pipeline.smb_expire(chrono::Utc::now());
                self.smb_out(smb, &mut report);
                self.metrics.publish_drain(DrainSnapshot {
                    report,
                    detect: self.pipeline.detector_stats(),
                    correlate: self.pipeline.correlator().stats(),
                    rules: self.pipeline.rules().stats(),
                });
                if let (Some(p), Some(b)) = (self.persist.as_mut(), self.pipeline.baseline_mut()) {
                    p.tick(b, Instant::now());
                }
                if let Some((rejected, count)) = self.pipeline.take_host_rejection() {
                    tracing::warn!(count, "{rejected}");
                }
                if let Some(tap) = self.publish.as_mut().filter(|t| t.dropped > 0) {
                    tracing::warn!(
                        dropped = std::mem::take(&mut tap.dropped),
                        "publish buffer full (broker slow or down): events not published"
                    );
                }
                if let Some(notice) = self.pipeline.detector_mut().take_cap_notice() {
                    tracing::warn!(
                        cap = notice.cap.key(),
                        limit = notice.limit,
                        source = %notice.source,
                        "detector state cap reached: least recently active entries are evicted"
                    );
                }
            }
        }
        // Final pass: what the kernel and the inputs accepted before the stop
        // is processed, not dropped. The inputs close their ends of the
        // channel once they have handed over what they hold.
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            self.drain_ring(&mut report);
            self.drain_samples(&mut report, 0);
            let (n, closed) = self.host_batch(&mut report, true);
            if closed {
                break;
            }
            if n == 0 {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "host-log inputs did not finish within {STOP_GRACE:?} of the stop; \
                         events they still held are not processed"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(p) = self.persist.take() {
            // After the final drain: the last batch holds everything learned.
            match p.finish(self.pipeline.baseline_mut()) {
                Ok(w) => {
                    tracing::info!(batches = w.batches, records = w.records, busy = ?w.busy, "baseline written")
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        report
    }

    /// Up to [`HOST_BATCH`] queued host events through the pipeline.
    /// Returns how many, and whether every input has closed its end.
    fn host_batch(&mut self, report: &mut DrainReport, stopping: bool) -> (usize, bool) {
        for n in 0..HOST_BATCH {
            match self.host_rx.try_recv() {
                Ok(ev) => self.host(&ev, report, stopping),
                Err(mpsc::error::TryRecvError::Empty) => return (n, false),
                Err(mpsc::error::TryRecvError::Disconnected) => return (n, true),
            }
        }
        (HOST_BATCH, false)
    }

    fn host(&mut self, ev: &HostEvent, report: &mut DrainReport, stopping: bool) {
        report.host_events += 1;
        if stopping {
            report.host_events_at_stop += 1;
        }
        if let Some(tap) = self.publish.as_mut() {
            tap.host(ev);
            tap.flush();
        }
        let alerts = self.pipeline.host_event(ev);
        self.send(alerts, report);
    }

    fn drain_ring(&mut self, report: &mut DrainReport) {
        let Self {
            ring,
            pipeline,
            events,
            alerts,
            publish,
            clock,
            ..
        } = self;
        let mut dropped = 0;
        // Events are handled PREFETCH_AHEAD behind the one just decoded,
        // which the detector is asked to start fetching: under churn most
        // of an event's cost is waiting for memory, and this overlaps it.
        let mut ahead: VecDeque<GatewayEvent> = VecDeque::with_capacity(PREFETCH_AHEAD + 1);
        let n = drain(ring, |raw, kind| {
            let ev = to_gateway_event(raw, kind, clock.to_utc(raw.ts_ns));
            pipeline.prefetch(&ev);
            ahead.push_back(ev);
            if ahead.len() > PREFETCH_AHEAD {
                if let Some(ev) = ahead.pop_front() {
                    dropped += handle(pipeline, events, publish, alerts, &ev);
                }
            }
        });
        for ev in ahead {
            dropped += handle(pipeline, events, publish, alerts, &ev);
        }
        if n.malformed > 0 {
            tracing::warn!(count = n.malformed, "skipped malformed ring-buffer records");
        }
        if let Some(tap) = publish.as_mut() {
            tap.flush();
        }
        report.records += n.records;
        report.malformed += n.malformed;
        self.count_dropped(dropped, report);
        if n.records > 0 {
            if let Some(out) = self.events.as_mut() {
                out.flush();
            }
        }
    }

    /// Up to `max` SMB samples (0: all) through the pipeline: their event
    /// lines (`--events`) and alerts.
    fn drain_samples(&mut self, report: &mut DrainReport, max: u64) {
        let Self {
            samples,
            pipeline,
            clock,
            ..
        } = self;
        let mut outs = Vec::new();
        let n = drain_samples(samples, max, |k| {
            if let Some(s) = to_smb_sample(k, clock.to_utc(k.ts_ns)) {
                let out = pipeline.smb_sample(&s);
                if !out.events.is_empty() || !out.alerts.is_empty() {
                    outs.push(out);
                }
            }
        });
        report.samples += n.records;
        report.samples_malformed += n.malformed;
        if n.malformed > 0 {
            tracing::warn!(count = n.malformed, "skipped malformed sample records");
        }
        for out in outs {
            self.smb_out(out, report);
        }
        if n.records > 0 {
            if let Some(out) = self.events.as_mut() {
                out.flush();
            }
        }
    }

    /// An SMB sample's (or expiry's) event lines and alerts.
    fn smb_out(&mut self, out: SmbOutputs, report: &mut DrainReport) {
        if let Some(lines) = self.events.as_mut() {
            for ev in &out.events {
                lines.smb_event(ev);
            }
        }
        self.send(out.alerts, report);
    }

    fn send(&mut self, alerts: Vec<Alert>, report: &mut DrainReport) {
        let dropped = queue(&self.alerts, alerts);
        self.count_dropped(dropped, report);
    }

    fn count_dropped(&self, dropped: u64, report: &mut DrainReport) {
        if dropped > 0 {
            // Never block the drain on the sinks: count and say so.
            report.alerts_dropped += dropped;
            tracing::warn!(
                dropped,
                total = report.alerts_dropped,
                "alert sinks are behind: alerts dropped"
            );
        }
    }
}

/// One gateway event: its line (if asked for), its copy for the broker (if
/// publishing), the pipeline, its alerts.
/// Returns the alerts dropped because the sinks are behind.
fn handle(
    pipeline: &mut Pipeline,
    events: &mut Option<StdoutEvents>,
    publish: &mut Option<Tap>,
    alerts: &mpsc::Sender<Alert>,
    ev: &GatewayEvent,
) -> u64 {
    if let Some(out) = events.as_mut() {
        out.event(ev);
    }
    if let Some(tap) = publish.as_mut() {
        tap.gateway(ev);
    }
    queue(alerts, pipeline.gateway_event(ev))
}

/// Hands alerts to the sink task without ever waiting for it; returns how
/// many were dropped because its queue was full.
fn queue(alerts: &mpsc::Sender<Alert>, batch: Vec<Alert>) -> u64 {
    batch
        .into_iter()
        .map(|a| u64::from(alerts.try_send(a).is_err()))
        .sum()
}

/// Waits until a ring buffer has data past the wake-up mark or `ms`
/// passed (the program does not wake the reader per record).
fn wait_readable(fds: &[i32; 2], ms: i32) {
    let mut pfd = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: valid pollfds; EINTR or an error just means "drain now".
    unsafe { libc::poll(pfd.as_mut_ptr(), pfd.len() as libc::nfds_t, ms) };
}
