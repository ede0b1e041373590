//! The daemon's health for monitoring: Prometheus metrics on `/metrics`
//! and the `smbwatch top` document on `/top`, served by [`server`].
//!
//! Nothing here may slow the drain thread. It publishes a copy of its
//! counters once per housekeeping tick with [`Metrics::publish_drain`],
//! which takes the lock only if it is free (a scrape holding it for the
//! copy makes the drain skip one tick, never wait). Everything else is
//! written on the tokio thread: alerts as the sink task hands them out
//! ([`Metrics::on_alert`]), syslog counters, and the kernel's counters,
//! which a scrape reads from the pinned maps itself.

pub mod counters;
pub mod expose;
pub mod server;
pub mod top;

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use self::counters::{DrainReport, ListenerCounters, ReloadStats};
use crate::{
    alert::{syslog::SyslogStats, Alert, AlertKind},
    correlate::CorrelateStats,
    detect::DetectStats,
    hostlog::rules::HostRuleStats,
};

/// The default address when metrics are enabled without one.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9445);

/// `[metrics]`: the metrics and `top` endpoint. Off unless `enabled`
/// (or `--metrics` is given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` and `/top`.
    pub enabled: bool,
    /// Address to listen on. Plain HTTP without authentication, so keep it
    /// on loopback or a management network.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: DEFAULT_LISTEN,
        }
    }
}

/// What the drain thread publishes: its own counts and the pipeline's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainSnapshot {
    /// Ring-buffer records read, host events handled, alerts dropped.
    pub report: DrainReport,
    /// The scan detector.
    pub detect: DetectStats,
    /// The correlator.
    pub correlate: CorrelateStats,
    /// The host rules.
    pub rules: HostRuleStats,
}

/// Alerts kept for `/top` (the newest).
pub const RECENT_ALERTS: usize = 32;

/// Longest alert message kept for `/top` (bytes): messages are short, but
/// the cap keeps the list bounded whatever a host log put in one.
const MAX_MESSAGE: usize = 240;

/// Upper bounds (seconds) of the detection-latency buckets: a fast sweep
/// alerts within a second, a slow one within the fan-out window.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every alert kind, in the order of [`kind_slot`].
pub const KINDS: &[AlertKind] = AlertKind::ALL;

/// The index of `k` in [`KINDS`] (every kind is listed there; a test in
/// `alert::kinds` checks the list against the enum).
pub fn kind_slot(k: AlertKind) -> usize {
    KINDS.iter().position(|&x| x == k).unwrap_or(0)
}

/// One alert as `/top` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentAlert {
    /// Alert time.
    pub ts: DateTime<Utc>,
    /// `event.code`.
    pub code: String,
    /// Severity name.
    pub severity: String,
    /// The source, when the alert has one.
    pub source: Option<IpAddr>,
    /// The summary line (capped).
    pub message: String,
}

/// Counts of the alerts handed to the sinks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertLog {
    /// By kind, in [`KINDS`] order.
    pub by_kind: [u64; KINDS.len()],
    /// Detection latency: counts per bucket of [`LATENCY_BUCKETS`]
    /// (not cumulative), and the overflow.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies (seconds).
    pub latency_sum: f64,
    /// The newest alerts, oldest first.
    pub recent: VecDeque<RecentAlert>,
}

impl AlertLog {
    /// Counts one alert; scan alerts also give their detection latency:
    /// from the source's first SYN in the window to the alert, both in
    /// event time.
    pub fn record(&mut self, a: &Alert) {
        self.by_kind[kind_slot(a.kind)] += 1;
        if let Some(scan) = &a.scan {
            let secs = (a.ts - scan.first_seen)
                .to_std()
                .map_or(0.0, |d| d.as_secs_f64());
            let b = LATENCY_BUCKETS
                .iter()
                .position(|&le| secs <= le)
                .unwrap_or(LATENCY_BUCKETS.len());
            self.latency_buckets[b] += 1;
            self.latency_sum += secs;
        }
        if self.recent.len() == RECENT_ALERTS {
            self.recent.pop_front();
        }
        let mut message = a.message.clone();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.recent.push_back(RecentAlert {
            ts: a.ts,
            code: a.kind.code().to_owned(),
            severity: a.severity.name().to_owned(),
            source: a.source_ip,
            message,
        });
    }

    /// Scan alerts with a latency (the histogram's count).
    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }
}

/// The daemon's shared metrics state (one per daemon, behind an `Arc`).
#[derive(Debug)]
pub struct Metrics {
    drain: Mutex<DrainSnapshot>,
    alerts: Mutex<AlertLog>,
    syslog: Mutex<Option<SyslogStats>>,
    /// The current listener's counters (a reload may replace it).
    listener: Mutex<Option<Arc<ListenerCounters>>>,
    /// SIGHUP reload counters.
    reload: OnceLock<Arc<ReloadStats>>,
    /// The fleet's counters (a gateway's publishing, or an aggregator).
    fleet: OnceLock<Arc<dyn expose::Families>>,
    /// Where the kernel's maps are pinned (counters, top sources).
    pin_dir: PathBuf,
    started: DateTime<Utc>,
}

/// A poisoned lock only means a panic elsewhere; the plain data inside is
/// still good to read.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Metrics of a daemon whose maps are pinned in `pin_dir`.
    pub fn new(pin_dir: PathBuf) -> Self {
        Self {
            drain: Mutex::default(),
            alerts: Mutex::default(),
            syslog: Mutex::default(),
            listener: Mutex::default(),
            reload: OnceLock::new(),
            fleet: OnceLock::new(),
            pin_dir,
            started: Utc::now(),
        }
    }

    /// The drain thread's counters; skipped (never waited for) while a
    /// scrape is copying the previous ones.
    pub fn publish_drain(&self, s: DrainSnapshot) {
        if let Ok(mut g) = self.drain.try_lock() {
            *g = s;
        }
    }

    /// The latest drain counters.
    pub fn drain(&self) -> DrainSnapshot {
        *lock(&self.drain)
    }

    /// An alert handed to the sinks.
    pub fn on_alert(&self, a: &Alert) {
        lock(&self.alerts).record(a);
    }

    /// A copy of the alert counts.
    pub fn alerts(&self) -> AlertLog {
        lock(&self.alerts).clone()
    }

    /// The syslog sink's latest counters.
    pub fn set_syslog(&self, s: Option<SyslogStats>) {
        *lock(&self.syslog) = s;
    }

    /// The syslog sink's counters, if there is a syslog sink.
    pub fn syslog(&self) -> Option<SyslogStats> {
        *lock(&self.syslog)
    }

    /// The host-log listener's live counters (set when it is bound, and
    /// again when a reload replaces or removes it).
    pub fn set_listener(&self, c: Option<Arc<ListenerCounters>>) {
        *lock(&self.listener) = c;
    }

    /// The listener's counters, if there is a listener.
    pub fn listener(&self) -> Option<Arc<ListenerCounters>> {
        lock(&self.listener).clone()
    }

    /// The daemon's reload counters.
    pub fn set_reload(&self, r: Arc<ReloadStats>) {
        let _ = self.reload.set(r);
    }

    /// The reload counters, if the daemon reloads.
    pub fn reload(&self) -> Option<&ReloadStats> {
        self.reload.get().map(|r| &**r)
    }

    /// The fleet's counters (set once, when publishing or aggregating starts).
    pub fn set_fleet(&self, f: impl expose::Families + 'static) {
        let _ = self.fleet.set(Arc::new(f));
    }

    /// The fleet's counters, if this process publishes or aggregates.
    pub fn fleet(&self) -> Option<&Arc<dyn expose::Families>> {
        self.fleet.get()
    }

    /// The pin directory of the kernel's maps.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }

    /// When the daemon started.
    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }
}

#[cfg(test)]
mod tests;
