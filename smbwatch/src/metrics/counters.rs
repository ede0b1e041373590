//! The daemon's counters that the metrics expose: the drain thread's
//! report, the host-log listener's counters and the reload counters. They
//! live here, below the daemon that fills them, so that the metrics never
//! import the daemon.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::hostlog::{LineFormat, LineOutcome};

/// What the drain thread did, reported when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Ring-buffer records read.
    pub records: u64,
    /// Malformed records skipped.
    pub malformed: u64,
    /// Host events put through the pipeline.
    pub host_events: u64,
    /// Host events processed after the stop request (queued before it).
    pub host_events_at_stop: u64,
    /// Alerts dropped because the sink task was that far behind.
    pub alerts_dropped: u64,
    /// SMB sample records read from the sample ring.
    pub samples: u64,
    /// Sample records that did not decode (skipped).
    pub samples_malformed: u64,
}

/// Counters (readable while running).
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused (a limit reached).
    pub refused: AtomicU64,
    /// Connections closed for a line not completed in time, or idleness.
    pub timed_out: AtomicU64,
    /// TLS handshakes that failed (no or a bad client certificate).
    pub tls_failed: AtomicU64,
    /// Lines read (complete or oversized).
    pub lines: AtomicU64,
    /// Events forwarded on the channel.
    pub events: AtomicU64,
    /// Well-formed records of unused event ids.
    pub skipped: AtomicU64,
    /// Records that failed to parse.
    pub bad: AtomicU64,
    /// Lines longer than `max_line`, skipped.
    pub oversized: AtomicU64,
    /// Records by [`LineFormat`] and [`LineOutcome`] (for the metrics).
    pub by_format: [[AtomicU64; LineOutcome::ALL.len()]; LineFormat::RECORDS.len()],
}

/// A snapshot of [`ListenerCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (a limit reached).
    pub refused: u64,
    /// Connections closed by `line_timeout` or `idle_timeout`.
    pub timed_out: u64,
    /// TLS handshakes that failed.
    pub tls_failed: u64,
    /// Lines read.
    pub lines: u64,
    /// Events forwarded.
    pub events: u64,
    /// Records skipped (unused event ids).
    pub skipped: u64,
    /// Records that failed to parse.
    pub bad: u64,
    /// Oversized lines skipped.
    pub oversized: u64,
    /// Records by [`LineFormat`] (`RECORDS` order) and [`LineOutcome`].
    pub by_format: [[u64; LineOutcome::ALL.len()]; LineFormat::RECORDS.len()],
}

impl ListenerCounters {
    /// Current values.
    pub fn snapshot(&self) -> ListenerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerStats {
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            timed_out: g(&self.timed_out),
            tls_failed: g(&self.tls_failed),
            lines: g(&self.lines),
            events: g(&self.events),
            skipped: g(&self.skipped),
            bad: g(&self.bad),
            oversized: g(&self.oversized),
            by_format: self.by_format.each_ref().map(|o| o.each_ref().map(g)),
        }
    }
}

/// Reload counters, shared with whoever reports them (logs, metrics).
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied (including ones that changed nothing).
    pub succeeded: AtomicU64,
    /// Reloads refused: the file did not load or validate, or a new sink or
    /// listener could not be set up; the running configuration stayed.
    pub failed: AtomicU64,
    /// Unix time (seconds) of the latest reload attempt; 0 before any.
    pub last_unix_secs: AtomicU64,
    /// Whether the latest attempt succeeded (true before any).
    pub last_ok: AtomicBool,
}

impl ReloadStats {
    /// New counters, "last reload ok" before any reload.
    pub fn new() -> Arc<Self> {
        let s = Self::default();
        s.last_ok.store(true, Ordering::Relaxed);
        Arc::new(s)
    }

    pub(crate) fn record(&self, ok: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_unix_secs.store(now, Ordering::Relaxed);
        self.last_ok.store(ok, Ordering::Relaxed);
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
